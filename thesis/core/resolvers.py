"""OmegaConf resolvers the config tree uses.

`${fixture:<name>}` builds (once) the named offline fixture under `paths.fixture_dir` and returns
its path, so a smoke config points the real loader at real files without anything downloaded.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _fixture(name: str, *, _root_) -> str:
    from thesis.core.fixtures import materialize

    return str(materialize(name, _root_.paths.fixture_dir))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fixture"):
        OmegaConf.register_new_resolver("fixture", _fixture)
