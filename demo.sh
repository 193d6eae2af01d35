#!/usr/bin/env bash
# Set up (scripts/install.sh), bring up a local lab of hosts and an embedded OpenBao server,
# bootstrap what Citadel needs in it, and deploy Citadel to the lab. As root.
# Leaves both running; take them down with: .venv/bin/citadel lab down; .venv/bin/citadel vault stop
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
.venv/bin/citadel lab up --hosts "${CITADEL_DEMO_HOSTS:-2}"
# The embedded server is for trying Citadel only (its keys sit beside its data).
VAULT_DIR="${CITADEL_DEMO_VAULT_DIR:-/var/lib/citadel-vault}"
# --lab: also listen where the lab hosts' only route leads, so their Vault agents reach it.
.venv/bin/citadel vault serve --dir "$VAULT_DIR" --lab
export BAO_CACERT="$VAULT_DIR/ca.pem" VAULT_TOKEN_FILE="$VAULT_DIR/root.token"
.venv/bin/citadel vault bootstrap -i inventory/lab.yaml
.venv/bin/citadel deploy -i inventory/lab.yaml
.venv/bin/citadel lab status
