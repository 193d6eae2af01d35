#!/usr/bin/env bash
# Set up (scripts/install.sh), bring up a local lab of hosts and an embedded OpenBao server,
# bootstrap what Citadel needs in it, seal the lab's tiny model, and deploy Citadel to the
# lab: the first host hardened, serving the model with vLLM (CPU build) in its sandbox, behind
# its gateway. Ends with one chat through the gateway and the curl to send another. As root.
# Leaves both running; take them down with: .venv/bin/citadel lab down; .venv/bin/citadel vault stop
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
MODEL="${CITADEL_DEMO_MODEL:-tiny-clinical}"
DEMO_DIR="${CITADEL_DEMO_DIR:-/var/lib/citadel-demo}"
.venv/bin/citadel lab up --hosts "${CITADEL_DEMO_HOSTS:-2}" --model "$MODEL"
# The embedded server is for trying Citadel only (its keys sit beside its data).
VAULT_DIR="${CITADEL_DEMO_VAULT_DIR:-/var/lib/citadel-vault}"
# --lab: also listen where the lab hosts' only route leads, so their Vault agents reach it.
.venv/bin/citadel vault serve --dir "$VAULT_DIR" --lab
export BAO_CACERT="$VAULT_DIR/ca.pem" VAULT_TOKEN_FILE="$VAULT_DIR/root.token"
.venv/bin/citadel vault bootstrap -i inventory/lab.yaml
# The model: generated offline (no download), sealed into the demo's store (once).
export CITADEL_MODEL_STORE="$DEMO_DIR/models"
if [ ! -e "$CITADEL_MODEL_STORE/$MODEL/r1/manifest.json" ]; then
    .venv/bin/citadel lab tiny-model "$DEMO_DIR/source/$MODEL"
    .venv/bin/citadel model seal "$DEMO_DIR/source/$MODEL" --name "$MODEL" --revision r1 -i inventory/lab.yaml
fi
# The demo's client (its policy is in the lab inventory): its key, 0600, in $DEMO_DIR before the
# deploy, so the gateway knows it from its start.
.venv/bin/citadel lab demo-client -i inventory/lab.yaml --dir "$DEMO_DIR" --no-chat
# Builds the vLLM wheelhouse on first use (cached under ~/.cache/citadel/wheelhouse/).
.venv/bin/citadel deploy -i inventory/lab.yaml
.venv/bin/citadel lab status
# Proof: one chat through the gateway; then the curl for another, the record, the audit, the teardown.
.venv/bin/citadel lab demo-client -i inventory/lab.yaml --dir "$DEMO_DIR" --vault-dir "$VAULT_DIR"
