# Citadel policy for GPU hosts (the cert auth roles gpu-HOST, one per host). Least privilege: exact paths only,
# except the group's own KV prefix. {{kv_mount}}, {{transit_mount}} and {{pki_mount}} are
# replaced with the inventory's mount names when `citadel vault bootstrap` writes it.

# The GPU hosts' own secrets (the internal API key vLLM expects from the gateway).
path "{{kv_mount}}/data/gpu/*" {
  capabilities = ["read"]
}

# Unwrap the data keys of sealed models. Decrypt only: encrypting new model data and
# rewrapping after a rotation are operator jobs, not something a serving host needs.
path "{{transit_mount}}/decrypt/model-data" {
  capabilities = ["update"]
}

# Open the model store's LUKS2 volume at boot (roles/store_volume): decrypt only, the
# wrapped volume key is made by the operator's deploy.
path "{{transit_mount}}/decrypt/store-volume" {
  capabilities = ["update"]
}

# Check a model manifest's signature before loading it (verify cannot forge one).
path "{{transit_mount}}/verify/model-signing" {
  capabilities = ["update"]
}

# The host's own short-lived TLS certificate, from the `host` role only.
path "{{pki_mount}}/issue/host" {
  capabilities = ["update"]
}

# Renew the host's own identity certificate, the one its agent logs in with (client-only,
# OU agent-gpu; deploy/vault/identity.py): before it ends, with the token it got.
path "{{pki_mount}}/issue/agent-gpu" {
  capabilities = ["update"]
}

# The PKI's revocation list, rendered for the services: a host cut off by
# `citadel secrets revoke-host` is no longer trusted by its peers within a render interval.
path "{{pki_mount}}/cert/crl" {
  capabilities = ["read"]
}
