"""SEARCH_VECTOR_WEIGHT / SEARCH_TEXT_WEIGHT: read from the environment, used by /api/search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ragkeeper_agent import Settings

from .conftest import auth


async def test_a_zero_text_weight_is_vector_only_search(server_factory: Callable[..., Any]) -> None:
    """The word "encryption" is in one seeded document: full text finds only it."""
    body = {"query": "encryption", "k": 10}
    async with server_factory() as server, server.client() as c:
        hybrid = (await c.post("/api/search", json=body, headers=auth("mia"))).json()
    async with server_factory(search_vector_weight=0) as server, server.client() as c:
        text = (await c.post("/api/search", json=body, headers=auth("mia"))).json()
    async with server_factory(search_text_weight=0) as server, server.client() as c:
        vector = (await c.post("/api/search", json=body, headers=auth("mia"))).json()
    assert {h["title"] for h in text} == {"Security handbook"}
    assert len(vector) > len(text) and len(hybrid) == len(vector)
    assert hybrid[0]["title"] == "Security handbook"


def test_weights_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://x@/db")
    monkeypatch.setenv("AUTH_MODE", "disabled")
    monkeypatch.setenv("SEARCH_VECTOR_WEIGHT", "0.5")
    monkeypatch.setenv("SEARCH_TEXT_WEIGHT", "2")
    settings = Settings()
    assert (settings.search_vector_weight, settings.search_text_weight) == (0.5, 2.0)
    monkeypatch.setenv("SEARCH_VECTOR_WEIGHT", "0")
    monkeypatch.setenv("SEARCH_TEXT_WEIGHT", "0")
    with pytest.raises(ValueError, match="cannot both be 0"):
        Settings()
