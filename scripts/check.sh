#!/usr/bin/env bash
# Static checks, each must report nothing: ruff (lint), mypy (types, with the pydantic
# plugin) and import-linter (the layer contracts). Their configuration and pinned versions
# are in pyproject.toml and setup.cfg (extra "dev"). Runs every check, then fails if any did.
set -uo pipefail
cd "$(dirname "$0")/.."
for tool in ruff mypy lint-imports; do
    if [ ! -x ".venv/bin/$tool" ]; then
        ./scripts/setup.sh || exit 1
        break
    fi
done
failed=""
check() {
    local label=$1
    shift
    echo "=== $label: $*"
    if "$@"; then
        echo "=== $label: passed"
    else
        echo "=== $label: FAILED"
        failed="$failed $label"
    fi
}
check ruff .venv/bin/ruff check --no-fix --output-format concise setup.py execdriver drivers tests bench scripts docs/examples
check mypy .venv/bin/mypy
check import-linter .venv/bin/lint-imports
if [ -n "$failed" ]; then
    echo "check.sh: failed:$failed" >&2
    exit 1
fi
echo "check.sh: all checks passed"
