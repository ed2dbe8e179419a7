"""The miniature's method config is checked before any training starts, with one-line errors."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from thesis.core.errors import ConfigError
from thesis.sinks.mini.runner import check_method

METHOD = Path(__file__).parents[2] / "configs" / "method" / "sinks_mini.yaml"


def method(**changes):
    cfg = OmegaConf.load(METHOD)
    cfg.steps = 32
    cfg.decoders.dream.block_length = 32
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_the_shipped_method_passes():
    check_method(method())


@pytest.mark.parametrize("key, value, message", [
    ("mask_topk", [1, 5], "must start with 0, 1"),
    ("eps", 2.75, "eps_grid"),
    ("decoders.arm.kind", "beam", "kind"),
])
def test_bad_settings_are_refused(key, value, message):
    with pytest.raises(ConfigError, match=message):
        check_method(method(**{key: value}))
