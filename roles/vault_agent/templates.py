"""What the vault-agent role writes: the agent's HCL and the templates of each group's secrets.

Pure functions of the inventory, so reruns write the same bytes (no-ops) and the unit
tests read exactly what hosts get. No secret is in any of it: templates name Vault paths,
and the agent fetches the values with its own token.

Per group, the secrets and the service they are rendered for (file owner, mode 0400):

- gpu, for ``citadel-keyguard``: ``tls.pem`` (private key, certificate and issuing CA from
  one PKI request, so the two always match), ``internal-api-key.json`` (only the SHA-256
  of the current and previous internal keys: the GPU host recognises the key, never holds it)
  and ``vllm.env`` (``VLLM_API_KEY=``: the key the keyguard presents to the local model
  server, read by systemd into vLLM's environment, never put on a command line);
- gateway, for ``citadel-gateway``: ``tls.pem``, ``internal-api-key.json`` (the keys
  themselves: the gateway presents them), ``client-keys.json`` (clients' key hashes) and
  ``audit-hmac.json`` (the key that chains the gateway's audit log) and ``content-key.json``
  (the key sealing recorded content, for clients that have it recorded).

Example::

    >>> print(agent_hcl(SPECS["gpu"], "https://10.77.0.1:8200", "kv", "pki", "gpu1", 604800))  # doctest: +ELLIPSIS
    # Managed by Citadel (role vault-agent)...
"""

from __future__ import annotations

from dataclasses import dataclass

from citadel_runtime.layout import AGENT_RUN_ROOT, AGENT_SECRETS
from deploy.vault.identity import CERT_MOUNT, identity_role

BINARY = "/usr/local/lib/citadel/bao"
CONFIG_ROOT = "/etc/citadel/agent"
STATE_ROOT = "/var/lib/citadel-agent"  # systemd's StateDirectory
UNIT = "citadel-agent@.service"
RENDER_INTERVAL = "30s"  # how often static secrets (KV) are re-read: rotations reach hosts within it
PKI_CA = "/etc/citadel/pki-ca.pem"  # the CA of hosts' certificates, public, for clients


@dataclass(frozen=True)
class Spec:
    """One group's agent: the service its secrets are for, and how that service reloads."""

    group: str
    pki_role: str
    service: str
    user: str
    secrets_dir: str
    files: tuple[str, ...]
    reload: str

    @property
    def instance(self) -> str:
        return f"citadel-agent@{self.group}"

    @property
    def config_dir(self) -> str:
        return f"{CONFIG_ROOT}/{self.group}"

    @property
    def identity_file(self) -> str:
        """The host's identity (key and certificate) the agent logs in with: root only, renewed by it."""
        return f"{STATE_ROOT}/{self.group}/identity.pem"

    @property
    def sink(self) -> str:
        return f"{AGENT_RUN_ROOT}/{self.group}/token"


# Each group's service user and secrets directory come from AGENT_SECRETS, which the audit reads too.
SPECS = {
    "gpu": Spec(
        group="gpu", pki_role="host", service="citadel-keyguard", **AGENT_SECRETS["gpu"],
        files=("tls.pem", "crl.pem", "internal-api-key.json", "vllm.env"),
        # Starts it too: the first render happens before the keyguard could start.
        reload="systemctl reload-or-restart citadel-keyguard.service",
    ),
    "gateway": Spec(
        group="gateway", pki_role="gateway", service="citadel-gateway", **AGENT_SECRETS["gateway"],
        files=("tls.pem", "crl.pem", "internal-api-key.json", "client-keys.json", "audit-hmac.json",
               "content-key.json"),
        reload="systemctl try-reload-or-restart citadel-gateway.service",
    ),
}


def tls_template(spec: Spec, kv_mount: str, pki_mount: str, host_name: str, address: str, ip: bool) -> str:
    """Key, certificate and CA from one issue; re-issued when the group's rotation counter moves.

    The counter's generation goes along as ``citadel_rotation`` (PKI ignores it): a new
    generation is a new request, so the agent issues a new certificate at once.
    """
    sans = f'"ip_sans={address}"' if ip else f'"alt_names={address}"'
    return (
        f'{{{{- with secret "{kv_mount}/data/{spec.group}/tls-rotation" -}}}}\n'
        f'{{{{- with secret "{pki_mount}/issue/{spec.pki_role}" "common_name={host_name}" {sans} '
        f'(printf "citadel_rotation=%v" .Data.data.generation) -}}}}\n'
        "{{ .Data.private_key }}\n{{ .Data.certificate }}\n{{ .Data.issuing_ca }}\n"
        "{{- end }}{{- end }}\n"
    )


def internal_key_template(spec: Spec, kv_mount: str) -> str:
    """The internal key document: hashes for the GPU side, the keys for the gateway."""
    path = f"{kv_mount}/data/{spec.group}/internal-api-key"
    if spec.group == "gateway":
        return f'{{{{ with secret "{path}" }}}}{{{{ .Data.data | toJSON }}}}{{{{ end }}}}\n'
    slot = (
        '{{- define "slot" }}{"version": {{ .version }}, "key_id": "{{ .key_id }}", '
        '"sha256": "{{ .value | sha256Hex }}"}{{ end }}'
    )
    return (
        slot + f'\n{{{{- with secret "{path}" }}}}{{{{ $d := .Data.data -}}}}\n'
        '{"current": {{ template "slot" $d.current }}, '
        '"previous": {{ if $d.previous }}{{ template "slot" $d.previous }}{{ else }}null{{ end }}, '
        '"previous_expires": {{ if $d.previous_expires }}"{{ $d.previous_expires }}"{{ else }}null{{ end }}}\n'
        "{{- end }}\n"
    )


def vllm_key_template(spec: Spec, kv_mount: str) -> str:
    """An environment file (systemd's EnvironmentFile= syntax) with the model server's key."""
    return f'{{{{ with secret "{kv_mount}/data/{spec.group}/vllm-api-key" }}}}VLLM_API_KEY={{{{ .Data.data.value }}}}\n{{{{ end }}}}'


def reload_command(spec: Spec, file_name: str) -> str:
    """What runs after a file changes: the spec's reload; the vLLM key restarts vLLM too."""
    if file_name == "vllm.env":
        return f"{spec.reload}; systemctl try-restart 'citadel-vllm@*.service'"
    return spec.reload


def client_keys_template(spec: Spec, kv_mount: str) -> str:
    return f'{{{{ with secret "{kv_mount}/data/gateway/client-keys" }}}}{{{{ .Data.data | toJSON }}}}{{{{ end }}}}\n'


def gateway_key_template(spec: Spec, kv_mount: str, path: str) -> str:
    """One of the gateway's keys kept in KV as {"value": ...} (deploy.secrets.audit_key)."""
    return f'{{{{ with secret "{kv_mount}/data/{path}" }}}}{{{{ .Data.data | toJSON }}}}{{{{ end }}}}\n'


def identity_template(spec: Spec, pki_mount: str, host_name: str, lifetime: int) -> str:
    """The agent's own identity certificate, re-issued with the token it got before it ends."""
    return (
        f'{{{{- with secret "{pki_mount}/issue/agent-{spec.group}" "common_name={host_name}" "ttl={lifetime}s" -}}}}\n'
        "{{ .Data.private_key }}\n{{ .Data.certificate }}\n"
        "{{- end }}\n"
    )


def crl_template(pki_mount: str) -> str:
    """The PKI's revocation list: peers of a revoked host stop trusting it (`secrets revoke-host`)."""
    return f'{{{{ with secret "{pki_mount}/cert/crl" }}}}{{{{ .Data.certificate }}}}{{{{ end }}}}\n'


def templates(spec: Spec, kv_mount: str, pki_mount: str, host_name: str, address: str, ip: bool) -> dict[str, str]:
    """File name (in the secrets directory) -> template text, for one group on one host."""
    found = {
        "tls.pem": tls_template(spec, kv_mount, pki_mount, host_name, address, ip),
        "crl.pem": crl_template(pki_mount),
        "internal-api-key.json": internal_key_template(spec, kv_mount),
        "client-keys.json": client_keys_template(spec, kv_mount),
        "vllm.env": vllm_key_template(spec, kv_mount),
        "audit-hmac.json": gateway_key_template(spec, kv_mount, "gateway/audit-hmac-key"),
        "content-key.json": gateway_key_template(spec, kv_mount, "gateway/content-key"),
    }
    return {name: found[name] for name in spec.files}


def agent_hcl(spec: Spec, vault_address: str, kv_mount: str, pki_mount: str, host_name: str,
              identity_seconds: int) -> str:
    """The agent's configuration: cert auto-auth with the host's identity, a sink, templates."""
    blocks = [
        f"# Managed by Citadel (role vault-agent): the Vault agent of host group {spec.group}.",
        f'pid_file = "{AGENT_RUN_ROOT}/{spec.group}/agent.pid"',
        "",
        "vault {",
        f'  address = "{vault_address}"',
        f'  ca_cert = "{spec.config_dir}/vault-ca.pem"',
        "  retry {",
        "    num_retries = -1  # Vault in maintenance: keep trying, never give up on a template",
        "  }",
        "}",
        "",
        "auto_auth {",
        '  method "cert" {',
        f'    mount_path = "auth/{CERT_MOUNT}"',
        # Back off to at most 30 s between logins: a host that boots while Vault is away
        # serves within a minute of its return.
        '    max_backoff = "30s"',
        "    config = {",
        f'      name        = "{identity_role(spec.group, host_name)}"',
        f'      ca_cert     = "{spec.config_dir}/vault-ca.pem"',
        f'      client_cert = "{spec.identity_file}"',
        f'      client_key  = "{spec.identity_file}"',
        # Read again at each login: the agent renews the file itself (the identity template).
        "      reload      = true",
        "    }",
        "  }",
        '  sink "file" {',
        "    config = {",
        f'      path = "{spec.sink}"',
        "      mode = 0600",
        "    }",
        "  }",
        "}",
        "",
        "template_config {",
        f'  static_secret_render_interval = "{RENDER_INTERVAL}"',
        "  exit_on_retry_failure         = false",
        "}",
        "",
        "template {",
        f'  source      = "{spec.config_dir}/identity.ctmpl"',
        f'  destination = "{spec.identity_file}"',
        '  perms       = "0600"',
        "}",
    ]
    for name in spec.files:
        blocks += [
            "",
            "template {",
            f'  source      = "{spec.config_dir}/{name}.ctmpl"',
            f'  destination = "{spec.secrets_dir}/{name}"',
            '  perms       = "0400"',
            f'  user        = "{spec.user}"',
            f'  group       = "{spec.user}"',
            # Never fail the agent because the service is missing or refuses a reload.
            f'  command     = ["/bin/sh", "-c", "{reload_command(spec, name)} || true"]',
            "}",
        ]
    return "\n".join(blocks) + "\n"
