"""Download one pinned wheel from PyPI and unpack it, with only the standard library.

Used by ``scripts/ensure-uv.sh`` on a machine whose python3 has no pip. The wheel is picked
for this platform from PyPI's simple index (its JSON form) and checked against the sha256
the index publishes.

    python3 scripts/fetch_wheel.py uv==0.13.8 .tools/uv-0.13.8
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
import urllib.request
import zipfile

INDEX = os.environ.get("PYPI_SIMPLE_URL", "https://pypi.org/simple")
ACCEPT = "application/vnd.pypi.simple.v1+json"


def _platform_tags() -> list[str]:
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return [f"manylinux_2_17_{arch}", f"manylinux2014_{arch}", f"musllinux_1_1_{arch}"]


def pick(files: list[dict[str, object]], name: str, version: str) -> dict[str, object]:
    prefix = f"{name.replace('-', '_')}-{version}-"
    wheels = [
        f
        for f in files
        if str(f["filename"]).startswith(prefix) and str(f["filename"]).endswith(".whl")
    ]
    for tag in _platform_tags():
        for f in wheels:
            if tag in str(f["filename"]):
                return f
    raise SystemExit(f"fetch_wheel: no wheel for {platform.machine()} among {len(wheels)}")


def main(spec: str, target: str) -> None:
    name, _, version = spec.partition("==")
    if not version:
        raise SystemExit("fetch_wheel: pin a version, e.g. uv==0.13.8")
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(request, timeout=60) as r:  # noqa: S310
        meta = json.load(r)
    wheel = pick(meta["files"], name, version)
    with urllib.request.urlopen(str(wheel["url"]), timeout=300) as r:  # noqa: S310
        data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    expected = wheel["hashes"]["sha256"]  # type: ignore[index]
    if digest != expected:
        raise SystemExit(f"fetch_wheel: sha256 mismatch for {wheel['filename']}")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(target)
    print(f"fetch_wheel: unpacked {wheel['filename']} into {target}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
