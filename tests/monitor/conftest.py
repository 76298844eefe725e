"""Fixtures for the monitor tests: a metric store in a tmp folder and a recording sink."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitor_support import RecordingSink

from verger.monitor.store import MetricStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[MetricStore]:
    metrics = MetricStore(tmp_path / "metrics.db")
    yield metrics
    metrics.close()


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()
