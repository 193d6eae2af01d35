# Citadel policy for gateway hosts (AppRole citadel-gateway). Least privilege: exact paths
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
