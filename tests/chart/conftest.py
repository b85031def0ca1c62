"""Fixtures for the chart tests: each ci/ scenario rendered once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.chart.tools import CI_VALUES, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Objects of every ci/ scenario, keyed by the values file's stem."""
    return {path.stem: render(path) for path in CI_VALUES}


@pytest.fixture(scope="session")
def scenario_paths() -> dict[str, Path]:
    return {path.stem: path for path in CI_VALUES}
