# Citadel policy for gateway hosts (the cert auth roles gateway-HOST, one per host). Least privilege: exact paths
# only, except the group's own KV prefix. {{kv_mount}}, {{transit_mount}} and {{pki_mount}}
# are replaced with the inventory's mount names when `citadel vault bootstrap` writes it.

# The gateway's own secrets (hashes of client API keys, the key it presents to vLLM).
path "{{kv_mount}}/data/gateway/*" {
  capabilities = ["read"]
}

# Chain the audit log: each record's HMAC covers the previous one, with a key the gateway
# can use but never read. No verify: checking the chain is the auditor's job.
path "{{transit_mount}}/hmac/audit-chain" {
  capabilities = ["update"]
}

# The gateway's own short-lived TLS certificate, from the `gateway` role only.
path "{{pki_mount}}/issue/gateway" {
  capabilities = ["update"]
}

# Renew the host's own identity certificate, the one its agent logs in with (client-only,
# OU agent-gateway; deploy/vault/identity.py): before it ends, with the token it got.
path "{{pki_mount}}/issue/agent-gateway" {
  capabilities = ["update"]
}

# The PKI's revocation list, rendered for the services: a host cut off by
# `citadel secrets revoke-host` is no longer trusted by its peers within a render interval.
path "{{pki_mount}}/cert/crl" {
  capabilities = ["read"]
}
