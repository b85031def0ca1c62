"""Entry point: ``python -m ragkeeper_operator`` (console script ``ragkeeper-operator``).

Reads ``OperatorSettings`` from the environment, serves Prometheus metrics on
``METRICS_PORT``, and runs kopf with its liveness endpoint on
``:HEALTH_PORT/healthz`` over the namespaces in ``WATCH_NAMESPACES`` (all when
empty). Logs are JSON lines on stderr unless ``LOG_FORMAT=text``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import kopf
from prometheus_client import start_http_server
from pydantic import ValidationError

from ragkeeper_operator import handlers
from ragkeeper_operator.metrics import OperatorMetrics
from ragkeeper_operator.reconcile import Runtime
from ragkeeper_operator.settings import OperatorSettings


class JsonFormatter(logging.Formatter):
    """One JSON object per log line, as container log pipelines expect."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(settings: OperatorSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def run(settings: OperatorSettings, metrics: OperatorMetrics) -> None:
    """Run kopf until SIGTERM/SIGINT."""
    await kopf.operator(
        settings=handlers.configure_kopf(settings),
        standalone=not settings.peering_name,
        peering_name=settings.peering_name,
        clusterwide=settings.clusterwide,
        namespaces=list(settings.watch_namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(runtime=Runtime(settings=settings, metrics=metrics)),
    )


def main() -> None:
    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        # Name and message only: pydantic's own text quotes every refused value.
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            sys.stderr.write(f"invalid configuration: {where}: {error['msg']}\n")
        raise SystemExit(2) from None
    setup_logging(settings)
    metrics = OperatorMetrics()
    start_http_server(settings.metrics_port, registry=metrics.registry)
    logging.getLogger(__name__).info(
        "ragkeeper operator: namespaces=%s metrics=:%s liveness=:%s/healthz",
        ",".join(settings.watch_namespaces) or "*",
        settings.metrics_port,
        settings.health_port,
    )
    asyncio.run(run(settings, metrics))


if __name__ == "__main__":
    main()
