"""Benchmark: the operator turning 500 DataSources into CronJobs, against a plain script.

Run: ``uv run --group bench python -m bench.operator [--count 500]``

Both sides talk HTTP to the same kind of in-process API emulator
(``tests/operator/harness.py``: kmock's emulator with uid/resourceVersion).

* operator: ``python -m ragkeeper_operator`` as a subprocess; the benchmark
  creates N DataSources at once and measures the time until all N CronJobs
  exist and every DataSource reports ``Ready=True``, and the operator's RSS
  (sampled peak);
* baseline: a plain script (subprocess) that creates the same N CronJobs
  directly with the official Kubernetes client, one after another.

Prints absolute figures and the operator/baseline ratios. It never gates CI.
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
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402

NAMESPACE = "bench"


def datasource(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "ragkeeper.dev/v1alpha1",
        "kind": "DataSource",
        "metadata": {"name": f"source-{index:04d}", "namespace": NAMESPACE},
        "spec": {
            "type": "local",
            "schedule": f"{index % 60} * * * *",
            "local": {"volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
        },
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
        api.create_namespaced_cron_job(NAMESPACE, body)
    elapsed = time.perf_counter() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "rss_bytes": rss}))


def _count_ready(k8s: Any) -> tuple[int, int]:
    """CronJobs that exist and DataSources with Ready=True (read in place, no copies)."""
    import kmock

    from tests.operator.harness import DS

    cronjob_resource, ds_resource = kmock.resource("batch/v1/cronjobs"), kmock.resource(DS)
    made = ready = 0
    for (res, _, _), obj in k8s.api.objects.items():
        if obj.deleted:
            continue
        if res == cronjob_resource:
            made += 1
        elif res == ds_resource:
            conditions = (obj.raw.get("status") or {}).get("conditions") or []
            ready += any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
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


async def _create_until_ready(k8s: Any, count: int, memory: _PeakRss) -> float:
    """Create N DataSources at once; seconds until all N CronJobs exist and all are Ready."""
    started = time.perf_counter()
    limiter = asyncio.Semaphore(50)

    async def create(index: int) -> None:
        async with limiter:
            await k8s.create_datasource(datasource(index))

    await asyncio.gather(*(create(i) for i in range(count)))
    while True:
        memory.sample()
        made, ready = _count_ready(k8s)
        if made >= count and ready >= count:
            return time.perf_counter() - started
        if time.perf_counter() - started > 900:
            raise RuntimeError(f"timed out: {made} CronJobs, {ready} Ready")
        await asyncio.sleep(0.5)


async def run_operator(count: int, tmp: Path) -> dict[str, float]:
    from tests.operator.harness import cluster

    async with cluster(tmp) as k8s:
        k8s.api.request_history = 8
        await k8s.create_secret(NAMESPACE, "ragkeeper-database", ["DATABASE_URL"])
        await k8s.create_pvc(NAMESPACE, "docs")
        env = _operator_env(k8s.kubeconfig)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ragkeeper_operator",
            env=env,
            stderr=None if os.environ.get("BENCH_LOG_LEVEL") else subprocess.DEVNULL,
        )
        memory = _PeakRss(process.pid)
        try:
            await _wait_alive(k8s, f"http://127.0.0.1:{env['HEALTH_PORT']}/healthz", memory)
            idle_rss = memory.rss()
            elapsed = await _create_until_ready(k8s, count, memory)
        finally:
            process.terminate()
            await process.wait()
        return {
            "seconds": elapsed,
            "rss_bytes": float(memory.peak),
            "idle_rss_bytes": float(idle_rss),
        }


async def run_baseline(count: int, tmp: Path) -> dict[str, float]:
    from tests.operator.harness import cluster

    async with cluster(tmp) as k8s:
        k8s.api.request_history = 8
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--baseline-worker",
            str(k8s.kubeconfig),
            "--count",
            str(count),
            stdout=subprocess.PIPE,
        )
        out, _ = await process.communicate()
        assert len(k8s.all("batch/v1/cronjobs", NAMESPACE)) == count
        result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--baseline-worker", metavar="KUBECONFIG")
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker(args.baseline_worker, args.count)
        return
    with tempfile.TemporaryDirectory() as tmp_a, tempfile.TemporaryDirectory() as tmp_b:
        operator = asyncio.run(run_operator(args.count, Path(tmp_a)))
        baseline = asyncio.run(run_baseline(args.count, Path(tmp_b)))
    mib = 1024 * 1024
    print(f"DataSources: {args.count}")
    print(
        f"operator: {operator['seconds']:.2f}s until all CronJobs exist and all Ready=True, "
        f"{args.count / operator['seconds']:.0f}/s; RSS peak {operator['rss_bytes'] / mib:.0f} MiB "
        f"(idle {operator['idle_rss_bytes'] / mib:.0f} MiB)"
    )
    print(
        f"baseline (plain kubernetes-client script, CronJobs only): {baseline['seconds']:.2f}s, "
        f"{args.count / baseline['seconds']:.0f}/s; RSS peak {baseline['rss_bytes'] / mib:.0f} MiB"
    )
    print(f"time ratio operator/baseline: {operator['seconds'] / baseline['seconds']:.2f}x")
    print(f"RSS ratio operator/baseline: {operator['rss_bytes'] / baseline['rss_bytes']:.2f}x")


if __name__ == "__main__":
    main()
