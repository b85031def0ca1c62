#!/usr/bin/env bash
# `make images`: build the agent, rag and operator images, tagged with the chart's appVersion
# (so `helm install` of this checkout pulls exactly these images), with whichever engine is here:
#   docker buildx   when a Docker engine answers (`docker info`), as CI does;
#   podman          otherwise (`podman build --network host --format docker`, with
#                   CONTAINERS_CONF=scripts/containers.conf; scripts/install-tools.sh images).
# ENGINE=docker|podman picks one. Examples:
#   IMAGE_PREFIX=ghcr.io/me PLATFORMS=linux/amd64,linux/arm64 PUSH=1 scripts/build-images.sh
#   LOCAL_BASE=1 scripts/build-images.sh     (`make images-local`: podman, FROM base images
#                                             built here by scripts/build-base-images.sh)
# Without PUSH the images stay in the local engine (host platform only). With podman, PUSH
# pushes the host platform's image; multi-platform builds (PLATFORMS) need docker buildx.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${IMAGE_PREFIX:-ghcr.io/ragkeeper}"
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/ragkeeper/Chart.yaml")"
REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/scripts/containers.conf}"

have() { command -v "$1" >/dev/null 2>&1; }
fail() {
    printf 'make images: %s\n' "$1" >&2
    shift
    [ $# -eq 0 ] || printf '  %s\n' "$@" >&2
    exit 1
}

docker_ready() { have docker && docker info >/dev/null 2>&1; }

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
    if [ -n "${LOCAL_BASE:-}" ]; then
        engine=podman # the local base images live in podman's store
    elif docker_ready; then
        engine=docker
    elif have podman; then
        engine=podman
    elif have docker; then
        fail "no Docker engine is reachable (docker info failed) and podman is not installed;" \
            "nothing was built. Install podman with: scripts/install-tools.sh images"
    else
        fail "neither docker nor podman is installed; install podman with: scripts/install-tools.sh images" \
            "(CI builds the images with .github/workflows/images.yml)"
    fi
fi

common=(--build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION")
case "$engine" in
    docker)
        [ -z "${LOCAL_BASE:-}" ] || fail "LOCAL_BASE needs podman: the local base images are built into podman's store"
        docker_ready || fail "no Docker engine is reachable (docker info failed); nothing was built."
        docker buildx version >/dev/null 2>&1 || fail "docker buildx is missing"
        output=(--load)
        if [ -n "${PUSH:-}" ]; then
            output=(--push --platform "${PLATFORMS:-linux/amd64,linux/arm64}")
        fi
        ;;
    podman)
        have podman || fail "podman is not installed: scripts/install-tools.sh images"
        [ -z "${PLATFORMS:-}" ] || fail "PLATFORMS (multi-platform images) needs docker buildx; podman builds the host platform"
        # HEALTHCHECK exists only in the docker image format (OCI drops it with a warning).
        output=(--network host --format docker)
        if [ -n "${LOCAL_BASE:-}" ]; then
            bash "$ROOT/scripts/build-base-images.sh"
            mapfile -t base_args < <(bash "$ROOT/scripts/build-base-images.sh" --print-build-args)
            common+=("${base_args[@]}")
        fi
        ;;
    *) fail "ENGINE must be docker or podman, not '$engine'" ;;
esac

declare -A dockerfiles=(
    [ragkeeper-agent]=services/agent/Dockerfile
    [ragkeeper-rag]=services/rag/Dockerfile
    [ragkeeper-operator]=operator/Dockerfile
)
for image in ragkeeper-agent ragkeeper-rag ragkeeper-operator; do
    tag="$PREFIX/$image:$VERSION"
    echo "== $tag ($engine)"
    start=$SECONDS
    if [ "$engine" = docker ]; then
        docker buildx build "$ROOT" -f "$ROOT/${dockerfiles[$image]}" "${common[@]}" -t "$tag" "${output[@]}"
    else
        podman build "$ROOT" -f "$ROOT/${dockerfiles[$image]}" "${common[@]}" -t "$tag" "${output[@]}"
        [ -z "${PUSH:-}" ] || podman push "$tag"
    fi
    echo "== $tag built in $((SECONDS - start))s"
done
if [ "$engine" = podman ]; then
    podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -F "$PREFIX/ragkeeper-" || true
fi
