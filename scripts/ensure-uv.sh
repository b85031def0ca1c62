#!/usr/bin/env bash
# Make sure a uv binary exists at .tools/bin/uv (or use the one on PATH) and print its path.
#
# The Makefile calls this before any target that needs uv, so `make run` and `make test`
# work on a machine with only python3: a pinned uv is installed from PyPI into the
# repository's own .tools/ (nothing is written to $HOME or to the system Python).
#   UV_VERSION=0.13.8 scripts/ensure-uv.sh   pin another release
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UV_VERSION="${UV_VERSION:-0.13.8}"
TOOLS_DIR="${TOOLS_DIR:-$ROOT/.tools}"
TARGET="$TOOLS_DIR/uv-$UV_VERSION"
BIN="$TOOLS_DIR/bin"

log() { printf 'ensure-uv: %s\n' "$*" >&2; }

# A uv already on PATH (other than ours) is used as it is.
if [ -z "${RAGKEEPER_FORCE_LOCAL_UV:-}" ]; then
    found="$(PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$BIN" | paste -sd:)" \
        command -v uv 2>/dev/null || true)"
    if [ -n "$found" ]; then
        printf '%s\n' "$found"
        exit 0
    fi
fi

if [ -x "$BIN/uv" ] && "$BIN/uv" --version 2>/dev/null | grep -qF " $UV_VERSION"; then
    printf '%s\n' "$BIN/uv"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || { log "python3 is required (it installs uv)"; exit 1; }
log "installing uv $UV_VERSION from PyPI into $TARGET"
mkdir -p "$BIN"
rm -rf "$TARGET.tmp"
if python3 -m pip --version >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-warn-script-location --root-user-action=ignore \
        --target "$TARGET.tmp" "uv==$UV_VERSION" >&2
else
    # No pip (a bare Debian python3): fetch the wheel with the standard library.
    python3 "$ROOT/scripts/fetch_wheel.py" "uv==$UV_VERSION" "$TARGET.tmp" >&2
fi
rm -rf "$TARGET"
mv "$TARGET.tmp" "$TARGET"
uv_bin="$(find "$TARGET" -type f -name uv \( -path '*/bin/uv' -o -path '*/scripts/uv' \) | head -1)"
[ -n "$uv_bin" ] || { log "the uv $UV_VERSION wheel held no uv binary"; exit 1; }
chmod +x "$uv_bin"
ln -sfn "../${uv_bin#"$TOOLS_DIR"/}" "$BIN/uv"
"$BIN/uv" --version >&2
printf '%s\n' "$BIN/uv"
