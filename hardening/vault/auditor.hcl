# The policy an auditor's token needs for `citadel vault audit`: reads only, exact paths.
# {{kv_mount}}, {{transit_mount}} and {{pki_mount}} are the inventory's mount names.

# Listing audit devices: Vault requires sudo here (and nowhere else in this policy).
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

path "auth/approle/role/citadel-gpu" {
  capabilities = ["read"]
}

path "auth/approle/role/citadel-gateway" {
  capabilities = ["read"]
}

path "sys/policies/acl/citadel-gpu" {
  capabilities = ["read"]
}

path "sys/policies/acl/citadel-gateway" {
  capabilities = ["read"]
}

path "{{transit_mount}}/keys/model-data" {
  capabilities = ["read"]
}

path "{{transit_mount}}/keys/model-signing" {
  capabilities = ["read"]
}

path "{{transit_mount}}/keys/audit-chain" {
  capabilities = ["read"]
}

path "{{transit_mount}}/keys/store-volume" {
  capabilities = ["read"]
}

path "{{pki_mount}}/issuer/default" {
  capabilities = ["read"]
}

# Rotation records (no secret values) and the client key hashes (no keys).
path "{{kv_mount}}/data/admin/rotation/internal-api-key/vllm" {
  capabilities = ["read"]
}

path "{{kv_mount}}/data/admin/rotation/approle-secret-id/gpu" {
  capabilities = ["read"]
}

path "{{kv_mount}}/data/admin/rotation/approle-secret-id/gateway" {
  capabilities = ["read"]
}

path "{{kv_mount}}/data/gateway/client-keys" {
  capabilities = ["read"]
}
