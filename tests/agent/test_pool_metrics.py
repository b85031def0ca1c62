"""/metrics carries the process's CPU and memory and the database pool's state.

The pool's size, in-use and maximum connections are read at scrape time; every acquire is
timed, and one that finds all connections busy at the pool's maximum counts as a wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.agent.conftest import auth


def _samples(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels or set(sample.labels) == {"le"} and sample.labels["le"] == "+Inf"
    }


async def test_process_and_pool_metrics(server_factory: Callable[..., Any]) -> None:
    async with (
        server_factory(db_pool_min_size=1, db_pool_max_size=2) as server,
        server.client() as c,
    ):
        assert (
            await c.post("/api/search", json={"query": "leave"}, headers=auth("ivy"))
        ).is_success
        before = _samples((await c.get("/metrics")).text)
        assert before["process_cpu_seconds_total"] > 0
        assert before["process_resident_memory_bytes"] > 0
        assert before["ragkeeper_agent_db_pool_max_connections"] == 2
        assert before["ragkeeper_agent_db_pool_connections_in_use"] == 0
        assert before["ragkeeper_agent_db_pool_acquire_duration_seconds_count"] >= 1

        pool = server.app.state.services.pool
        held = [await pool.acquire(), await pool.acquire()]
        busy = _samples((await c.get("/metrics")).text)
        assert busy["ragkeeper_agent_db_pool_connections"] == 2
        assert busy["ragkeeper_agent_db_pool_connections_in_use"] == 2

        waiting = asyncio.create_task(pool.fetchval("SELECT 1"))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # queued behind the two held connections
        await pool.release(held.pop())
        assert await asyncio.wait_for(waiting, 5) == 1
        await pool.release(held.pop())
        after = _samples((await c.get("/metrics")).text)
    assert (
        after["ragkeeper_agent_db_pool_waits_total"]
        == before["ragkeeper_agent_db_pool_waits_total"] + 1
    )
    count = "ragkeeper_agent_db_pool_acquire_duration_seconds_count"
    assert after[count] >= before[count] + 3
    slowest = after["ragkeeper_agent_db_pool_acquire_duration_seconds_sum"]
    assert slowest - before["ragkeeper_agent_db_pool_acquire_duration_seconds_sum"] >= 0.1
    assert after["ragkeeper_agent_db_pool_connections_in_use"] == 0
