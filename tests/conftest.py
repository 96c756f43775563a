"""Shared fixtures: the digits dataset (loaded once) and the path to ../shared/external."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskspace.data import ImageDataset, load_dataset

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits")
