"""Host and gateway TLS certificates: rotated by the hosts' agents, on a counter in KV.

Each host's Vault agent issues its own certificate from the group's PKI role (the private
key never leaves the host) with a template that first reads the group's rotation counter
at ``<group>/tls-rotation`` and passes its generation along with the issue request (as the
extra parameter ``citadel_rotation``, which PKI ignores). A new generation is therefore a
new request: every agent of the group issues a new certificate within its render interval,
re-renders the key and certificate together and reloads its service. Nobody logs in to a
host, and the old certificate stays valid until it expires or ``--finish`` revokes it.

Rotation steps (each skipped on a re-run when already done): record the intent (the target
generation and each host's current serial), raise the counter, wait until PKI has issued a
new certificate to every host of the group, record the overlap. ``--finish`` revokes the
previous serials. Certificates carry their group as OU, so the gpu and gateway agents of
one host are told apart.

Example::

    >>> rotate(store, site, "gpu", wait=180).phase                 # doctest: +SKIP
    'overlap'
    >>> finish(store, site, "gpu").phase                           # doctest: +SKIP
    'done'
"""

from __future__ import annotations

import time

from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, parse_time, stamp, vault_errors
from deploy.vault import VaultError
from deploy.vault.policies import GROUPS

KIND = "tls-cert"
DEFAULT_WAIT = 180.0  # seconds; agents re-read the counter every render interval (30 s by default)
BACKDATE = 60  # seconds; PKI backdates not_before (30 s by default): a cert this much older is not new


def counter_path(group: str) -> str:
    return f"{group}/tls-rotation"


def _command(group: str, finishing: bool = False) -> str:
    return f"citadel secrets rotate tls-cert {group}{' --finish' if finishing else ''}"


def seed(store: Store, group: str) -> None:
    """Generation 1 of the group's counter (the agents' templates wait for it to exist)."""
    store.write(counter_path(group), {"generation": 1, "requested_at": stamp()}, 0)


class Certificates:
    """The certificates PKI has issued, read once each, by host name and group (OU)."""

    def __init__(self, client, mount: str):
        self.client = client
        self.mount = mount
        self._seen: dict[str, dict | None] = {}

    def _info(self, serial: str) -> dict | None:
        from cryptography import x509  # heavy: imported late, so `citadel --help` stays fast
        from cryptography.x509.oid import NameOID

        if serial not in self._seen:
            pem = self.client.read(f"{self.mount}/cert/{serial}")["data"]["certificate"]
            cert = x509.load_pem_x509_certificate(pem.encode())
            names = {a.oid: a.value for a in cert.subject}
            try:
                is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            self._seen[serial] = None if is_ca else {
                "serial": serial, "host": names.get(NameOID.COMMON_NAME), "group": names.get(NameOID.ORGANIZATIONAL_UNIT_NAME),
                "not_before": cert.not_valid_before_utc, "not_after": cert.not_valid_after_utc,
            }
        return self._seen[serial]

    def all(self) -> list[dict]:
        import hvac  # heavy: imported late, so `citadel --help` stays fast

        try:
            serials = self.client.list(f"{self.mount}/certs")["data"]["keys"]
        except (hvac.exceptions.InvalidPath, TypeError):
            return []
        return [info for serial in serials if (info := self._info(serial))]

    def latest(self, group: str, hosts: list[str]) -> dict[str, dict]:
        """The newest certificate of each host in `group` (hosts without one are left out)."""
        newest: dict[str, dict] = {}
        for info in self.all():
            if info["group"] == group and info["host"] in hosts:
                if info["host"] not in newest or info["not_before"] > newest[info["host"]]["not_before"]:
                    newest[info["host"]] = info
        return newest


def rotate(store: Store, site, group: str, wait: float = DEFAULT_WAIT, progress=None) -> Result:
    """Have every agent of `group` issue a new certificate; wait until PKI shows them all."""
    if group not in GROUPS:
        raise VaultError(f"host group {group!r}: Citadel's groups are {', '.join(GROUPS)}", exit_code=2)
    hosts = site.hosts_in(group)
    if not hosts:
        raise VaultError(f"host group {group!r} has no host in this inventory: no certificate to rotate", exit_code=2)
    with vault_errors(f"TLS certificates of {group}", _command(group)):
        run = Rotation(store, KIND, group, progress=progress)
        run.refuse_overlap(f"TLS certificates of {group}", _command(group, True))
        certificates = Certificates(store.client, site.vault.pki_mount)
        counter, version = store.read(counter_path(group))
        counter = counter or {}
        if not run.resuming:
            old = certificates.latest(group, hosts)
            run.begin(target=int(counter.get("generation", 0)) + 1, previous_serials={h: i["serial"] for h, i in old.items()})
        target = int(run.state["target"])
        if int(counter.get("generation", 0)) < target:
            counter = {"generation": target, "requested_at": stamp()}
            store.write(counter_path(group), counter, version)
            run.step(f"raised {counter_path(group)} to generation {target}: the agents issue new certificates")
        issued = _wait_for_new(certificates, group, hosts, run.state.get("previous_serials", {}),
                               parse_time(counter["requested_at"]), wait, run)
        run.result.version, run.result.previous_version = target, target - 1
        new = {h: i["serial"] for h, i in issued.items()}
        run.reach("overlap", versions={"to": target, "from": target - 1}, serials=new)
        run.result.notes.append("the previous certificates stay valid until they expire or `--finish` revokes them")
        return run.result


def _wait_for_new(certificates: Certificates, group, hosts, previous: dict, requested, wait: float, run) -> dict:
    deadline = time.monotonic() + wait
    while True:
        newest = certificates.latest(group, hosts)
        fresh = {
            h: i for h, i in newest.items()
            if i["serial"] != previous.get(h) and (i["not_before"] - requested).total_seconds() > -BACKDATE
        }
        missing = sorted(set(hosts) - set(fresh))
        if not missing:
            run.step(f"every host of {group} has a new certificate ({len(fresh)})")
            return fresh
        if time.monotonic() > deadline:
            raise VaultError(
                f"TLS certificates of {group}: no new certificate yet from {', '.join(missing)} after {wait:.0f} s "
                f"(is their agent running? `systemctl status citadel-agent@{group}` on the host). The old "
                f"certificates still work; re-run `{_command(group)}` to keep waiting"
            )
        time.sleep(2)


def finish(store: Store, site, group: str, progress=None) -> Result:
    """Revoke the certificates the rotation replaced."""
    with vault_errors(f"TLS certificates of {group}", _command(group, True)):
        run = Rotation(store, KIND, group, action="finish", progress=progress)
        run.refuse_unfinished(_command(group))
        if run.phase != "overlap":
            run.result.notes.append("no rotation in overlap: nothing to finish")
            return run.result
        for host, serial in sorted((run.state.get("previous_serials") or {}).items()):
            store.client.write(f"{site.vault.pki_mount}/revoke", serial_number=serial)
            run.step(f"revoked the previous certificate of {host}")
        run.result.version = int(run.state.get("target", 0))
        run.reach("done", versions={"to": run.result.version})
        return run.result
