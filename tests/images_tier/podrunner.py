"""Run one container of a Kubernetes Pod template with podman, the way a kubelet would.

Test-only: the image tier runs the pod templates the operator builds and the chart renders,
unchanged, so the contract between a spec and its image is exercised for real. ``translate``
turns a pod spec into ``podman run`` arguments; ``PodRunner`` runs them (to completion, or
in the background for a server) and reads the termination message as the kubelet does.

What is translated (anything else in the spec raises ``UnsupportedSpec``, so a new field
cannot be silently ignored):

* image, ``command`` (replaces the ENTRYPOINT), ``args`` (replace the CMD), ``workingDir``;
* env: ``value`` (with ``$(VAR)`` expansion), ``valueFrom.secretKeyRef`` /
  ``configMapKeyRef`` (``optional`` honoured) / ``fieldRef`` (pod name and namespace),
  ``envFrom``; Secrets and ConfigMaps come from ``Objects`` (rendered chart objects or the
  emulator's);
* volumes: ``emptyDir`` -> tmpfs (``sizeLimit`` as its size), ``secret`` / ``configMap`` ->
  files written to a host folder (``items``, ``defaultMode``, group = ``fsGroup``) mounted
  read-only, ``persistentVolumeClaim`` -> the host folder ``Objects.claims`` names,
  ``hostPath`` -> that path; ``readOnly`` and ``subPath`` of the mounts;
* ``securityContext`` (pod, then container): ``runAsUser``/``runAsGroup`` -> ``--user``,
  ``fsGroup``/``supplementalGroups`` -> ``--group-add``, ``readOnlyRootFilesystem`` ->
  ``--read-only`` *without* podman's automatic tmpfs on /tmp, /run and /var/tmp,
  ``capabilities`` -> ``--cap-drop``/``--cap-add``, ``allowPrivilegeEscalation: false`` ->
  ``no-new-privileges``; ``runAsNonRoot`` is checked against the user the container gets;
* ``resources.limits``: memory -> ``--memory`` (swap off, so an OOM kills as in a pod), cpu
  -> ``--cpus``;
* ``terminationMessagePath`` -> a host file bind-mounted there (writable by anyone, like the
  kubelet's), read back with ``terminationMessagePolicy`` (``FallbackToLogsOnError``).

Every container runs with ``--network host`` (the tier's servers listen on 127.0.0.1) and
``--pull never`` (only images built here). Ports are not published: a server listens on the
host's port, so tests pass a free port through the env (e.g. ``PORT``) and ``probe_url``
maps the spec's port to it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Kubelet limits: the message is cut to 4096 bytes; the log fallback takes the last 80 lines
# and at most 2048 bytes.
MESSAGE_LIMIT = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048
DEFAULT_TERMINATION_PATH = "/dev/termination-log"

_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")

POD_FIELDS = {
    "containers",
    "volumes",
    "securityContext",
    "restartPolicy",
    "automountServiceAccountToken",
    "enableServiceLinks",
    "serviceAccountName",
    "terminationGracePeriodSeconds",
    "topologySpreadConstraints",
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
}
CONTAINER_FIELDS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "ports",
    "resources",
    "volumeMounts",
    "securityContext",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
}


class UnsupportedSpec(ValueError):
    """The spec uses something this runner does not translate (so it would be ignored)."""


class ContainerConfigError(ValueError):
    """What the kubelet reports as CreateContainerConfigError: a missing Secret or key."""


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``256Mi``, ``1Gi``, ``500m``, ``2``) as a number."""
    text = str(value)
    if text.endswith("m") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) / 1000
    match = _QUANTITY.match(text)
    if match is None or match.group(2) not in _UNITS:
        raise UnsupportedSpec(f"quantity {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class Objects:
    """The Secrets, ConfigMaps and volume claims a pod's references resolve against."""

    secrets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    claims: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_manifests(
        cls, objects: Sequence[Mapping[str, Any]], claims: Mapping[str, Path] | None = None
    ) -> Objects:
        """From Secret and ConfigMap manifests (``data`` base64, ``stringData`` plain)."""
        found = cls(claims=dict(claims or {}))
        for obj in objects:
            name = obj["metadata"]["name"]
            if obj.get("kind") == "Secret":
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
                data.update({k: str(v).encode() for k, v in (obj.get("stringData") or {}).items()})
                found.secrets[name] = data
            elif obj.get("kind") == "ConfigMap":
                found.config_maps[name] = {k: str(v) for k, v in (obj.get("data") or {}).items()}
        return found

    def add_secret(self, name: str, data: Mapping[str, str | bytes]) -> None:
        self.secrets[name] = {k: v.encode() if isinstance(v, str) else v for k, v in data.items()}

    def key(self, kind: str, ref: Mapping[str, Any]) -> str | None:
        store: Mapping[str, Mapping[str, Any]] = (
            self.secrets if kind == "secretKeyRef" else self.config_maps
        )
        name, key = ref["name"], ref["key"]
        if name in store and key in store[name]:
            value = store[name][key]
            return value.decode() if isinstance(value, bytes) else str(value)
        if ref.get("optional"):
            return None
        what = "secret" if kind == "secretKeyRef" else "configmap"
        raise ContainerConfigError(f'{what} "{name}" has no key "{key}" (or does not exist)')


@dataclass
class Pod:
    """Where the pod runs: its name (container name, hostname), namespace and scratch folder."""

    name: str
    namespace: str
    workdir: Path


@dataclass
class PodRun:
    """The ``podman run`` arguments of one container, and what the runner needs around them."""

    name: str
    image: str
    options: list[str]
    entrypoint: list[str] | None
    args: list[str]
    env: dict[str, str]
    termination_log: Path
    termination_policy: str
    grace_seconds: int
    ports: dict[str, int]
    container: Mapping[str, Any]

    def argv(self, *, detach: bool = False) -> list[str]:
        argv = ["run", "--name", self.name, *(["--detach"] if detach else ["--rm"])]
        argv += self.options
        for name, value in self.env.items():
            argv += ["--env", f"{name}={value}"]
        if self.entrypoint is not None:
            argv += ["--entrypoint", json.dumps(self.entrypoint)]
        return [*argv, self.image, *self.args]


# Container names carry this run's id: two test runs on one machine never touch each
# other's containers (the runner removes a leftover of the same name before starting).
RUN_ID = uuid.uuid4().hex[:6]


def container_name_for(pod: Pod) -> str:
    return f"rk-{RUN_ID}-{pod.namespace}-{pod.name}"[:63]


def _unsupported(section: str, got: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(got) - allowed
    if extra:
        raise UnsupportedSpec(f"{section}: {', '.join(sorted(extra))}")


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(sub, value)


def container_env(container: Mapping[str, Any], pod: Pod, objects: Objects) -> dict[str, str]:
    """The environment the kubelet gives ``container``: envFrom, then env with references."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        data: Mapping[str, Mapping[str, bytes | str]]
        if "secretRef" in source:
            ref, data = source["secretRef"], objects.secrets
        elif "configMapRef" in source:
            ref, data = source["configMapRef"], objects.config_maps
        else:
            raise UnsupportedSpec(f"envFrom {source}")
        if ref["name"] not in data:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'"{ref["name"]}" not found (envFrom)')
        for key, raw in data[ref["name"]].items():
            env[prefix + key] = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = {"metadata.name": pod.name, "metadata.namespace": pod.namespace}
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = _expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            if path not in fields:
                raise UnsupportedSpec(f"env {name}: fieldRef {path}")
            env[name] = fields[path]
            continue
        kind = next((k for k in ("secretKeyRef", "configMapKeyRef") if k in source), None)
        if kind is None:
            raise UnsupportedSpec(f"env {name}: valueFrom {source}")
        found = objects.key(kind, source[kind])
        if found is not None:
            env[name] = found
    return env


def _security(pod_spec: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
    pod_ctx = pod_spec.get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    _unsupported(
        "pod securityContext",
        pod_ctx,
        {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups"}
        | {"seccompProfile", "fsGroupChangePolicy"},
    )
    _unsupported(
        "container securityContext",
        ctx,
        {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "privileged"}
        | {"allowPrivilegeEscalation", "capabilities", "seccompProfile"},
    )
    merged = {**pod_ctx, **ctx}
    options: list[str] = []
    user, group = merged.get("runAsUser"), merged.get("runAsGroup")
    if user is not None:
        options += ["--user", f"{user}:{group}" if group is not None else str(user)]
    elif group is not None:
        raise UnsupportedSpec("runAsGroup without runAsUser")
    if merged.get("runAsNonRoot") and user is not None and int(user) == 0:
        raise ContainerConfigError("runAsNonRoot and runAsUser 0: the kubelet refuses to start")
    for gid in [pod_ctx.get("fsGroup"), *(pod_ctx.get("supplementalGroups") or [])]:
        if gid is not None:
            options += ["--group-add", str(gid)]
    if merged.get("privileged"):
        raise UnsupportedSpec("privileged containers")
    if merged.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]
    caps = ctx.get("capabilities") or {}
    for cap in caps.get("drop") or []:
        options += ["--cap-drop", str(cap)]
    for cap in caps.get("add") or []:
        options += ["--cap-add", str(cap)]
    if merged.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    profile = (merged.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if profile == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    elif profile != "RuntimeDefault":
        raise UnsupportedSpec(f"seccompProfile {profile}")
    return options


def _resources(container: Mapping[str, Any]) -> list[str]:
    limits = (container.get("resources") or {}).get("limits") or {}
    _unsupported("resources.limits", limits, {"memory", "cpu", "ephemeral-storage"})
    options: list[str] = []
    if "memory" in limits:
        memory = str(int(quantity(limits["memory"])))
        options += ["--memory", memory, "--memory-swap", memory]
    if "cpu" in limits:
        options += ["--cpus", f"{quantity(limits['cpu']):g}"]
    return options


def _write_files(
    folder: Path,
    data: Mapping[str, bytes | str],
    source: Mapping[str, Any],
    fs_group: int | None,
) -> None:
    """A Secret/ConfigMap volume's files: ``items`` (or every key), modes, group = fsGroup."""
    folder.mkdir(parents=True)
    default_mode = int(source.get("defaultMode", 0o644))
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise ContainerConfigError(f'volume source has no key "{item["key"]}"')
        target = folder / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        value = data[item["key"]]
        target.write_bytes(value if isinstance(value, bytes) else value.encode())
        mode = int(item.get("mode", default_mode))
        if fs_group is not None:
            mode |= 0o040  # the kubelet makes fsGroup-owned files group-readable
            if os.geteuid() == 0:
                os.chown(target, 0, fs_group)
        target.chmod(mode)
    folder.chmod(0o755)


def _volume_source(
    volume: Mapping[str, Any], pod: Pod, objects: Objects, fs_group: int | None
) -> tuple[str, Path | None, bool]:
    """(kind, host path or None for tmpfs, forced read-only) of one volume."""
    name = volume["name"]
    _unsupported(
        f"volume {name}",
        volume,
        {"name", "emptyDir", "secret", "configMap", "persistentVolumeClaim", "hostPath"},
    )
    if "emptyDir" in volume:
        return "emptyDir", None, False
    if "secret" in volume:
        source = volume["secret"]
        if source["secretName"] not in objects.secrets:
            raise ContainerConfigError(f'secret "{source["secretName"]}" not found')
        folder = pod.workdir / "volumes" / name
        _write_files(folder, objects.secrets[source["secretName"]], source, fs_group)
        return "secret", folder, True
    if "configMap" in volume:
        source = volume["configMap"]
        if source["name"] not in objects.config_maps:
            raise ContainerConfigError(f'configmap "{source["name"]}" not found')
        folder = pod.workdir / "volumes" / name
        _write_files(folder, objects.config_maps[source["name"]], source, fs_group)
        return "configMap", folder, True
    if "persistentVolumeClaim" in volume:
        claim = volume["persistentVolumeClaim"]
        if claim["claimName"] not in objects.claims:
            raise ContainerConfigError(f'persistentvolumeclaim "{claim["claimName"]}" not found')
        return (
            "persistentVolumeClaim",
            objects.claims[claim["claimName"]],
            bool(claim.get("readOnly")),
        )
    return "hostPath", Path(volume["hostPath"]["path"]), False


def _mounts(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], pod: Pod, objects: Objects
) -> list[str]:
    fs_group = (pod_spec.get("securityContext") or {}).get("fsGroup")
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    options: list[str] = []
    for mount in container.get("volumeMounts") or []:
        _unsupported("volumeMount", mount, {"name", "mountPath", "readOnly", "subPath"})
        if mount["name"] not in volumes:
            raise UnsupportedSpec(f"volumeMount {mount['name']}: no such volume")
        volume = volumes[mount["name"]]
        kind, host, forced_ro = _volume_source(volume, pod, objects, fs_group)
        target = mount["mountPath"]
        if host is None:
            limit = (volume["emptyDir"] or {}).get("sizeLimit")
            spec = f"type=tmpfs,destination={target},tmpfs-mode=1777"
            if limit is not None:
                spec += f",tmpfs-size={int(quantity(limit))}"
            options += ["--mount", spec]
            continue
        if mount.get("subPath"):
            host = host / mount["subPath"]
        if not host.exists():
            raise ContainerConfigError(f"{kind} volume {mount['name']}: {host} does not exist")
        read_only = forced_ro or bool(mount.get("readOnly"))
        options += [
            "--mount",
            f"type=bind,src={host},dst={target}" + (",ro=true" if read_only else ""),
        ]
    return options


def _ports(container: Mapping[str, Any]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for port in container.get("ports") or []:
        number = int(port["containerPort"])
        ports[str(number)] = number
        if "name" in port:
            ports[port["name"]] = number
    return ports


def translate(
    pod_spec: Mapping[str, Any],
    pod: Pod,
    objects: Objects,
    *,
    container_name: str | None = None,
    env_overrides: Mapping[str, str] | None = None,
) -> PodRun:
    """The ``podman run`` of one container of ``pod_spec`` (the first unless named)."""
    _unsupported("pod spec", pod_spec, POD_FIELDS)
    if pod_spec.get("initContainers"):
        raise UnsupportedSpec("initContainers")
    containers = pod_spec["containers"]
    if container_name is None:
        container = containers[0]
    else:
        container = next(c for c in containers if c["name"] == container_name)
    _unsupported(f"container {container['name']}", container, CONTAINER_FIELDS)
    pod.workdir.mkdir(parents=True, exist_ok=True)
    env = container_env(container, pod, objects)
    env.update(env_overrides or {})
    termination_log = pod.workdir / "termination-log"
    termination_log.write_text("")
    termination_log.chmod(0o666)
    options = ["--pull", "never", "--network", "host", "--hostname", pod.name]
    options += ["--log-driver", "k8s-file"]
    options += _security(pod_spec, container)
    options += _resources(container)
    options += _mounts(pod_spec, container, pod, objects)
    path = container.get("terminationMessagePath", DEFAULT_TERMINATION_PATH)
    options += ["--mount", f"type=bind,src={termination_log},dst={path}"]
    if container.get("workingDir"):
        options += ["--workdir", container["workingDir"]]
    return PodRun(
        name=container_name_for(pod),
        image=container["image"],
        options=options,
        entrypoint=list(container["command"]) if container.get("command") else None,
        args=[_expand(str(a), env) for a in container.get("args") or []],
        env=env,
        termination_log=termination_log,
        termination_policy=container.get("terminationMessagePolicy", "File"),
        grace_seconds=int(pod_spec.get("terminationGracePeriodSeconds", 30)),
        ports=_ports(container),
        container=container,
    )


def termination_message(written: str, logs: str, exit_code: int, policy: str) -> str:
    """The message the kubelet reports: the file, else (on failure, if asked) the log tail."""
    message = written
    if not message.strip() and policy == "FallbackToLogsOnError" and exit_code != 0:
        tail = "\n".join(logs.splitlines()[-FALLBACK_LINES:])
        message = tail.encode()[-FALLBACK_BYTES:].decode(errors="ignore")
    return message.encode()[:MESSAGE_LIMIT].decode(errors="ignore")


@dataclass
class Finished:
    """A container that ran to completion."""

    exit_code: int
    stdout: str
    stderr: str
    message: str
    duration: float


class PodRunner:
    """podman with the repository's containers.conf; every container it starts it removes."""

    def __init__(self, podman: str, containers_conf: Path) -> None:
        self.podman = podman
        self.env = {**os.environ, "CONTAINERS_CONF": str(containers_conf)}

    def run(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.podman, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:3])}... exited {proc.returncode}\n{proc.stderr[-3000:]}"
            )
        return proc

    def run_to_completion(self, spec: PodRun, timeout: float = 300) -> Finished:
        """Run the container in the foreground (``--rm``); its exit code and message."""
        self.remove(spec.name)
        started = time.monotonic()
        try:
            proc = self.run(*spec.argv(), timeout=timeout, check=False)
        finally:
            self.remove(spec.name)
        logs = proc.stdout + proc.stderr
        written = spec.termination_log.read_text(errors="replace")
        message = termination_message(written, logs, proc.returncode, spec.termination_policy)
        return Finished(
            proc.returncode, proc.stdout, proc.stderr, message, time.monotonic() - started
        )

    def start(self, spec: PodRun) -> str:
        """Start a server container in the background; its name."""
        self.remove(spec.name)
        self.run(*spec.argv(detach=True))
        return spec.name

    def running(self, name: str) -> bool:
        proc = self.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        return proc.stdout.strip() == "true"

    def logs(self, name: str) -> str:
        proc = self.run("logs", name, check=False)
        return proc.stdout + proc.stderr

    def stop(self, name: str, grace_seconds: int) -> tuple[int, float]:
        """SIGTERM, SIGKILL after ``grace_seconds`` (as the kubelet does): exit code, seconds."""
        started = time.monotonic()
        self.run("stop", "--time", str(grace_seconds), name, timeout=grace_seconds + 60)
        took = time.monotonic() - started
        code = self.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        return int(code), took

    def oom_killed(self, name: str) -> bool:
        proc = self.run("inspect", "--format", "{{.State.OOMKilled}}", name, check=False)
        return proc.stdout.strip() == "true"

    def remove(self, name: str) -> None:
        self.run("rm", "--force", "--time", "0", name, check=False)


def probe_url(spec: PodRun, probe: str, ports: Mapping[int, int] | None = None) -> str:
    """``http://127.0.0.1:<port><path>`` of an httpGet probe; ``ports`` maps spec -> host port."""
    http = spec.container[probe]["httpGet"]
    port = http["port"]
    number = spec.ports[str(port)] if str(port) in spec.ports else int(port)
    number = (ports or {}).get(number, number)
    return f"http://127.0.0.1:{number}{http.get('path', '/')}"


def which_podman() -> str | None:
    return shutil.which("podman")
