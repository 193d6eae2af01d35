#!/usr/bin/env bash
# Install everything Citadel and its tests need on a fresh Debian 12 machine, as root.
# Idempotent: a second run only checks. Heavy downloads are cached under ~/.cache/citadel/.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    python3 python3-venv python3-dev          # the controller's Python
    openssh-client                            # deploys and tests reach hosts over SSH
    iproute2 nftables                         # lab networks (netns, veth)
    debootstrap systemd-container zstd        # lab hosts: cached rootfs, systemd-nspawn
    dpkg-dev                                  # the lab's local apt repository (dpkg-scanpackages)
    qemu-system-x86 qemu-utils e2fsprogs      # the lab's VM host for kernel-level controls
    dosfstools mtools                         # the VM's per-boot seed disk
    ca-certificates
    rsync                                     # citadel model push (resumable, changed files only)
    age                                       # bench/unseal_bench.py compares unsealing with age -d
)

if [ "$(id -u)" -ne 0 ]; then
    echo "scripts/install.sh needs root (it installs Debian packages): sudo $0" >&2
    exit 2
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bench/gateway_bench.py runs nginx (as a plain TLS proxy, for comparison) itself, on a
# loopback port: the package's own service is never started or enabled.
if ! dpkg-query -W -f='${Status}' nginx-light 2>/dev/null | grep -q "install ok installed"; then
    echo "installing nginx-light (for bench/gateway_bench.py; its service stays off)"
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # "do not start services" while it installs
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d && own_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null || status=$?
    [ "$own_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$status" -eq 0 ] || exit "$status"
    systemctl disable nginx.service >/dev/null 2>&1 || true
fi

# Debian's own Python, not a user's pyenv: the venv must not depend on a home directory.
PYTHON=/usr/bin/python3
export PIP_CACHE_DIR="${HOME}/.cache/citadel/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv"
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import deploy.cli, pytest" 2>/dev/null || [ pyproject.toml -nt .venv/.citadel-installed ]; then
    echo "installing Citadel and its test dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch .venv/.citadel-installed
fi
