"""Fixtures for alerting tests: a fresh state store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from verger.state import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(".verger/state.db", tmp_path)
    yield opened
    opened.close()
