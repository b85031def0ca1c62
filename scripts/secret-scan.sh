#!/usr/bin/env bash
# Secret scanning for `make lint` (and so CI's lint job): detect-secrets-hook over every file git
# tracks, against the reviewed baseline .secrets.baseline. A finding that is not in the baseline
# fails with its file, line and kind; known findings (reviewed false positives: test fixtures'
# fake keys, example DSNs, Secret key names) pass wherever they move.
#
# The hook runs against a temporary copy of the baseline: when only line numbers drift (or a
# baselined finding is gone) it rewrites the baseline and exits 3, which here is a note, not a
# failure, and the committed file is left alone. Refresh it with
#   uv run detect-secrets scan --baseline .secrets.baseline
# and review new results with `uv run detect-secrets audit .secrets.baseline` (SECURITY.md).
#
# Usage: scripts/secret-scan.sh [WORK_TREE]   (default: this repository; the tests point it at a
#        temporary git repository holding a planted key). DETECT_SECRETS_HOOK overrides the hook.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TREE="$(cd "${1:-$ROOT}" && pwd)"
BASELINE="$TREE/.secrets.baseline"
if [ -n "${DETECT_SECRETS_HOOK:-}" ]; then
    HOOK=("$DETECT_SECRETS_HOOK")
else
    HOOK=(uv run --frozen --project "$ROOT" detect-secrets-hook)
fi
if [ ! -f "$BASELINE" ]; then
    echo "secret-scan: $BASELINE is missing (create it: detect-secrets scan > .secrets.baseline)" >&2
    exit 1
fi
cd "$TREE"
files=()
while IFS= read -r -d '' f; do
    # the baseline itself holds hashes; a tracked file deleted in the work tree has nothing to scan
    if [ "$f" != .secrets.baseline ] && [ -f "$f" ]; then
        files+=("$f")
    fi
done < <(git ls-files -z)
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$BASELINE" "$work/baseline.json"
rc=0
"${HOOK[@]}" --baseline "$work/baseline.json" "${files[@]}" >"$work/out" 2>&1 || rc=$?
case "$rc" in
    0) ;;
    3) echo "secret-scan: no new secrets; .secrets.baseline's line numbers are stale" \
            "(refresh: detect-secrets scan --baseline .secrets.baseline)" ;;
    *)
        cat "$work/out"
        echo "secret-scan: findings not in .secrets.baseline (exit $rc). Remove the secret, or if it" \
             "is a fake, mark the line '# pragma: allowlist secret' or add it to the baseline and" \
             "audit it (SECURITY.md, Secret scanning)." >&2
        exit 1
        ;;
esac
echo "secret-scan: ${#files[@]} tracked files, no secrets outside the reviewed baseline"
