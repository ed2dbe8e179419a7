"""Shared, session-wide inputs of the ceramics tests: one tiny synthetic thin-section set on disk."""

import pytest


@pytest.fixture(scope="session")
def thinsections(tmp_path_factory):
    """The `thinsection_tiny` fixture (20 samples x 8 images at 64 px + masks + 2 rotation series)."""
    from thesis.core.fixtures import materialize

    return materialize("thinsection_tiny", tmp_path_factory.mktemp("ceramics_fixtures"))
