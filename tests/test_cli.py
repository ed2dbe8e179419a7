"""The launcher as a user meets it: help, and one-line errors for bad command lines."""

import subprocess
import sys

import pytest

from thesis.core.compose import experiments


def launch(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "thesis.run", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_help_lists_every_experiment():
    done = launch("--help")
    assert done.returncode == 0
    for name in experiments():
        assert f"  {name}\n" in done.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["experiment=condcomp_dense_digits", "foo=1"], "unknown config key 'foo'; valid keys there: checkpoint_every_n_steps, data,"),
        (["experiment=condcomp_dense_digits", "model.hiddn=3"], "unknown config key 'model.hiddn'; valid keys there: _target_, hidden,"),
        (["experiment=condcomp_dense_digits", "model=nope"], "model=nope does not exist; valid model options: "),
        (["experiment=nope"], "experiment=nope does not exist; valid experiment options: "),
        (["experiment=condcomp_dense_digits", "trainer.max_epochs=abc"],
         "trainer.max_epochs='abc' has the wrong type (Value 'abc' of type 'str' could not be converted to Integer): "
         "set trainer.max_epochs to an integer"),
        (["experiment=condcomp_dense_digits", "seed=x"], "seed='x' has the wrong type"),
        ([], "no experiment chosen: add experiment=<name>, one of "),
    ],
)
def test_bad_command_line_gives_one_line_error(args, expected):
    done = launch(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def test_missing_experiment_lists_choices():
    done = launch()
    for name in experiments():
        assert name in done.stderr
