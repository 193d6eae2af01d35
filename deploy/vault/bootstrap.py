"""Set up exactly what Citadel needs on an existing Vault or OpenBao, idempotently.

What it manages (names from the inventory's ``vault`` block), and nothing else:

- a KV v2 mount (``kv_mount``) for the hosts' secrets, one prefix per group;
- a transit mount (``transit_mount``) with four keys, none exportable, none deletable,
  none backed up in plaintext, rotated every ``settings.transit_key_max_age_days``:
  ``model-data`` (aes256-gcm96: wraps model data keys), ``model-signing`` (ecdsa-p256:
  signs model manifests; only its public key ever leaves Vault) and ``audit-chain``
  (type ``hmac``: the gateway's audit-log chain; an HMAC-only key cannot be used to encrypt
  or sign anything else, so a leak of its purpose stays contained) and ``store-volume``
  (aes256-gcm96: wraps the keys of GPU hosts' optional LUKS2 model store volumes);
- a PKI mount (``pki_mount``) with an internal root CA, made once, and roles ``host`` and
  ``gateway`` issuing short-lived certificates only for the inventory's own names;
- a ``cert`` auth mount and one role per host and group (``GROUP-HOST``): the host's agent
  logs in with its own identity certificate from the PKI role ``agent-GROUP``, gets the
  group's policy (``deploy/vault/policies/citadel-<group>.hcl``) and a token bound to the
  host's address (see :mod:`deploy.vault.identity`). Hosts revoked by ``citadel secrets
  revoke-host`` get no role until they are readmitted.

Lifetimes (token, host credential, certificates) come from the inventory's
``vault.lifetimes``.

Every item is compared with what the server already has and reported as created, updated
or unchanged; a second run reports everything unchanged; ``dry_run`` changes nothing.
Vault and OpenBao share this HTTP API (the ``hmac`` key type needs Vault 1.12 or later).

Example::

    >>> report = bootstrap(client, site, dry_run=True)            # doctest: +SKIP
    >>> [(i.kind, i.name, i.status) for i in report.items][:1]
    [('mount', 'citadel', 'created')]
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import asdict, dataclass, field

from deploy.secrets import audit_key, client_keys, internal_key, tls, vllm_key
from deploy.secrets.store import Store
from deploy.vault import VaultError
from deploy.vault.identity import CERT_MOUNT, TOKEN_MAX_LIFETIMES, agent_pki_role, identity_role, revoked_hosts
from deploy.vault.policies import GROUPS, check, policy_name, policy_text, render

LEGACY_APPROLE_MOUNT = "approle"  # how hosts logged in before host identities (only reported now)
PKI_MAX_TTL = "8760h"  # the root CA lives a year; the mount's max lease must allow that
CRL_CONFIG = {"expiry": "72h", "auto_rebuild": True, "auto_rebuild_grace_period": "24h", "disable": False}
PKI_ROLE_FOR_GROUP = {"gpu": "host", "gateway": "gateway"}

TRANSIT_KEYS = {
    "model-data": "aes256-gcm96",
    "model-signing": "ecdsa-p256",
    "audit-chain": "hmac",
    "store-volume": "aes256-gcm96",
}

STATUSES = ("created", "updated", "unchanged", "removed")


def token_limits(site) -> dict:
    """The TTLs of a host agent's tokens: renewed up to TOKEN_MAX_LIFETIMES, then a new login."""
    token = site.vault.lifetimes.token_seconds
    return {"token_ttl": token, "token_max_ttl": token * TOKEN_MAX_LIFETIMES}


@dataclass
class Item:
    kind: str
    name: str
    status: str
    detail: str = ""


@dataclass
class Report:
    address: str
    flavor: str
    dry_run: bool
    items: list[Item] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for i in self.items if i.status == s) for s in STATUSES}

    @property
    def changed(self) -> bool:
        return any(i.status != "unchanged" for i in self.items)

    def as_dict(self) -> dict:
        return {
            "address": self.address,
            "flavor": self.flavor,
            "dry_run": self.dry_run,
            "counts": self.counts(),
            "items": [asdict(i) for i in self.items],
            "notes": self.notes,
        }


def seconds(value) -> int:
    """A Vault duration ("20m", "72h", "3600s", 3600, "3600") in seconds."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    raise ValueError(f"not a duration: {value!r}")


def host_networks(site, name: str) -> list[str]:
    """The /32 or /128 networks of one host; a DNS name is resolved now.

    Tokens are bound to source addresses, which must be IPs: a host given by name is
    resolved here, and one that does not resolve is an error, because binding nothing would
    let a token copied off the host work from anywhere.
    """
    address = site.hosts[name].address
    try:
        ips = [ipaddress.ip_address(address)]
    except ValueError:
        try:
            ips = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(address, None)}
        except socket.gaierror:
            raise VaultError(
                f"hosts.{name}.address: {address} does not resolve, and Vault needs IP addresses to "
                "bind tokens to: give the host's IP address",
                exit_code=2,
            ) from None
    return sorted(str(ipaddress.ip_network(ip)) for ip in ips)


def group_networks(site, group: str) -> list[str]:
    """The networks (see `host_networks`) of every host of the group."""
    return sorted({network for name in site.hosts_in(group) for network in host_networks(site, name)})


def group_names(site, group: str) -> list[str]:
    """Names a group's certificates may carry: inventory names and DNS addresses (no IPs)."""
    names = set()
    for name in site.hosts_in(group):
        names.add(name)
        address = site.hosts[name].address
        try:
            ipaddress.ip_address(address)
        except ValueError:
            names.add(address)
    return sorted(names)


def _same_networks(current, desired: list[str]) -> bool:
    if isinstance(current, str):
        current = [c for c in current.split(",") if c.strip()]
    try:
        return sorted(str(ipaddress.ip_network(c.strip())) for c in current or []) == sorted(desired)
    except ValueError:
        return False


class Bootstrapper:
    """One run of the bootstrap against one server (see the module docstring)."""

    def __init__(self, client, site, dry_run: bool = False):
        self.client = client
        self.site = site
        self.vault = site.vault
        self.dry_run = dry_run
        self.report = Report(address="", flavor=site.vault.flavor, dry_run=dry_run)
        self.new_mounts: set[str] = set()  # mounts a dry run would create: nothing to read under them

    # -- helpers ---------------------------------------------------------------------

    def _add(self, kind: str, name: str, status: str, detail: str = "") -> None:
        self.report.items.append(Item(kind, name, status, detail))

    def _read(self, path: str) -> dict | None:
        response = self.client.read(path)
        return None if response is None else response.get("data", response)

    def _write(self, path: str, data: dict) -> None:
        if not self.dry_run:
            self.client.write_data(path, data=data)

    # -- mounts ----------------------------------------------------------------------

    def mounts(self) -> None:
        engines = self.client.sys.list_mounted_secrets_engines()
        engines = engines.get("data", engines)
        wanted = [
            (self.vault.kv_mount, "kv", {"version": "2"}, {}),
            (self.vault.transit_mount, "transit", {}, {}),
            (self.vault.pki_mount, "pki", {}, {"max_lease_ttl": PKI_MAX_TTL}),
        ]
        for path, kind, options, config in wanted:
            current = engines.get(f"{path}/")
            if current is None:
                if not self.dry_run:
                    self.client.sys.enable_secrets_engine(
                        kind, path=path, options=options or None, config=config or None,
                        description=f"Citadel ({kind})",
                    )
                self.new_mounts.add(path)
                self._add("mount", path, "created", f"{kind}{' v2' if options else ''}")
                continue
            if current["type"] != kind:
                raise VaultError(f"mount {path}/ exists with type {current['type']}, not {kind}: rename vault.{kind}_mount or remove it")
            version = str((current.get("options") or {}).get("version", "1"))
            if kind == "kv" and version != "2":
                raise VaultError(f"mount {path}/ is KV version {version}; Citadel needs KV v2 (upgrade it deliberately, it rewrites data)")
            changes = []
            if config:
                have = (current.get("config") or {}).get("max_lease_ttl", 0)
                if seconds(have) != seconds(config["max_lease_ttl"]):
                    changes.append(f"max_lease_ttl {have}s -> {config['max_lease_ttl']}")
                    if not self.dry_run:
                        self.client.sys.tune_mount_configuration(path, max_lease_ttl=config["max_lease_ttl"])
            self._add("mount", path, "updated" if changes else "unchanged", "; ".join(changes) or f"{kind}{' v2' if options else ''}")
        methods = self.client.sys.list_auth_methods()
        methods = methods.get("data", methods)
        current = methods.get(f"{CERT_MOUNT}/")
        if current is None:
            if not self.dry_run:
                self.client.sys.enable_auth_method("cert", path=CERT_MOUNT, description="Citadel hosts' identities")
            self.new_mounts.add(f"auth/{CERT_MOUNT}")
            self._add("auth", CERT_MOUNT, "created", "cert")
        elif current["type"] != "cert":
            raise VaultError(f"auth mount {CERT_MOUNT}/ exists with type {current['type']}, not cert")
        else:
            self._add("auth", CERT_MOUNT, "unchanged", "cert")
        if f"{LEGACY_APPROLE_MOUNT}/" in methods:
            self.report.notes.append(
                f"auth mount {LEGACY_APPROLE_MOUNT}/ is no longer used by Citadel (hosts log in with their identity "
                "certificates since this version); once every host is redeployed, disable it: "
                f"bao auth disable {LEGACY_APPROLE_MOUNT}"
            )

    # -- transit ---------------------------------------------------------------------

    def transit_keys(self) -> None:
        mount = self.vault.transit_mount
        rotate = self.site.settings.transit_key_max_age_days * 86400
        for name, key_type in TRANSIT_KEYS.items():
            label = f"{mount}/{name}"
            current = None if mount in self.new_mounts else self._read(f"{mount}/keys/{name}")
            if current is None:
                body = {"type": key_type, "exportable": False, "allow_plaintext_backup": False,
                        "auto_rotate_period": f"{rotate}s"}
                if key_type == "hmac":
                    body["key_size"] = 32
                self._write(f"{mount}/keys/{name}", body)
                self._add("transit-key", label, "created", key_type)
                continue
            if current["type"] != key_type:
                raise VaultError(f"transit key {label} exists with type {current['type']}, not {key_type}: key types cannot change")
            for one_way in ("exportable", "allow_plaintext_backup"):
                if current.get(one_way):
                    raise VaultError(
                        f"transit key {label} has {one_way}=true, which cannot be undone: its material may have "
                        "left Vault; create a new key and retire this one"
                    )
            changes = []
            if current.get("deletion_allowed"):
                changes.append("deletion_allowed true -> false")
            if seconds(current.get("auto_rotate_period") or 0) != rotate:
                changes.append(f"auto_rotate_period -> {rotate}s")
            if changes:
                self._write(f"{mount}/keys/{name}/config", {"deletion_allowed": False, "auto_rotate_period": f"{rotate}s"})
            self._add("transit-key", label, "updated" if changes else "unchanged", "; ".join(changes) or key_type)

    # -- pki -------------------------------------------------------------------------

    def pki(self) -> None:
        mount = self.vault.pki_mount
        lifetimes = self.vault.lifetimes
        issuers = None if mount in self.new_mounts else self.client.list(f"{mount}/issuers")
        if not issuers or not (issuers.get("data") or {}).get("keys"):
            self._write(
                f"{mount}/root/generate/internal",
                {"common_name": f"Citadel {self.site.site} root CA", "issuer_name": "citadel-root",
                 "ttl": PKI_MAX_TTL, "key_type": "ec", "key_bits": 256},
            )
            self._add("pki-root", f"{mount}/citadel-root", "created", f"internal root CA, ttl {PKI_MAX_TTL}")
        else:
            # Never regenerated: every certificate the hosts hold chains to it.
            self._add("pki-root", f"{mount}/citadel-root", "unchanged", "exists; never regenerated")
        # The revocation list the hosts render and check their peers against: rebuilt before it
        # expires, with nobody at the controls (an expired CRL would make every peer refuse every
        # other). `citadel secrets revoke-host` rebuilds it at once.
        self._converge(f"{mount}/config/crl", "pki-crl", f"{mount}/crl", CRL_CONFIG, mount)
        for group in GROUPS:
            role = PKI_ROLE_FOR_GROUP[group]
            names = group_names(self.site, group)
            if not names:
                self.report.notes.append(f"no hosts in group {group}: pki role {role} not managed")
                continue
            desired = {
                "allowed_domains": names,
                "allow_bare_domains": True,  # exactly the listed names ...
                "allow_subdomains": False,  # ... and nothing under them,
                "allow_glob_domains": False,
                "allow_wildcard_certificates": False,  # no wildcard certificates,
                "allow_localhost": False,
                "allow_any_name": False,
                "enforce_hostnames": True,
                "allow_ip_sans": True,  # hosts are often reached by IP
                "server_flag": True,
                "client_flag": True,  # mutual TLS between gateway and GPU hosts
                "key_type": "ec",
                "key_bits": 256,
                "ou": [group],  # tells a host's gpu and gateway certificates apart (deploy.secrets.tls)
                "ttl": lifetimes.certificate_seconds,  # short-lived: renewed by the agent, revoked by expiry
                "max_ttl": lifetimes.certificate_seconds,
            }
            self._converge(f"{mount}/roles/{role}", "pki-role", f"{mount}/{role}", desired, mount)
            # The identity the group's agents log in with: client-only, its own OU, so neither
            # a service certificate nor another group's identity is accepted in its place.
            identity = {**desired, "server_flag": False, "ou": [agent_pki_role(group)],
                        "ttl": lifetimes.host_credential_seconds, "max_ttl": lifetimes.host_credential_seconds}
            agent_role = agent_pki_role(group)
            self._converge(f"{mount}/roles/{agent_role}", "pki-role", f"{mount}/{agent_role}", identity, mount)

    # -- policies and host identities --------------------------------------------------------

    def policies(self) -> None:
        mounts = {"kv_mount": self.vault.kv_mount, "transit_mount": self.vault.transit_mount,
                  "pki_mount": self.vault.pki_mount}
        for group in GROUPS:
            text = policy_text(group)
            problems = check(group, text)
            if problems:  # the unit tests keep this from happening; never write a bad policy
                raise VaultError(f"policy {policy_name(group)} fails the least-privilege check: {'; '.join(problems)}")
            rendered = render(text, **mounts)
            name = policy_name(group)
            current = self._read(f"sys/policies/acl/{name}")
            if current is None:
                status = "created"
            elif (current.get("policy") or "").strip() == rendered.strip():
                status = "unchanged"
            else:
                status = "updated"
            if status != "unchanged":
                self._write(f"sys/policies/acl/{name}", {"policy": rendered})
            self._add("policy", name, status, f"from deploy/vault/policies/{name}.hcl")

    def identities(self) -> None:
        """One cert auth role per host and group; none for a revoked host."""
        # In a dry run, mounts it would create hold nothing yet (and reading them fails).
        unmade = self.new_mounts if self.dry_run else set()
        ca = None if self.vault.pki_mount in unmade else self._read(f"{self.vault.pki_mount}/cert/ca")
        ca_pem = ((ca or {}).get("certificate") or "").strip()
        revoked = {} if self.vault.kv_mount in unmade else revoked_hosts(Store(self.client, self.vault.kv_mount))
        for group in GROUPS:
            for host in self.site.hosts_in(group):
                name = identity_role(group, host)
                if host in revoked:
                    self.report.notes.append(
                        f"host {host} is revoked ({revoked[host].get('at', '?')}): no identity role {name}; "
                        f"`citadel secrets readmit-host {host}` lets it back in"
                    )
                    continue
                desired = {
                    "certificate": ca_pem,  # only certificates from Citadel's PKI ...
                    "allowed_common_names": [host],  # ... for this host ...
                    "allowed_organizational_units": [agent_pki_role(group)],  # ... as this group's identity
                    "token_policies": [policy_name(group)],
                    **token_limits(self.site),
                    "token_type": "service",
                    "token_bound_cidrs": host_networks(self.site, host),
                    "display_name": name,
                }
                self._converge(f"auth/{CERT_MOUNT}/certs/{name}", "host-identity", name, desired,
                               f"auth/{CERT_MOUNT}")
        wanted = {identity_role(group, host) for group in GROUPS for host in self.site.hosts_in(group)
                  if host not in revoked}
        self._prune_identities(unmade, wanted)

    def _prune_identities(self, unmade: set[str], wanted: set[str]) -> None:
        """Delete Citadel's identity roles of hosts no longer in the inventory (or revoked): a host
        taken out of the site must not keep a way into Vault (its certificate logs in until it expires)."""
        if f"auth/{CERT_MOUNT}" in unmade:
            return
        listed = self.client.list(f"auth/{CERT_MOUNT}/certs") or {}
        ours = tuple(f"{group}-" for group in GROUPS)
        for name in sorted((listed.get("data") or {}).get("keys") or []):
            if name.startswith(ours) and name not in wanted:
                if not self.dry_run:
                    self.client.delete(f"auth/{CERT_MOUNT}/certs/{name}")
                self._add("host-identity", name, "removed", "its host is not in the inventory, or is revoked")

    def _converge(self, path: str, kind: str, label: str, desired: dict, mount: str) -> None:
        """Create or update the object at `path` so the fields in `desired` match."""
        current = None if mount in self.new_mounts else self._read(path)
        if current is None:
            self._write(path, desired)
            self._add(kind, label, "created")
            return
        differ = [key for key, want in desired.items() if not _same(key, current.get(key), want)]
        if differ:
            self._write(path, desired)
        self._add(kind, label, "updated" if differ else "unchanged", ", ".join(differ))

    def run(self) -> Report:
        self.report.address = self.client.url
        self.mounts()
        self.transit_keys()
        self.pki()
        self.policies()
        self.identities()
        self.seed_secrets()
        return self.report

    # -- first secrets ---------------------------------------------------------------

    def seed_secrets(self) -> None:
        """The first version of what host agents render and wait for, when there is none.

        An agent's template blocks until every secret it reads exists, so a host would never
        get its files: the internal model-server key (version 1) and each group's TLS
        rotation counter (generation 1) are made here, never replaced (rotation does that).
        """
        store = Store(self.client, self.vault.kv_mount)
        fresh_mount = self.vault.kv_mount in self.new_mounts
        if fresh_mount or not internal_key.read_pair(store):
            if not self.dry_run:
                internal_key.rotate(store, grace=internal_key.DEFAULT_GRACE)
            self._add("secret", "internal-api-key", "created", "version 1")
        else:
            self._add("secret", "internal-api-key", "unchanged", "exists; rotated by `citadel secrets rotate`")
        for group in GROUPS:
            if not self.site.hosts_in(group):
                continue
            path = tls.counter_path(group)
            if fresh_mount or store.read(path)[0] is None:
                if not self.dry_run:
                    tls.seed(store, group)
                self._add("secret", path, "created", "TLS rotation generation 1")
            else:
                self._add("secret", path, "unchanged", "exists")
        if self.site.hosts_in("gpu"):
            self._seed_once(store, fresh_mount, vllm_key.PATH, lambda: vllm_key.seed(store),
                            "the model server's key (GPU hosts only)")
        if self.site.hosts_in("gateway"):
            self._seed_once(store, fresh_mount, client_keys.PATH,
                            lambda: store.write(client_keys.PATH, {"clients": {}}, 0),
                            "no client yet (`citadel secrets issue-client`)")
            self._seed_once(store, fresh_mount, audit_key.PATH, lambda: audit_key.seed(store),
                            "the key chaining the gateway's audit log")
            self._seed_once(store, fresh_mount, audit_key.CONTENT_PATH,
                            lambda: audit_key.seed(store, audit_key.CONTENT_PATH),
                            "the key sealing content recorded for the clients that opt in")

    def _seed_once(self, store, fresh_mount: bool, path: str, seed, detail: str) -> None:
        """`seed()` when `path` holds nothing yet (never in a dry run); either way, one report item."""
        if fresh_mount or store.read(path)[0] is None:
            if not self.dry_run:
                seed()
            self._add("secret", path, "created", detail)
        else:
            self._add("secret", path, "unchanged", "exists")


def _same(key: str, have, want) -> bool:
    """Whether a field read back from the server equals the desired value."""
    if key == "certificate":
        return (have or "").strip() == want.strip()
    if key.endswith("_cidrs"):
        return _same_networks(have, want)
    if key.endswith(("ttl", "expiry", "grace_period")):
        try:
            return seconds(have or 0) == seconds(want)
        except ValueError:
            return False
    if isinstance(want, list):
        return sorted(have or []) == sorted(want)
    return have == want


def bootstrap(client, site, dry_run: bool = False) -> Report:
    """Bring the server `client` talks to in line with `site`; see the module docstring."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast
    import requests

    try:
        return Bootstrapper(client, site, dry_run).run()
    except requests.RequestException as exc:
        raise VaultError(f"lost the connection to Vault during the bootstrap ({type(exc).__name__}); run it again") from None
    except hvac.exceptions.Forbidden:
        raise VaultError(
            "permission denied: bootstrap needs a token allowed to manage mounts, auth methods and "
            "policies (an administrator's token)"
        ) from None
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"the server refused a bootstrap step: {exc}") from None
