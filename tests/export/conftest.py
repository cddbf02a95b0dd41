from __future__ import annotations

import pytest
from tiny_export import tiny_export


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``(checkpoint, export folder)`` of a real tiny model (see ``tiny_export.py``)."""
    return tiny_export(tmp_path_factory)
