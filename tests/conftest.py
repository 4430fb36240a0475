"""Shared fixtures: where the real slides and tiles are."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE_SLIDES = REPO / "sample_slides"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``: real slides (``slides/``) and in-focus tiles (``tiles/``) with their licences."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared beside the checkout")
    return SHARED_DATA


@pytest.fixture(scope="session")
def slides_dir(shared_data: Path) -> Path:
    return shared_data / "slides"


@pytest.fixture(scope="session")
def tiles_dir(shared_data: Path) -> Path:
    return shared_data / "tiles"


@pytest.fixture(scope="session")
def sample_slides() -> Path:
    return SAMPLE_SLIDES
