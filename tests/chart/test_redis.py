"""The optional Redis of the agent's serving path, as the chart renders it.

* Off by default: no Redis object and no REDIS_* variable in the default render, in the ci/
  scenarios that do not ask for one, or in manifests/.
* ``redis.enabled`` (ci/redis-values.yaml): one hardened pod (restricted Pod Security
  Standard), a cache only (nothing persisted, ``allkeys-lru`` at maxmemory), a password that
  never appears in its arguments or environment, a NetworkPolicy that admits the agent pods
  only and lets nothing out; the agent reads REDIS_URL and REDIS_PASSWORD from its Secret and
  may reach its port. The rendered command line, config file and probes are run against a real
  redis-server as an unprivileged user in a read-only working directory.
* ``externalRedis``: the agent's URL (and password) come from the named Secret, and nothing of
  the bundled Redis is rendered. Both at once fail the render with a message saying so.

The agent's Settings reading that environment back: test_settings_contract.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml

from scripts import chart_values
from tests.chart.tools import CI_VALUES, ROOT, helm_template, named, render, tool
from tests.support import free_port, shared_tmp_dir

REDIS_SCENARIO = next(path for path in CI_VALUES if path.stem == "redis-values")
EXTERNAL = [
    "externalRedis.existingSecret=team-redis",
    "externalRedis.urlKey=URL",
    "externalRedis.passwordKey=PASSWORD",
]
# Volume types the restricted Pod Security Standard allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _redis_objects(objects: list[dict[str, Any]]) -> list[str]:
    return [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in objects
        if obj["metadata"]["name"].endswith("-redis")
    ]


def _agent(objects: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = named(objects, "Deployment", "-agent")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def _redis_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: item for name, item in _env(container).items() if name.startswith("REDIS_")}


@pytest.fixture(scope="module")
def bundled(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["redis-values"]


def _redis_pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = named(objects, "Deployment", "-redis")["spec"]["template"]["spec"]
    return spec


def test_no_redis_by_default_nor_in_the_plain_manifests(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    def asks_for_redis(path: Path) -> bool:
        values = yaml.safe_load(path.read_text()) or {}
        external = values.get("externalRedis", {}).get("existingSecret")
        return bool(values.get("redis", {}).get("enabled") or external)

    without = {"default": render()} | {
        path.stem: rendered[path.stem] for path in CI_VALUES if not asks_for_redis(path)
    }
    assert {"default", "minimal-values", "manifests-values"} <= set(without)
    for name, objects in without.items():
        assert _redis_objects(objects) == [], name
        assert _redis_env(_agent(objects)) == {}, name
        egress = named(objects, "NetworkPolicy", "-agent")["spec"]["egress"]
        ports = {port["port"] for rule in egress for port in rule.get("ports", [])}
        assert 6379 not in ports, name
    for manifest in ("ragkeeper.yaml", "migration-job.yaml", "kustomization.yaml"):
        text = (ROOT / "manifests" / manifest).read_text()
        assert "redis" not in text.lower(), f"manifests/{manifest} mentions Redis"


def test_bundled_redis_meets_the_restricted_pod_security_standard(
    bundled: list[dict[str, Any]],
) -> None:
    pod = _redis_pod(bundled)
    assert pod["automountServiceAccountToken"] is False
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    pod_sc = pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] >= 10000
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "sysctls" not in pod_sc
    assert {kind for volume in pod["volumes"] for kind in volume if kind != "name"} <= (
        RESTRICTED_VOLUMES
    )
    (container,) = pod["containers"]
    assert "initContainers" not in pod
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all("hostPort" not in port for port in container["ports"])
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"]
    assert resources["limits"]["cpu"] and resources["limits"]["memory"] == "512Mi"
    ping = ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"]
    assert container["livenessProbe"]["exec"]["command"] == ping
    assert container["readinessProbe"]["exec"]["command"] == ping
    assert named(bundled, "Deployment", "-redis")["spec"]["replicas"] == 1


def test_bundled_redis_is_a_cache_whose_password_stays_in_its_secret(
    bundled: list[dict[str, Any]],
) -> None:
    pod = _redis_pod(bundled)
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/library/redis:7.2.11-alpine"
    args = container["args"]
    pairs = dict(zip(args[1::2], args[2::2], strict=True))
    assert pairs == {
        "--port": "6379",
        "--save": "",
        "--appendonly": "no",
        "--maxmemory": "256mb",
        "--maxmemory-policy": "allkeys-lru",
    }
    assert container["command"] == ["redis-server"] and args[0] == "/etc/redis/auth.conf"
    # No data volume: the root filesystem is read-only, so nothing can be written but /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/etc/redis": "auth", "/tmp": "tmp"}
    secret = named(bundled, "Secret", "-redis")
    password = secret["stringData"]["REDIS_PASSWORD"]
    assert len(password) == 32 and password.isalnum()
    assert secret["stringData"]["auth.conf"] == f"requirepass {password}\n"
    auth = next(v for v in pod["volumes"] if v["name"] == "auth")["secret"]
    assert auth["secretName"] == secret["metadata"]["name"]
    assert auth["items"] == [{"key": "auth.conf", "path": "auth.conf"}]
    assert auth["defaultMode"] == 0o440
    # Only the Secret carries it: not the pod spec (arguments, probes, environment).
    assert "env" not in container and "envFrom" not in container
    spec_text = yaml.safe_dump(named(bundled, "Deployment", "-redis"))
    assert password not in spec_text
    service = named(bundled, "Service", "-redis")
    assert service["spec"]["ports"] == [
        {"name": "redis", "port": 6379, "targetPort": "redis", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"]
        == named(bundled, "Deployment", "-redis")["spec"]["selector"]["matchLabels"]
    )


def test_only_the_agent_reaches_the_bundled_redis(bundled: list[dict[str, Any]]) -> None:
    policy = named(bundled, "NetworkPolicy", "-redis")["spec"]
    assert policy["podSelector"] == named(bundled, "Deployment", "-redis")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    agent_selector = named(bundled, "Deployment", "-agent")["spec"]["selector"]
    # No namespaceSelector: agent pods of this release, in its namespace, and nothing else.
    assert policy["ingress"] == [
        {"from": [{"podSelector": agent_selector}], "ports": [{"protocol": "TCP", "port": 6379}]}
    ]
    assert policy["egress"] == []
    egress = named(bundled, "NetworkPolicy", "-agent")["spec"]["egress"]
    to_redis = [rule for rule in egress if {"protocol": "TCP", "port": 6379} in rule["ports"]]
    assert to_redis == [
        {
            "to": [{"podSelector": policy["podSelector"]}],
            "ports": [{"protocol": "TCP", "port": 6379}],
        }
    ]


def test_agent_reads_the_bundled_redis_from_its_secret(bundled: list[dict[str, Any]]) -> None:
    env = _redis_env(_agent(bundled))
    secret = named(bundled, "Secret", "-redis")
    name = secret["metadata"]["name"]
    assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": name, "key": "REDIS_URL"}}
    assert env["REDIS_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": name, "key": "REDIS_PASSWORD"}
    }
    url = urlsplit(secret["stringData"]["REDIS_URL"])
    service = named(bundled, "Service", "-redis")
    assert (url.scheme, url.hostname, url.port, url.path) == (
        "redis",
        f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc",
        6379,
        "/0",
    )
    assert url.username is None and url.password is None, "the password is apart"
    tuning = yaml.safe_load(REDIS_SCENARIO.read_text())["agent"]["redis"]
    assert {name: item["value"] for name, item in env.items() if "value" in item} == {
        "REDIS_SOCKET_TIMEOUT_SECONDS": str(tuning["socketTimeoutSeconds"]),
        "REDIS_CONNECT_TIMEOUT_SECONDS": str(tuning["connectTimeoutSeconds"]),
        "REDIS_MAX_CONNECTIONS": str(tuning["maxConnections"]),
        "REDIS_EMBEDDING_TTL_SECONDS": str(tuning["embeddingTtlSeconds"]),
        "REDIS_SEARCH_TTL_SECONDS": str(tuning["searchTtlSeconds"]),
        "REDIS_RETRY_SECONDS": str(tuning["retrySeconds"]),
        "REDIS_KEY_PREFIX": tuning["keyPrefix"],
    }


@pytest.mark.parametrize("password_key", [True, False], ids=["with-password", "url-only"])
def test_external_redis_comes_from_the_named_secret(password_key: bool) -> None:
    sets = EXTERNAL if password_key else EXTERNAL[:2]
    objects = render(sets=sets)
    env = _redis_env(_agent(objects))
    assert env["REDIS_URL"]["valueFrom"] == {"secretKeyRef": {"name": "team-redis", "key": "URL"}}
    if password_key:
        assert env["REDIS_PASSWORD"]["valueFrom"] == {
            "secretKeyRef": {"name": "team-redis", "key": "PASSWORD"}
        }
    else:
        assert "REDIS_PASSWORD" not in env
    defaults = yaml.safe_load(chart_values.VALUES.read_text())["agent"]["redis"]
    assert env["REDIS_KEY_PREFIX"]["value"] == defaults["keyPrefix"]
    assert _redis_objects(objects) == [], "nothing of the bundled Redis"
    # Its port is the user's to open (networkPolicy.extraAgentEgress; docs/deploy.md).
    egress = named(objects, "NetworkPolicy", "-agent")["spec"]["egress"]
    assert all({"protocol": "TCP", "port": 6379} not in rule["ports"] for rule in egress)


def test_bundled_and_external_redis_together_are_refused() -> None:
    proc = helm_template(sets=["redis.enabled=true", *EXTERNAL])
    assert proc.returncode != 0
    assert "redis.enabled and externalRedis.existingSecret are mutually exclusive" in proc.stderr, (
        proc.stderr
    )


@pytest.mark.parametrize(
    ("maxmemory", "limit", "accepted"),
    [("64mb", "128Mi", True), ("85mb", "128Mi", True), ("100mb", "128Mi", False)]
    + [("1gb", "1.5Gi", True), ("1gb", "1Gi", False), ("1gb", "2G", True)],
)
def test_the_memory_limit_leaves_redis_room_above_maxmemory(
    maxmemory: str, limit: str, accepted: bool
) -> None:
    proc = helm_template(
        sets=[
            "redis.enabled=true",
            f"redis.maxmemory={maxmemory}",
            f"redis.resources.limits.memory={limit}",
        ]
    )
    assert (proc.returncode == 0) is accepted, proc.stderr
    if not accepted:
        assert "must be at least 1.5 times redis.maxmemory" in proc.stderr


@pytest.fixture
def redis_server(bundled: list[dict[str, Any]]) -> Iterator[tuple[int, list[str], str]]:
    """The rendered redis-server command line run unprivileged in a read-only directory.

    Its config file is the rendered Secret's ``auth.conf``, readable by the pod's group only
    (the kubelet mounts it with the fsGroup and mode 0440); ``--port`` is a free port and the
    server binds 127.0.0.1 only. Yields the port, the command and the Secret's password.
    """
    (container,) = _redis_pod(bundled)["containers"]
    secret = named(bundled, "Secret", "-redis")["stringData"]
    port = free_port()
    unprivileged = os.geteuid() == 0
    nobody = 65534
    with shared_tmp_dir("ragkeeper-redis") as tmp:
        auth = tmp / "auth.conf"
        auth.write_text(secret["auth.conf"])
        if unprivileged:
            os.chown(auth, 0, nobody)
        auth.chmod(0o440)
        workdir = tmp / "data"
        workdir.mkdir()
        workdir.chmod(0o555)
        args = [str(auth) if arg == "/etc/redis/auth.conf" else arg for arg in container["args"]]
        args[args.index("--port") + 1] = str(port)
        command = [tool(container["command"][0]), *args, "--bind", "127.0.0.1"]
        log = tmp / "redis.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=nobody if unprivileged else None,
                group=nobody if unprivileged else None,
            )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    with redis.Redis(port=port, socket_timeout=1) as probe:
                        probe.ping()
                except redis.AuthenticationError:
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            yield port, container["livenessProbe"]["exec"]["command"], secret["REDIS_PASSWORD"]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        assert list(workdir.iterdir()) == [], "Redis wrote to its working directory"


def test_the_rendered_redis_serves_its_password_and_persists_nothing(
    redis_server: tuple[int, list[str], str], bundled: list[dict[str, Any]]
) -> None:
    port, probe, password = redis_server
    for wrong in (None, "wrong" * 6):
        with (
            redis.Redis(port=port, password=wrong) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()
    # The agent's view: REDIS_URL (the Service's name bent to this port) plus REDIS_PASSWORD.
    url = urlsplit(named(bundled, "Secret", "-redis")["stringData"]["REDIS_URL"])
    local = url._replace(netloc=f"127.0.0.1:{port}").geturl()
    with redis.Redis.from_url(local, password=password) as client:
        _assert_a_cache(client)
    # The probes need no password: any answer (NOAUTH included) is exit 0, no answer is not.
    assert probe[:5] == ["redis-cli", "-h", "127.0.0.1", "-p", "6379"]
    env = {key: value for key, value in os.environ.items() if key != "REDISCLI_AUTH"}

    def run_probe(at: int) -> subprocess.CompletedProcess[str]:
        cli = [tool("redis-cli"), *probe[1:4], str(at), *probe[5:]]
        return subprocess.run(cli, capture_output=True, text=True, timeout=10, env=env)

    answered = run_probe(port)
    assert answered.returncode == 0 and "NOAUTH" in answered.stdout + answered.stderr
    assert run_probe(free_port()).returncode != 0


def _assert_a_cache(client: redis.Redis) -> None:
    assert client.ping() is True
    config = {
        key: value
        for name in ("save", "appendonly", "maxmemory", "maxmemory-policy")
        for key, value in client.config_get(name).items()
    }
    assert config == {
        "save": "",
        "appendonly": "no",
        "maxmemory": str(256 * 1024 * 1024),
        "maxmemory-policy": "allkeys-lru",
    }
    client.set("ragkeeper:probe", "x")
    with pytest.raises(redis.ResponseError):
        client.save()  # the working directory is not writable: nothing is ever persisted
