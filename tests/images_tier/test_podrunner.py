"""The pod-spec -> ``podman run`` translation (no podman needed: part of `make test`)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_operator import builders
from ragkeeper_operator.settings import OperatorSettings
from ragkeeper_operator.spec import parse_spec
from tests.images_tier.podrunner import (
    RUN_ID,
    ContainerConfigError,
    Objects,
    Pod,
    UnsupportedSpec,
    probe_url,
    quantity,
    termination_message,
    translate,
)


def pairs(options: list[str], flag: str) -> list[str]:
    return [options[i + 1] for i, value in enumerate(options) if value == flag]


def pod_spec(**container: Any) -> dict[str, Any]:
    return {
        "securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001},
        "containers": [{"name": "app", "image": "example/app:1", **container}],
    }


@pytest.fixture
def pod(tmp_path: Path) -> Pod:
    return Pod(name="app-1", namespace="docs", workdir=tmp_path / "pod")


def test_quantities() -> None:
    assert quantity("256Mi") == 256 * 2**20
    assert quantity("1Gi") == 2**30
    assert quantity("500m") == 0.5
    assert quantity("2") == 2
    assert quantity("1G") == 10**9
    with pytest.raises(UnsupportedSpec):
        quantity("1Zi")


def test_the_operators_job_pod_becomes_a_hardened_podman_run(pod: Pod, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    settings = OperatorSettings(rag_image="example/rag:1", embedding_provider="offline")
    body: dict[str, Any] = {
        "metadata": {"name": "team-docs", "namespace": "docs", "uid": "u1"},
        "spec": {
            "type": "local",
            "schedule": "0 * * * *",
            "local": {"path": "/data", "volume": {"persistentVolumeClaim": {"claimName": "docs"}}},
        },
    }
    spec = parse_spec(body["spec"])
    template = builders.build_pod_template(body, spec, settings, "single")
    objects = Objects(claims={"docs": docs})
    objects.add_secret("ragkeeper-database", {"DATABASE_URL": "postgresql://db/x"})

    run = translate(template["spec"], pod, objects)

    options = run.options
    assert run.image == "example/rag:1"
    assert pairs(options, "--user") == ["10001:10001"]
    assert pairs(options, "--group-add") == ["10001"]
    assert "--read-only" in options and "--read-only-tmpfs=false" in options
    assert pairs(options, "--cap-drop") == ["ALL"]
    assert pairs(options, "--security-opt") == ["no-new-privileges"]
    assert pairs(options, "--network") == ["host"]
    assert pairs(options, "--pull") == ["never"]
    assert pairs(options, "--memory") == [str(2**30)] == pairs(options, "--memory-swap")
    mounts = pairs(options, "--mount")
    assert "type=tmpfs,destination=/tmp,tmpfs-mode=1777,tmpfs-size=1073741824" in mounts
    assert f"type=bind,src={docs},dst=/data,ro=true" in mounts
    assert f"type=bind,src={run.termination_log},dst=/dev/termination-log" in mounts
    assert stat.S_IMODE(run.termination_log.stat().st_mode) == 0o666
    assert run.env["DATABASE_URL"] == "postgresql://db/x"
    assert run.env["RAG_WATCH_DIRECTORY"] == "/data"
    assert run.env["RUN_MODE"] == "single"
    assert run.termination_policy == "FallbackToLogsOnError"
    argv = run.argv()
    assert argv[:4] == ["run", "--name", f"rk-{RUN_ID}-docs-app-1", "--rm"]
    assert argv[-1] == "example/rag:1", "no command/args: the image's ENTRYPOINT runs"


def test_command_args_env_expansion_and_config_maps(pod: Pod) -> None:
    spec = pod_spec(
        command=["python", "-m", "tool"],
        args=["--level", "$(LEVEL)", "$$(LEVEL)"],
        env=[
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
            {"name": "MSG", "value": "at $(LEVEL)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {
                "name": "OPTIONAL",
                "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
            },
        ],
        envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
    )
    objects = Objects(config_maps={"cfg": {"level": "debug"}})

    run = translate(spec, pod, objects)

    assert run.entrypoint == ["python", "-m", "tool"]
    assert run.args == ["--level", "debug", "$(LEVEL)"]
    assert run.env == {"CFG_level": "debug", "LEVEL": "debug", "MSG": "at debug", "POD": "app-1"}
    argv = run.argv(detach=True)
    assert argv[argv.index("--entrypoint") + 1] == json.dumps(["python", "-m", "tool"])
    assert "--detach" in argv and "--rm" not in argv


def test_missing_secret_key_is_a_container_config_error(pod: Pod) -> None:
    spec = pod_spec(
        env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "URL"}}}]
    )
    with pytest.raises(ContainerConfigError, match='secret "db" has no key "URL"'):
        translate(spec, pod, Objects())


def test_secret_volume_files_modes_group_and_read_only(pod: Pod) -> None:
    spec = pod_spec(volumeMounts=[{"name": "creds", "mountPath": "/var/run/creds"}])
    spec["volumes"] = [
        {
            "name": "creds",
            "secret": {
                "secretName": "drive",
                "items": [{"key": "sa.json", "path": "credentials.json"}],
                "defaultMode": 0o440,
            },
        }
    ]
    manifest = {
        "kind": "Secret",
        "metadata": {"name": "drive"},
        "data": {"sa.json": base64.b64encode(b"{}").decode(), "other": ""},
    }

    run = translate(spec, pod, Objects.from_manifests([manifest]))

    folder = pod.workdir / "volumes" / "creds"
    assert [p.name for p in folder.iterdir()] == ["credentials.json"]
    written = folder / "credentials.json"
    assert written.read_bytes() == b"{}"
    assert stat.S_IMODE(written.stat().st_mode) == 0o440
    if os.geteuid() == 0:
        assert written.stat().st_gid == 10001
    assert f"type=bind,src={folder},dst=/var/run/creds,ro=true" in pairs(run.options, "--mount")


def test_claims_host_paths_sub_paths_and_read_only_mounts(pod: Pod, tmp_path: Path) -> None:
    (tmp_path / "share" / "sub").mkdir(parents=True)
    spec = pod_spec(
        volumeMounts=[
            {"name": "data", "mountPath": "/data", "subPath": "sub", "readOnly": True},
            {"name": "host", "mountPath": "/host"},
        ]
    )
    spec["volumes"] = [
        {"name": "data", "persistentVolumeClaim": {"claimName": "share"}},
        {"name": "host", "hostPath": {"path": str(tmp_path)}},
    ]
    run = translate(spec, pod, Objects(claims={"share": tmp_path / "share"}))
    mounts = pairs(run.options, "--mount")
    assert f"type=bind,src={tmp_path / 'share' / 'sub'},dst=/data,ro=true" in mounts
    assert f"type=bind,src={tmp_path},dst=/host" in mounts
    with pytest.raises(ContainerConfigError, match="persistentvolumeclaim"):
        translate(spec, Pod("b", "docs", pod.workdir.parent / "b"), Objects())


def test_unknown_fields_are_refused_not_ignored(pod: Pod) -> None:
    with pytest.raises(UnsupportedSpec, match="lifecycle"):
        translate(pod_spec(lifecycle={"preStop": {}}), pod, Objects())
    spec = pod_spec()
    spec["hostNetwork"] = True
    with pytest.raises(UnsupportedSpec, match="hostNetwork"):
        translate(spec, pod, Objects())
    spec = pod_spec(volumeMounts=[{"name": "p", "mountPath": "/p"}])
    spec["volumes"] = [{"name": "p", "projected": {"sources": []}}]
    with pytest.raises(UnsupportedSpec, match="projected"):
        translate(spec, pod, Objects())
    with pytest.raises(ContainerConfigError, match="runAsNonRoot"):
        translate(pod_spec(securityContext={"runAsNonRoot": True, "runAsUser": 0}), pod, Objects())


def test_container_security_context_wins_over_the_pods(pod: Pod) -> None:
    spec = pod_spec(
        securityContext={"runAsUser": 20002, "capabilities": {"add": ["NET_BIND_SERVICE"]}},
        resources={"limits": {"cpu": "500m", "memory": "64Mi"}},
    )
    run = translate(spec, pod, Objects())
    assert pairs(run.options, "--user") == ["20002:10001"]
    assert pairs(run.options, "--cap-add") == ["NET_BIND_SERVICE"]
    assert pairs(run.options, "--cpus") == ["0.5"]
    assert "--read-only" not in run.options
    assert "--security-opt" not in run.options


def test_probe_urls_follow_named_ports_and_host_port_overrides(pod: Pod) -> None:
    spec = pod_spec(
        ports=[{"name": "http", "containerPort": 8000}],
        readinessProbe={"httpGet": {"path": "/readyz", "port": "http"}},
        livenessProbe={"httpGet": {"path": "/healthz", "port": 8000}},
    )
    run = translate(spec, pod, Objects())
    assert probe_url(run, "readinessProbe") == "http://127.0.0.1:8000/readyz"
    assert probe_url(run, "livenessProbe", {8000: 18000}) == "http://127.0.0.1:18000/healthz"


def test_termination_message_file_then_log_fallback_on_error() -> None:
    logs = "\n".join(f"line {i}" for i in range(200))
    assert termination_message('{"ok":1}', logs, 1, "FallbackToLogsOnError") == '{"ok":1}'
    assert termination_message("", logs, 0, "FallbackToLogsOnError") == ""
    assert termination_message("", logs, 1, "File") == ""
    tail = termination_message("", logs, 1, "FallbackToLogsOnError")
    assert tail.endswith("line 199") and "line 119" not in tail
    assert len(termination_message("x" * 9000, "", 0, "File")) == 4096
