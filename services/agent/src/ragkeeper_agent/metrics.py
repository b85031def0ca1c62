"""Prometheus metrics of the agent service, in one registry of their own.

A private ``REGISTRY`` (not the process-global default) keeps tests independent and
lets the chart's tests enumerate exactly what the service exports via
:func:`metric_names`, to cross-check the Grafana dashboard and alert rules.
Names carry the ``ragkeeper_agent_`` prefix and base units; counters end in ``_total``.
The standard ``process_*`` metrics (CPU seconds, resident memory, open file descriptors; on
Linux) are on this registry too, under their usual names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

HTTP_REQUESTS = Counter(
    "ragkeeper_agent_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "ragkeeper_agent_http_request_duration_seconds",
    "Time to the end of the response body (streams included), by route and status.",
    ["method", "route", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "ragkeeper_agent_http_requests_in_flight",
    "HTTP requests currently being served (open streams included).",
    registry=REGISTRY,
)
AGENT_RUN_DURATION = Histogram(
    "ragkeeper_agent_run_duration_seconds",
    "Duration of one agent turn (all model requests and tool calls), by model and outcome.",
    ["model", "outcome"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "ragkeeper_agent_tool_calls_total",
    "Tool calls made by the agent, by tool and outcome (ok, retry, error).",
    ["tool", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "ragkeeper_agent_tokens_total",
    "Model tokens, by model and direction (input, output).",
    ["model", "direction"],
    registry=REGISTRY,
)
RETRIEVAL_DURATION = Histogram(
    "ragkeeper_agent_retrieval_duration_seconds",
    "Time to embed a query and run the hybrid search.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
RERANK_DURATION = Histogram(
    "ragkeeper_agent_rerank_duration_seconds",
    "Time of one call to the reranking service (retries included), whatever its outcome.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RERANK_FAILURES = Counter(
    "ragkeeper_agent_rerank_failures_total",
    "Searches answered in the fused order because reranking failed, by reason "
    "(unavailable: still failing after retries; error: refused or malformed answer).",
    ["reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "ragkeeper_agent_rate_limit_rejections_total",
    "Requests rejected with 429 by the per-user sliding-window limiter, by route.",
    ["route"],
    registry=REGISTRY,
)
CONVERSATIONS_CREATED = Counter(
    "ragkeeper_agent_conversations_created_total",
    "New conversations started.",
    registry=REGISTRY,
)


def metric_names() -> list[str]:
    """Every metric family name this service exports (as they appear in /metrics)."""
    names: set[str] = set()
    for collector in REGISTRY.collect():
        if collector.type == "counter":
            names.add(f"{collector.name}_total")
        else:
            names.add(collector.name)
    return sorted(names)
