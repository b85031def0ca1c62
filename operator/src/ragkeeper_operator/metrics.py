"""Prometheus metrics of the operator, on their own registry and port.

Names carry the ``ragkeeper_operator_`` prefix and base units. Per-DataSource
series are labelled ``namespace``/``datasource`` and removed when the
DataSource goes away, so deleted sources do not linger on dashboards.

The registry also carries the standard ``process_*`` metrics (CPU seconds, resident memory;
on Linux). The operator talks to the Kubernetes API only: it has no database pool.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

PREFIX = "ragkeeper_operator"
RESULTS = ("success", "invalid", "waiting", "error")


class OperatorMetrics:
    """All metrics the operator exports; one instance per process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        self.reconciliations = Counter(
            f"{PREFIX}_reconciliations",
            "DataSource reconciliations by result (success, invalid spec, waiting, error).",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time spent reconciling one DataSource into its CronJob.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.datasources = Gauge(
            f"{PREFIX}_datasources",
            "DataSources known to the operator, by readiness.",
            ["ready"],
            registry=self.registry,
        )
        self._add_datasource_metrics()
        self._lock = threading.Lock()
        self._readiness: dict[tuple[str, str], bool] = {}
        self._ready_count = 0  # how many values of _readiness are True, kept as they change
        for result in RESULTS:
            self.reconciliations.labels(result=result)
        for ready in ("true", "false"):
            self.datasources.labels(ready=ready).set(0)

    def _add_datasource_metrics(self) -> None:
        """The series labelled per DataSource (removed by ``forget``) and the finished runs."""
        self.ready = Gauge(
            f"{PREFIX}_datasource_ready",
            "1 when the DataSource is Ready (valid spec, CronJob in place), else 0.",
            ["namespace", "datasource"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            f"{PREFIX}_datasource_last_success_timestamp_seconds",
            "Unix time when the DataSource's last successful sync finished.",
            ["namespace", "datasource"],
            registry=self.registry,
        )
        self.documents = Gauge(
            f"{PREFIX}_datasource_documents",
            "Documents of the DataSource in the knowledge store after its last run.",
            ["namespace", "datasource"],
            registry=self.registry,
        )
        self.files_failed = Gauge(
            f"{PREFIX}_datasource_last_run_files_failed",
            "Files the DataSource's last run could not ingest.",
            ["namespace", "datasource"],
            registry=self.registry,
        )
        self.runs = Counter(
            f"{PREFIX}_runs",
            "Finished sync runs observed, by LastRunSucceeded reason.",
            ["reason"],
            registry=self.registry,
        )
        self.run_duration = Histogram(
            f"{PREFIX}_run_duration_seconds",
            "How long finished sync runs' ingestion containers ran, by LastRunSucceeded reason.",
            ["reason"],
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
            registry=self.registry,
        )

    @contextmanager
    def reconciling(self) -> Iterator[None]:
        """Time one reconciliation (the result is counted separately)."""
        with self.reconcile_duration.time():
            yield

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        with self._lock:
            before = self._readiness.get((namespace, name), False)
            self._readiness[(namespace, name)] = ready
            self._ready_count += int(ready) - int(before)
            self._publish_readiness()
        self.ready.labels(namespace=namespace, datasource=name).set(1 if ready else 0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop every series of a deleted DataSource."""
        with self._lock:
            self._ready_count -= int(self._readiness.pop((namespace, name), False))
            self._publish_readiness()
        for gauge in (self.ready, self.last_success, self.documents, self.files_failed):
            with suppress(KeyError):
                gauge.remove(namespace, name)

    def _publish_readiness(self) -> None:
        ready = self._ready_count
        self.datasources.labels(ready="true").set(ready)
        self.datasources.labels(ready="false").set(len(self._readiness) - ready)

    def render(self) -> bytes:
        """The exposition text (what ``/metrics`` serves)."""
        return generate_latest(self.registry)
