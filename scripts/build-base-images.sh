#!/usr/bin/env bash
# `make images-local`, first half: build the two base images the Dockerfiles start FROM, on a
# machine that can reach Debian's archive and PyPI but no container registry, with podman.
#
#   localhost/ragkeeper-base/python:3.11-bookworm
#       env -u TMPDIR debootstrap --variant=minbase bookworm, plus Debian's python3.11, ca-certificates,
#       netbase and tzdata (what python:3.11-slim-bookworm carries), upgraded from
#       bookworm-updates/-security; /usr/local/bin/python3.11 (and python3, python) link to
#       /usr/bin/python3.11, since the Dockerfiles point uv at UV_PYTHON=/usr/local/bin/python3.11.
#       Docs, man pages, locales and apt's lists are removed, as in debian:bookworm-slim.
#       The machine's CA bundle replaces Debian's (after apt, which regenerates it) and
#       SSL_CERT_FILE points at it, so uv (which otherwise trusts only its built-in roots)
#       reaches PyPI through whatever TLS setup this machine has.
#   localhost/ragkeeper-base/uv:<version>
#       just /uv, from PyPI's uv wheel (scripts/fetch_wheel.py), the version the Dockerfiles'
#       UV_IMAGE names (ghcr.io/astral-sh/uv:0.13.9 holds /uv in the same place).
#
# An image that already exists in podman's store is kept (a second run does nothing);
# --force rebuilds both. debootstrap's downloaded .debs are kept in .cache/images/debs/
# (gitignored; IMAGES_CACHE_DIR moves it), so a forced rebuild downloads only what changed.
#   scripts/build-base-images.sh [--force]
#   scripts/build-base-images.sh --print-build-args   (what build-images.sh passes to podman)
#   DEBIAN_MIRROR=http://ftp.de.debian.org/debian scripts/build-base-images.sh
# Needs root (debootstrap and chroot), podman and debootstrap: scripts/install-tools.sh images.
set -eEuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"
export PATH="$PATH:/usr/sbin:/sbin"
CACHE="${IMAGES_CACHE_DIR:-$ROOT/.cache/images}"

log() { printf 'build-base-images: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR

# The versions come from the Dockerfiles' ARG defaults, so the local bases follow them:
# PYTHON_IMAGE=python:3.11.14-slim-bookworm -> 3.11 + bookworm, UV_IMAGE=...uv:0.13.9 -> 0.13.9.
dockerfile_arg() {
    local values
    values="$(sed -n "s/^ARG $1=//p" "$ROOT/services/agent/Dockerfile" "$ROOT/services/rag/Dockerfile" \
        "$ROOT/operator/Dockerfile" | sort -u)"
    [ "$(printf '%s\n' "$values" | wc -l)" = 1 ] || die "the Dockerfiles disagree on ARG $1: $values"
    printf '%s\n' "$values"
}
PYTHON_ARG="$(dockerfile_arg PYTHON_IMAGE)"
UV_ARG="$(dockerfile_arg UV_IMAGE)"
PY="$(printf '%s\n' "$PYTHON_ARG" | sed -n 's/^python:\([0-9]*\.[0-9]*\)\..*$/\1/p')"
SUITE="${PYTHON_ARG##*-}"
UV_VERSION="${UV_ARG##*:}"
if [ -z "$PY" ] || [ -z "$SUITE" ] || [ -z "$UV_VERSION" ]; then
    die "cannot read the Python/Debian/uv versions from $PYTHON_ARG and $UV_ARG"
fi
PYTHON_BASE="localhost/ragkeeper-base/python:$PY-$SUITE"
UV_BASE="localhost/ragkeeper-base/uv:$UV_VERSION"

FORCE=0
case "${1:-}" in
    "") ;;
    --force) FORCE=1 ;;
    --print-build-args)
        printf '%s\n' --build-arg "PYTHON_IMAGE=$PYTHON_BASE" --build-arg "UV_IMAGE=$UV_BASE"
        exit 0
        ;;
    *) printf 'usage: %s [--force | --print-build-args]\n' "$0" >&2; exit 2 ;;
esac

command -v podman >/dev/null 2>&1 || die "podman is missing: run scripts/install-tools.sh images"

needed() { [ "$FORCE" = 1 ] || ! podman image exists "$1"; }

# After a --force rebuild the previous image is untagged: remove it unless something uses it.
drop_previous() {
    local now
    now="$(podman image inspect --format '{{.Id}}' "$2")"
    if [ -n "$1" ] && [ "$1" != "$now" ]; then
        podman rmi "$1" >/dev/null 2>&1 || true
    fi
}
previous() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# The mirror this machine's apt uses for "$SUITE" (deb822 .sources or one-line .list files),
# so the build goes where the network allows; DEBIAN_MIRROR wins.
apt_mirror() {
    local suite="$1" f
    {
        for f in /etc/apt/sources.list.d/*.sources; do
            if [ -f "$f" ]; then cat "$f"; echo; fi
        done | awk -v suite="$suite" '
            /^[[:space:]]*$/ { if (ok && uri != "") print uri; ok = 0; uri = ""; next }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            /^Enabled:[[:space:]]*no/ { uri = "" }'
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            if [ -f "$f" ]; then cat "$f"; fi
        done | awk -v suite="$suite" '
            $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i ~ /:\/\//) { if ($(i + 1) == suite) print $i; break } }'
    } | awk 'NR == 1' # the first one, and always exit 0
}

# Never delete or tar a tree that still has something mounted inside it.
assert_unmounted() {
    if awk -v dir="$1" '$2 == dir || index($2, dir "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        die "something is still mounted under $1; unmount it, then remove it by hand"
    fi
}

build_python_base() {
    [ "$(id -u)" = 0 ] || die "debootstrap needs root (the python base image is built from a chroot)"
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing: run scripts/install-tools.sh images"
    local mirror security updates rootfs
    mirror="${DEBIAN_MIRROR:-$(apt_mirror "$SUITE")}"
    mirror="${mirror:-http://deb.debian.org/debian}"
    security="${DEBIAN_SECURITY_MIRROR:-$(apt_mirror "$SUITE-security")}"
    updates="$(apt_mirror "$SUITE-updates")"
    mkdir -p "$CACHE/debs"
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    chmod 0755 "$rootfs" # it becomes the image's /, and apt's _apt user must reach its cache
    # shellcheck disable=SC2064  # expand now: the trap must remove this very directory
    trap "assert_unmounted '$rootfs' && rm -rf '$rootfs'" EXIT

    log "debootstrap --variant=minbase $SUITE from $mirror (python$PY, ca-certificates, netbase, tzdata)"
    env -u TMPDIR debootstrap --variant=minbase --cache-dir="$CACHE/debs" \
        --include="python$PY,ca-certificates,netbase,tzdata" "$SUITE" "$rootfs" "$mirror" \
        >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $CACHE/debootstrap.log)"; }
    assert_unmounted "$rootfs"

    # Security and point-release updates, from the mirrors this machine uses for them; apt runs
    # with this machine's date checks (a clock or snapshot that apt here is told to tolerate).
    {
        printf 'deb %s %s main\n' "$mirror" "$SUITE"
        [ -z "$updates" ] || printf 'deb %s %s-updates main\n' "$updates" "$SUITE"
        [ -z "$security" ] || printf 'deb %s %s-security main\n' "$security" "$SUITE"
    } >"$rootfs/etc/apt/sources.list"
    local apt_opts=()
    while read -r key value; do
        apt_opts+=(-o "$key=${value//[\";]/}")
    done < <(apt-config dump 2>/dev/null | grep -E '^Acquire::Check-(Valid-Until|Date) ' || true)
    log "apt-get upgrade from $SUITE-updates and $SUITE-security"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    # A clean environment inside the chroot (this shell's TMPDIR, say, does not exist there);
    # proxy settings pass through.
    local in_root=(chroot "$rootfs" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
        DEBIAN_FRONTEND=noninteractive)
    local var
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        [ -z "${!var:-}" ] || in_root+=("$var=${!var}")
    done
    if ! {
        "${in_root[@]}" apt-get "${apt_opts[@]}" -q update \
            && "${in_root[@]}" apt-get "${apt_opts[@]}" -q -y --no-install-recommends dist-upgrade \
            && "${in_root[@]}" apt-get clean
    } >"$CACHE/apt.log" 2>&1; then
        tail -20 "$CACHE/apt.log" >&2
        die "apt-get in the chroot failed (log: $CACHE/apt.log)"
    fi
    assert_unmounted "$rootfs"

    # Slim like debian:bookworm-slim (and keep it so for any later apt-get in a derived image).
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/ragkeeper-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$rootfs/var/log" -type f -delete
    rm -rf "${rootfs:?}"/usr/share/{man,groff,info,locale,lintian,linda}/* \
        "${rootfs:?}"/var/lib/apt/lists/* "${rootfs:?}"/var/cache/debconf/*-old \
        "${rootfs:?}"/var/lib/dpkg/*-old "${rootfs:?}"/dev/* "${rootfs:?}"/run/* "${rootfs:?}"/tmp/* \
        "${rootfs:?}"/etc/resolv.conf "${rootfs:?}"/etc/hostname
    for name in "python$PY" python3 python; do
        ln -sfn "/usr/bin/python$PY" "$rootfs/usr/local/bin/$name"
    done
    # After apt, which rebuilt Debian's bundle: this machine's, proxies' CAs included.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"

    log "podman import -> $PYTHON_BASE"
    tar --numeric-owner -C "$rootfs" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV LANG=C.UTF-8' \
        --change "CMD [\"python$PY\"]" \
        --message "debootstrap $SUITE minbase + python$PY ($mirror)" - "$PYTHON_BASE" >/dev/null
    assert_unmounted "$rootfs"
    rm -rf "$rootfs"
    trap - EXIT
}

build_uv_base() {
    local work
    work="$(mktemp -d)"
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    python3 "$ROOT/scripts/fetch_wheel.py" "uv==$UV_VERSION" "$work/wheel"
    mkdir "$work/root"
    install -m 0755 "$work/wheel/uv-$UV_VERSION.data/scripts/uv" "$work/root/uv"
    log "podman import -> $UV_BASE"
    tar --numeric-owner --owner=0 --group=0 -C "$work/root" -c . \
        | podman import --quiet --message "/uv from PyPI's uv $UV_VERSION wheel" - "$UV_BASE" >/dev/null
    rm -rf "$work"
    trap - EXIT
}

if needed "$PYTHON_BASE"; then
    old="$(previous "$PYTHON_BASE")"
    build_python_base
    drop_previous "$old" "$PYTHON_BASE"
else
    log "$PYTHON_BASE exists (--force rebuilds it)"
fi
if needed "$UV_BASE"; then
    old="$(previous "$UV_BASE")"
    build_uv_base
    drop_previous "$old" "$UV_BASE"
else
    log "$UV_BASE exists (--force rebuilds it)"
fi
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F 'localhost/ragkeeper-base/' >&2 || true
