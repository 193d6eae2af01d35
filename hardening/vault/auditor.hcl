# The policy an auditor's token needs for `citadel vault audit`: reads only, exact paths.
# {{kv_mount}}, {{transit_mount}} and {{pki_mount}} are the inventory's mount names.

# Listing audit devices: Vault requires sudo here (and nowhere else in this policy).
path "sys/audit" {
  capabilities = ["read", "sudo"]
}

# The hosts' identity roles (one per host and group: the host list is the inventory's).
path "auth/cert/certs/*" {
  capabilities = ["read"]
}

path "{{pki_mount}}/roles/agent-gpu" {
  capabilities = ["read"]
}

path "{{pki_mount}}/roles/agent-gateway" {
  capabilities = ["read"]
}

# Which hosts `citadel secrets revoke-host` cut off (names and times only).
path "{{kv_mount}}/data/admin/hosts/revoked" {
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

path "{{kv_mount}}/data/gateway/client-keys" {
  capabilities = ["read"]
}
