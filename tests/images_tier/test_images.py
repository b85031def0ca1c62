"""The built images, run the way the chart's pods run them (`make test-images`).

Each image runs with its own user (no ``--user``: the image's USER must be 10001), a
read-only root, every capability dropped, no-new-privileges and a tmpfs ``/tmp`` only. The
ingestion image syncs examples/docs into Postgres twice; the chart's migration Job and agent
Deployment pod templates (default values, then ci/production-values.yaml) run unchanged
through ``podrunner`` against that database, and the agent answers a chat turn from what the
ingestion container wrote, then stops on SIGTERM within its grace period. The agent pod, with
its command swapped for a short script, OCRs an image through the shared extractors (tesseract
in the agent image), as it does for an image attached to a chat message.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.chart.tools import CHART, named, render
from tests.conftest import create_database
from tests.images_tier.conftest import CHART_SETS, copy_examples, image
from tests.images_tier.podrunner import (
    RUN_ID,
    Objects,
    Pod,
    PodRun,
    PodRunner,
    probe_url,
    translate,
)
from tests.support import free_port, shared_tmp_dir

pytestmark = pytest.mark.images

UID = 10001
PIPELINE = "images/examples"
SECRET = "images-tier-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
EXAMPLES = 7
# What the image writes through must fail: the root filesystem and everything on it.
NOT_WRITABLE = ["/probe", "/opt/venv/probe", "/etc/probe", "/var/tmp/probe", "/run/probe"]

PROBE = """
import json, os
NOT_WRITABLE = %NOT_WRITABLE%
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
failed = {}
for path in NOT_WRITABLE:
    try:
        open(path, "w").write("x")
        failed[path] = "written"
    except OSError as exc:
        failed[path] = exc.strerror
open("/tmp/probe", "w").write("x")
print(json.dumps({
    "uid": status["Uid"].split(), "gid": status["Gid"].split(),
    "cap_eff": status["CapEff"].strip(), "no_new_privs": status["NoNewPrivs"].strip(),
    "writes": failed, "tmp": open("/tmp/probe").read(),
}))
""".replace("%NOT_WRITABLE%", json.dumps(NOT_WRITABLE))


def hardened(
    name: str,
    image_ref: str,
    *args: str,
    env: dict[str, str] | None = None,
    mounts: list[str] | None = None,
    entrypoint: list[str] | None = None,
) -> list[str]:
    """``podman run`` as the chart's pods run, but with the image's own user."""
    argv = ["run", "--rm", "--name", name, "--pull", "never", "--network", "host"]
    argv += ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL"]
    argv += ["--security-opt", "no-new-privileges"]
    argv += ["--mount", "type=tmpfs,destination=/tmp,tmpfs-mode=1777,tmpfs-size=268435456"]
    for mount in mounts or []:
        argv += ["--mount", mount]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    if entrypoint is not None:
        argv += ["--entrypoint", json.dumps(entrypoint)]
    return [*argv, image_ref, *args]


@pytest.mark.parametrize("name", ["agent", "rag", "operator"])
def test_image_runs_as_10001_read_only_with_tmp_only(podman: PodRunner, name: str) -> None:
    user = podman.run("image", "inspect", "--format", "{{.Config.User}}", image(name)).stdout
    assert user.strip() == f"{UID}:{UID}"
    proc = podman.run(
        *hardened(f"rk-{RUN_ID}-probe-{name}", image(name), "-c", PROBE, entrypoint=["python"])
    )
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["uid"] == [str(UID)] * 4, "real, effective, saved and fs uid"
    assert seen["gid"] == [str(UID)] * 4
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    assert seen["writes"] == dict.fromkeys(NOT_WRITABLE, "Read-only file system")
    assert seen["tmp"] == "x"


# Renders a sentence into a PNG with Pillow (its bundled font) and reads it back through the
# shared extractors, as the agent does with an image attached to a chat message when the LLM
# takes no images (LLM_VISION=false): tesseract, a child process of the agent's Python.
OCR_SENTENCE = "Hold the Kestrel dial for ten seconds to reset the thermostat."
OCR_SCRIPT = """
import io, json, resource, sys
from PIL import Image, ImageDraw, ImageFont
from ragkeeper_knowledge.extraction import extract_file
font = ImageFont.load_default(size=32)
image = Image.new("L", (1400, 120), 255)
ImageDraw.Draw(image).text((40, 40), sys.argv[1], fill=0, font=font)
png = io.BytesIO()
image.save(png, format="PNG")
sections = extract_file(png.getvalue(), "image/png")
print(json.dumps({
    "sections": [{"text": s.text, "page": s.page, "ocr": s.ocr} for s in sections],
    "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    "tesseract_max_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
}))
"""


def test_agent_image_ocrs_an_attached_image_as_the_chart_runs_it(
    podman: PodRunner, shared_dir: Path
) -> None:
    """The agent Deployment's pod (default values: read-only root, UID 10001, no capabilities,
    its memory limit) reads the words of a PNG through ``extract_file``."""
    rendered, objects = chart_objects("postgresql://unused@127.0.0.1:9/none", [], [])
    pod_spec = copy.deepcopy(named(rendered, "Deployment", "-agent")["spec"]["template"]["spec"])
    container = pod_spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec["securityContext"]["runAsUser"] == UID
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ATTACHMENTS_ENABLED"] == "true"
    container["command"] = ["python", "-c", OCR_SCRIPT, OCR_SENTENCE]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        container.pop(probe)
    run = translate(pod_spec, Pod("agent-ocr", "ragkeeper", shared_dir / "ocr"), objects)
    assert run.image == image("agent")
    assert "--read-only" in run.options and "--memory" in run.options
    done = podman.run_to_completion(run, timeout=120)
    assert done.exit_code == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    [section] = seen["sections"]
    assert " ".join(section["text"].split()) == OCR_SENTENCE
    assert (section["page"], section["ocr"]) == (None, True)
    print(
        f"agent image OCR: python {seen['max_rss_kib'] // 1024} MiB, "
        f"tesseract {seen['tesseract_max_rss_kib'] // 1024} MiB max RSS"
    )


def rag_run(podman: PodRunner, database_url: str, docs: Path, termination: Path) -> Any:
    termination.write_text("")
    termination.chmod(0o666)
    argv = hardened(
        f"rk-{RUN_ID}-rag",
        image("rag"),
        env={
            "RAG_PIPELINE_TYPE": "local",
            "RAG_WATCH_DIRECTORY": "/data",
            "RAG_PIPELINE_ID": PIPELINE,
            "DATABASE_URL": database_url,
            "EMBEDDING_PROVIDER": "offline",
        },
        mounts=[
            f"type=bind,src={docs},dst=/data,ro=true",
            f"type=bind,src={termination},dst=/dev/termination-log",
        ],
    )
    return podman.run(*argv, timeout=300, check=False)


@pytest.fixture(scope="module")
def ingested(podman: PodRunner, database_url: str) -> Iterator[Any]:
    """examples/docs synced twice by the rag image: (first, second) (process, termination log)."""
    with shared_tmp_dir("rk-img-docs") as folder:
        docs = copy_examples(folder / "docs")
        first_log, second_log = folder / "first.log", folder / "second.log"
        first = rag_run(podman, database_url, docs, first_log)
        second = rag_run(podman, database_url, docs, second_log)
        yield (first, first_log.read_text()), (second, second_log.read_text())


def test_rag_image_syncs_a_mounted_folder_then_embeds_nothing(ingested: Any) -> None:
    (first, first_message), (second, second_message) = ingested
    assert first.returncode == 0, first.stderr[-3000:]
    stats = json.loads(first.stdout.strip().splitlines()[-1])
    assert json.loads(first_message) == stats, "the termination log carries the same stats"
    assert (stats["status"], stats["files_added"], stats["files_failed"]) == (
        "success",
        EXAMPLES,
        0,
    )
    assert stats["chunks_embedded"] > 0
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert json.loads(second_message) == again
    assert (again["files_unchanged"], again["files_added"], again["chunks_embedded"]) == (
        EXAMPLES,
        0,
        0,
    )


def chart_objects(database_url: str, values: list[Path], sets: list[str]) -> tuple[Any, Objects]:
    rendered = render(*values, sets=[*CHART_SETS, *sets])
    objects = Objects.from_manifests(rendered)
    # The Secrets a user creates before installing (and the DSN of this test's database).
    # One all-powerful DSN under every role's key (docs/deploy.md, "Database roles").
    keys = ("DATABASE_URL", "AGENT_DATABASE_URL", "INGEST_DATABASE_URL")
    objects.add_secret("ragkeeper-database", dict.fromkeys(keys, database_url))
    objects.add_secret("ragkeeper-auth", {"AUTH_JWT_SECRET": SECRET})
    for name, key in [
        ("ragkeeper-embedding", "EMBEDDING_API_KEY"),
        ("ragkeeper-llm", "LLM_API_KEY"),
        ("ragkeeper-rerank", "RERANK_API_KEY"),
        ("ragkeeper-langfuse", "OTEL_EXPORTER_OTLP_HEADERS"),
    ]:
        objects.add_secret(name, {key: "Authorization=Basic dGVzdA==" if "OTEL" in key else "k"})
    return rendered, objects


def token(sub: str) -> str:
    claims = {"sub": sub, "aud": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def wait_ready(podman: PodRunner, name: str, url: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not podman.running(name):
            raise AssertionError(f"{name} exited before ready:\n{podman.logs(name)[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not 200 within {timeout}s:\n{podman.logs(name)[-4000:]}")


def chat(base: str, query: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token('images-tier')}"}
    with httpx.stream(
        "POST", base + "/api/pydantic-agent", json={"query": query}, headers=headers, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        return [json.loads(line) for line in response.iter_lines() if line]


class FakeEmbeddings:
    """An OpenAI-compatible ``/v1/embeddings`` on 127.0.0.1 for the production values."""

    DIMENSION = 1536

    def __init__(self) -> None:
        dimension = self.DIMENSION

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                data = [
                    {
                        "object": "embedding",
                        "index": i,
                        "embedding": [1.0] + [0.0] * (dimension - 1),
                    }
                    for i in range(len(texts))
                ]
                payload = json.dumps({"object": "list", "data": data, "model": body["model"]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    server = FakeEmbeddings()
    yield server
    server.close()


@pytest.fixture(scope="module")
async def production_database_url(pg_admin_url: str) -> str:
    """Its own database: the production values embed with another model than examples/."""
    return await create_database(pg_admin_url, "production")


def scenario(name: str, embeddings: FakeEmbeddings) -> tuple[list[Path], list[str]]:
    if name == "default":
        return [], []
    # Every URL the production values point off this machine is bent to 127.0.0.1 (the
    # embeddings API to a fake one, the others to a closed port): the tier makes no other
    # traffic. Everything else is rendered as ci/production-values.yaml says.
    return [CHART / "ci" / "production-values.yaml"], [
        f"embedding.baseUrl={embeddings.url}",
        "llm.baseUrl=http://127.0.0.1:9/v1",
        "agent.auth.jwksUrl=https://127.0.0.1:9/jwks.json",
        "agent.tracing.endpoint=http://127.0.0.1:9/otel",
    ]


def agent_spec(
    rendered: Any, objects: Objects, workdir: Path, port: int, metrics_port: int
) -> tuple[PodRun, dict[str, Any]]:
    deployment = named(rendered, "Deployment", "-agent")
    pod = Pod(name="ragkeeper-agent-0", namespace="ragkeeper", workdir=workdir)
    # Host network: the agent listens on free ports of 127.0.0.1, not 0.0.0.0:8000 and :9091.
    spec = translate(
        deployment["spec"]["template"]["spec"],
        pod,
        objects,
        env_overrides={"HOST": "127.0.0.1", "PORT": str(port), "METRICS_PORT": str(metrics_port)},
    )
    return spec, deployment


@pytest.mark.parametrize(
    "values",
    [
        "default",
        "production",
    ],
)
def test_chart_migration_job_then_agent_deployment_serve(
    podman: PodRunner,
    database_url: str,
    production_database_url: str,
    ingested: Any,
    fake_embeddings: FakeEmbeddings,
    shared_dir: Path,
    values: str,
) -> None:
    files, sets = scenario(values, fake_embeddings)
    db = database_url if values == "default" else production_database_url
    rendered, objects = chart_objects(db, files, sets)

    job = named(rendered, "Job", "-migration")
    migrate = translate(
        job["spec"]["template"]["spec"],
        Pod(name="ragkeeper-migration-0", namespace="ragkeeper", workdir=shared_dir / "migrate"),
        objects,
    )
    assert migrate.entrypoint == ["python", "-m", "ragkeeper_knowledge.migrate"]
    assert migrate.image == image("agent")
    done = podman.run_to_completion(migrate)
    assert done.exit_code == 0, done.stderr[-3000:]

    port, metrics_port = free_port(), free_port()
    spec, deployment = agent_spec(rendered, objects, shared_dir / "agent", port, metrics_port)
    assert spec.image == image("agent")
    podman.start(spec)
    try:
        ready = probe_url(spec, "readinessProbe", {8000: port})
        assert ready.endswith("/readyz")
        wait_ready(podman, spec.name, ready)
        assert httpx.get(probe_url(spec, "livenessProbe", {8000: port})).status_code == 200
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(base + "/metrics").status_code == 404, "the Ingress' port"
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert metrics.status_code == 200 and "# TYPE" in metrics.text
        if values == "default":
            *_, final = chat(base, "Does the Kestrel work with line-voltage baseboard heaters?")
            assert final["complete"] is True
            sources = json.dumps(final["sources"])
            assert "kestrel" in sources.lower(), final
            assert "line-voltage" in final["text"] or "240 V" in final["text"], final["text"]
        grace = int(deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
        code, took = podman.stop(spec.name, grace)
        assert took < grace, f"SIGKILLed after {took:.1f}s"
        assert code == 0, podman.logs(spec.name)[-3000:]
    finally:
        podman.remove(spec.name)


def test_memory_limit_kills_like_a_pod(podman: PodRunner, shared_dir: Path) -> None:
    """A container over its memory limit is OOM-killed (exit 137), so an OOM fails a test."""
    spec = {
        "securityContext": {"runAsUser": UID, "runAsGroup": UID},
        "containers": [
            {
                "name": "hog",
                "image": image("rag"),
                "command": ["python", "-c", "b = bytearray(512 * 1024 * 1024); print(len(b))"],
                "resources": {"limits": {"memory": "64Mi"}},
                "securityContext": {"readOnlyRootFilesystem": True},
            }
        ],
    }
    run = translate(spec, Pod("hog", "images", shared_dir / "hog"), Objects())
    done = podman.run_to_completion(run)
    assert done.exit_code == 137, (done.exit_code, done.stderr[-2000:])
