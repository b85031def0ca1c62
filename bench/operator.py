"""Benchmark: the operator at scale, against a plain script that only creates the CronJobs.

Run: ``uv run --group bench python -m bench.operator`` (500, 2,000 and 5,000 DataSources;
``--counts 500`` for fewer; ``--fairness`` for the broken-neighbours run only)

Both sides talk HTTP to the same kind of in-process API emulator
(``tests/operator/harness.py``: kmock's emulator with uid/resourceVersion).
DataSources are spread over 10 namespaces, each with its database Secret and PVC.

* operator: ``python -m ragkeeper_operator`` as a subprocess; the benchmark
  creates N DataSources at once and measures the time until all N CronJobs
  exist and every DataSource reports ``Ready=True``; the API calls it made per
  DataSource (from the emulator's request log; the list/watch streams apart);
  its peak RSS (sampled);
* restart: a second operator process on the same N Ready DataSources: the time
  until it has re-listed everything and gone quiet, and its calls by verb (the
  target is no write at all);
* baseline: a plain script (subprocess) that creates the same N CronJobs
  directly with the official Kubernetes client, one after another;
* fairness: 100 healthy DataSources alone, then the same 100 created after 10
  broken ones (5 with a missing PVC, 5 with a missing Drive credentials Secret):
  the time until the 100 healthy ones are Ready, and the ratio.

Prints absolute figures and the ratios. It never gates CI.
"""

from __future__ import annotations

import sys

# Run as a script, this file's directory comes first on sys.path and the file
# itself would shadow the standard library's ``operator`` module: drop it.
if sys.path and sys.path[0] and __file__.startswith(sys.path[0].rstrip("/") + "/"):
    del sys.path[0]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import AsyncIterator, Callable  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402

NAMESPACES = tuple(f"bench-{index}" for index in range(10))
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
STREAMS = {"list", "watch"}
# The operator has gone quiet when it has made no request for this long.
QUIET_SECONDS = 2.0


def datasource(index: int, *, broken: str | None = None) -> dict[str, Any]:
    """A local DataSource in one of the namespaces; ``broken``: a missing PVC or Secret."""
    spec: dict[str, Any] = {
        "type": "local",
        "schedule": f"{index % 60} * * * *",
        "local": {"volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
    }
    if broken == "pvc":
        spec["local"]["volume"]["persistentVolumeClaim"]["claimName"] = "missing"
    elif broken == "secret":
        spec = {
            "type": "googleDrive",
            "schedule": f"{index % 60} * * * *",
            "googleDrive": {
                "folderId": "1AbCdEf",
                "credentialsSecretRef": {"name": "missing-drive", "key": "credentials.json"},
            },
        }
    name = f"{broken or 'source'}-{index:04d}"
    metadata = {"name": name, "namespace": NAMESPACES[index % len(NAMESPACES)]}
    return {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": metadata,
        "spec": spec,
    }


def cronjobs(count: int) -> list[dict[str, Any]]:
    """The exact CronJobs the operator would build, for the baseline to create."""
    from ragkeeper_operator.builders import build_cronjob
    from ragkeeper_operator.settings import OperatorSettings
    from ragkeeper_operator.spec import parse_spec

    settings = OperatorSettings(watch_namespaces=())
    result = []
    for index in range(count):
        body = datasource(index)
        body["metadata"]["uid"] = f"00000000-0000-0000-0000-{index:012d}"
        result.append(build_cronjob(body, parse_spec(body["spec"]), settings))
    return result


def baseline_worker(kubeconfig: str, count: int) -> None:
    """The plain script: create N CronJobs with the Kubernetes client, report time and RSS."""
    from kubernetes import client, config

    config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    api = client.BatchV1Api()
    objects = cronjobs(count)
    started = time.perf_counter()
    for obj in objects:
        body = client.V1CronJob.from_dict(obj)
        assert body is not None
        api.create_namespaced_cron_job(obj["metadata"]["namespace"], body)
    elapsed = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "rss_bytes": rss}))


def _ready_names(k8s: Any) -> tuple[int, set[str]]:
    """How many CronJobs exist, and the names of the DataSources with Ready=True."""
    import kmock

    from tests.operator.harness import DS

    cronjob_resource, ds_resource = kmock.resource("batch/v1/cronjobs"), kmock.resource(DS)
    made, ready = 0, set()
    for (res, _, name), obj in k8s.api.objects.items():
        if obj.deleted:
            continue
        if res == cronjob_resource:
            made += 1
        elif res == ds_resource:
            conditions = (obj.raw.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready.add(name)
    return made, ready


def _operator_env(kubeconfig: Path) -> dict[str, str]:
    """The operator's environment: the emulator's kubeconfig, free ports, all namespaces."""
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACES": "",
        "METRICS_PORT": str(free_port()),
        "HEALTH_PORT": str(free_port()),
        "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "WARNING"),
        "RAG_IMAGE": "registry.example/ragkeeper-rag:bench",
    }
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


class _PeakRss:
    """The peak resident set size of one process, as far as it has been sampled."""

    def __init__(self, pid: int) -> None:
        import psutil  # type: ignore[import-untyped]

        self.process = psutil.Process(pid)
        self.peak = 0

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def sample(self) -> None:
        self.peak = max(self.peak, self.rss())


@dataclass
class Calls:
    """The operator's requests in the emulator's log from ``start`` on."""

    k8s: Any
    start: int = 0
    last_seen: tuple[int, float] = field(default=(0, 0.0))

    def mark(self) -> None:
        self.start = len(self.k8s.api.log)

    def verbs(self) -> tuple[Counter[str], Counter[str]]:
        """(calls by verb, list/watch streams by verb) since the mark."""
        from tests.operator.rbac import operator_calls

        calls = operator_calls(self.k8s.api.log[self.start :])
        per_object = Counter(c.verb for c in calls if c.is_resource and c.verb not in STREAMS)
        streams = Counter(c.verb for c in calls if c.verb in STREAMS or not c.is_resource)
        return per_object, streams

    async def quiet(self, memory: _PeakRss) -> float:
        """Wait until no request came for ``QUIET_SECONDS``; the time of the last one."""
        seen, last = len(self.k8s.api.log), time.perf_counter()
        while time.perf_counter() - last < QUIET_SECONDS:
            memory.sample()
            await asyncio.sleep(0.1)
            now = len(self.k8s.api.log)
            if now != seen:
                seen, last = now, time.perf_counter()
        return last


@dataclass
class _Process:
    """A running operator: its memory samples and its metrics endpoint."""

    memory: _PeakRss
    metrics_url: str

    async def reconciled(self, http: Any) -> int:
        """``ragkeeper_operator_reconciliations_total{result="success"}`` right now."""
        from prometheus_client.parser import text_string_to_metric_families

        async with http.get(self.metrics_url) as response:
            text = await response.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, result = sample.name, sample.labels.get("result")
                if name == "ragkeeper_operator_reconciliations_total" and result == "success":
                    return int(sample.value)
        return 0


@asynccontextmanager
async def _operator(k8s: Any, memory: list[_PeakRss]) -> AsyncIterator[_Process]:
    """``python -m ragkeeper_operator`` against the emulator, alive, until the block exits."""
    env = _operator_env(k8s.kubeconfig)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ragkeeper_operator",
        env=env,
        stderr=None if os.environ.get("BENCH_LOG_LEVEL") else subprocess.DEVNULL,
    )
    peak = _PeakRss(process.pid)
    memory.append(peak)
    try:
        await _wait_alive(k8s, f"http://127.0.0.1:{env['HEALTH_PORT']}/healthz", peak)
        yield _Process(peak, f"http://127.0.0.1:{env['METRICS_PORT']}/metrics")
    finally:
        process.terminate()
        await process.wait()


async def _wait_alive(k8s: Any, health_url: str, memory: _PeakRss) -> None:
    """Poll the operator's health endpoint until kopf reports itself alive."""
    while True:
        memory.sample()
        try:
            async with k8s.http.get(health_url) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.1)


async def _create(k8s: Any, bodies: list[dict[str, Any]]) -> None:
    limiter = asyncio.Semaphore(50)

    async def create(body: dict[str, Any]) -> None:
        async with limiter:
            await k8s.create_datasource(body)

    await asyncio.gather(*(create(body) for body in bodies))


async def _until(done: Callable[[], bool], memory: _PeakRss, what: str) -> None:
    started = time.perf_counter()
    while not done():
        memory.sample()
        if time.perf_counter() - started > 1800:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


@asynccontextmanager
async def _cluster() -> AsyncIterator[Any]:
    """The emulator with each namespace's database Secret and PVC."""
    from tests.operator.harness import cluster

    with tempfile.TemporaryDirectory() as tmp:
        async with cluster(Path(tmp)) as k8s:
            k8s.api.request_history = 8  # the recent window kmock matches requests against
            for namespace in NAMESPACES:
                await k8s.create_secret(namespace, "ragkeeper-database", ["DATABASE_URL"])
                await k8s.create_pvc(namespace, "docs")
            yield k8s


def _all_ready(k8s: Any, count: int) -> Callable[[], bool]:
    def done() -> bool:
        made, ready = _ready_names(k8s)
        return made >= count and len(ready) >= count

    return done


async def run_operator(count: int) -> dict[str, Any]:
    """Create N DataSources under a running operator, then restart it on them."""
    async with _cluster() as k8s:
        calls, memory = Calls(k8s), list[_PeakRss]()
        calls.mark()
        async with _operator(k8s, memory) as process:
            peak = process.memory
            idle_rss = peak.rss()
            started = time.perf_counter()
            await _create(k8s, [datasource(index) for index in range(count)])
            await _until(_all_ready(k8s, count), peak, f"{count} Ready DataSources")
            elapsed = time.perf_counter() - started
            await calls.quiet(peak)
            created, streams = calls.verbs()
        restart = await _restart(k8s, count, calls, memory)
        return {
            "seconds": elapsed,
            "calls": created,
            "streams": streams,
            "rss_bytes": max(sample.peak for sample in memory),
            "idle_rss_bytes": idle_rss,
            **restart,
        }


async def _restart(k8s: Any, count: int, calls: Calls, memory: list[_PeakRss]) -> dict[str, Any]:
    """A new operator process on N Ready DataSources: seconds until it resumed them all."""
    calls.mark()
    started = time.perf_counter()
    async with _operator(k8s, memory) as process:
        resumed = 0
        while resumed < count:
            process.memory.sample()
            # Not more often: a scrape renders (and parses) four series per DataSource.
            await asyncio.sleep(0.5)
            resumed = await process.reconciled(k8s.http)
        seconds = time.perf_counter() - started
        await calls.quiet(process.memory)
        restarted, streams = calls.verbs()
    return {"restart_seconds": seconds, "restart_calls": restarted, "restart_streams": streams}


async def run_baseline(count: int) -> dict[str, float]:
    async with _cluster() as k8s:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--baseline-worker",
            str(k8s.kubeconfig),
            "--counts",
            str(count),
            stdout=subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert len(k8s.all("batch/v1/cronjobs")) == count
        result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return result


async def run_fairness(healthy: int, broken: int) -> float:
    """Seconds until ``healthy`` DataSources are Ready, created after ``broken`` broken ones."""
    async with _cluster() as k8s, _operator(k8s, []) as process:
        kinds = ("pvc", "secret")
        await _create(k8s, [datasource(i, broken=kinds[i % 2]) for i in range(broken)])
        started = time.perf_counter()
        bodies = [datasource(index) for index in range(healthy)]
        await _create(k8s, bodies)
        wanted = {body["metadata"]["name"] for body in bodies}
        healthy_ready = lambda: wanted <= _ready_names(k8s)[1]  # noqa: E731
        await _until(healthy_ready, process.memory, "the healthy DataSources")
        return time.perf_counter() - started


def chart_memory_limit() -> float:
    """The operator's memory limit in the chart's values (bytes)."""
    import yaml

    values = yaml.safe_load((ROOT / "charts/ragkeeper/values.yaml").read_text())
    limit = str(values["operator"]["resources"]["limits"]["memory"])
    units = {"Mi": 1024**2, "Gi": 1024**3}
    return float(limit[:-2]) * units[limit[-2:]]


def _verbs(counter: Counter[str], count: int) -> str:
    total = sum(counter.values())
    parts = ", ".join(f"{verb} {value / count:.2f}" for verb, value in sorted(counter.items()))
    return f"{total / count:.2f} per DataSource ({parts})"


def report(count: int, operator: dict[str, Any], baseline: dict[str, float]) -> None:
    mib = 1024 * 1024
    seconds, writes = operator["seconds"], operator["restart_calls"]
    print(f"== {count} DataSources in {len(NAMESPACES)} namespaces")
    print(
        f"operator: {seconds:.2f}s until all CronJobs exist and all Ready=True, "
        f"{count / seconds:.0f}/s; RSS peak {operator['rss_bytes'] / mib:.0f} MiB "
        f"(idle {operator['idle_rss_bytes'] / mib:.0f} MiB)"
    )
    print(f"  API calls: {_verbs(operator['calls'], count)}")
    print(f"  streams (list/watch, once per resource): {dict(operator['streams'])}")
    print(
        f"restart on {count} Ready DataSources: all resumed {operator['restart_seconds']:.2f}s "
        f"after the process started; calls {_verbs(writes, count)}; "
        f"writes {sum(writes[v] for v in WRITES)}"
    )
    print(f"  streams (list/watch) of the restart: {dict(operator['restart_streams'])}")
    print(
        f"baseline (plain kubernetes-client script, CronJobs only): {baseline['seconds']:.2f}s, "
        f"{count / baseline['seconds']:.0f}/s; RSS peak {baseline['rss_bytes'] / mib:.0f} MiB"
    )
    print(f"time ratio operator/baseline: {seconds / baseline['seconds']:.2f}x")
    print(f"RSS ratio operator/baseline: {operator['rss_bytes'] / baseline['rss_bytes']:.2f}x")
    limit = chart_memory_limit()
    print(
        f"operator peak RSS / chart memory limit ({limit / mib:.0f} MiB): "
        f"{operator['rss_bytes'] / limit:.2f}"
    )


def fairness(runs: int = 3) -> None:
    """The median of ``runs`` alternating runs each way (one run is too noisy at ~2 s)."""
    alone: list[float] = []
    with_broken: list[float] = []
    for _ in range(runs):
        alone.append(asyncio.run(run_fairness(100, 0)))
        with_broken.append(asyncio.run(run_fairness(100, 10)))
    quiet, noisy = statistics.median(alone), statistics.median(with_broken)
    print(f"== fairness: 100 healthy DataSources, alone and after 10 broken ones ({runs} runs)")
    print(f"alone: {quiet:.2f}s; after 10 broken: {noisy:.2f}s (medians)")
    print(f"time ratio with/without broken neighbours: {noisy / quiet:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="500,2000,5000")
    parser.add_argument("--fairness", action="store_true", help="only the fairness run")
    parser.add_argument("--baseline-worker", metavar="KUBECONFIG")
    args = parser.parse_args()
    counts = [int(value) for value in args.counts.split(",")]
    if args.baseline_worker:
        baseline_worker(args.baseline_worker, counts[0])
        return
    if not args.fairness:
        for count in counts:
            operator = asyncio.run(run_operator(count))
            baseline = asyncio.run(run_baseline(count))
            report(count, operator, baseline)
    fairness()


if __name__ == "__main__":
    main()
