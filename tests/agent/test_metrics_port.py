"""METRICS_PORT: ``/metrics`` on a port of its own, which the chart's Ingress never routes to.

With the port set, the API port answers 404 on ``/metrics`` (an Ingress in front of it cannot
publish the metrics) and the metrics port serves them until the app stops; with 0 (the local
stack) ``/metrics`` stays on the API port.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ragkeeper_agent import Settings
from tests.support import free_port

from .conftest import SECRET, auth


async def test_metrics_move_to_their_own_port(server_factory: Callable[..., Any]) -> None:
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    async with server_factory(metrics_port=port) as server, server.client() as c:
        assert (await c.get("/metrics")).status_code == 404
        assert (await c.get("/healthz")).status_code == 200
        await c.get("/v1/models", headers=auth("mia"))
        async with httpx.AsyncClient() as scraper:
            scraped = await scraper.get(metrics_url)
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain")
        assert 'ragkeeper_agent_http_requests_total{method="GET",route="/v1/models"' in scraped.text
    with pytest.raises(httpx.ConnectError):  # stopped with the app
        httpx.get(metrics_url)


async def test_metrics_stay_on_the_api_port_by_default(server_factory: Callable[..., Any]) -> None:
    async with server_factory() as server, server.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and "ragkeeper_agent_http_requests_total" in r.text


def test_metrics_port_must_differ_from_the_api_port() -> None:
    with pytest.raises(ValueError, match="METRICS_PORT must differ from PORT"):
        Settings(
            database_url="postgresql://x/y", auth_jwt_secret=SECRET, port=9000, metrics_port=9000
        )
