#!/usr/bin/env bash
# Set up (scripts/install.sh) and run every test tier: unit, adversarial, lab, vm, vllm. As root.
# Extra arguments go to pytest, e.g. ./test.sh -m unit
set -uo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh || exit $?
# Two workers: the VM tier and the hardening lab each run beside the rest (tests/conftest.py).
.venv/bin/python -m pytest -p no:cacheprovider -n "${CITADEL_TEST_WORKERS:-2}" --dist loadgroup --durations=10 "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "FAILED: pytest collected no tests (exit 5); that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
