"""Every secret Citadel manages: version, age, expiry, rotation due date, hosts, last rotation.

Read-only. One row per secret: the internal model-server key, vLLM's own key (overlap
while GPU hosts may still present the old one), each gateway client key,
each transit key, each group's host identities (the certificates agents log in with; revoked
hosts named), each group's host TLS certificates (issued
by the hosts' agents: the rotation generation, and the soonest expiry of the newest
certificate of each host, "missing" while a host has none) and the PKI root CA. "Rotate by" is the last
rotation plus the site's rotation policy (``settings.transit_key_max_age_days``, 90 days by
default), or the hard expiry when that comes first.

Example::

    >>> rows = collect(store, site)                                # doctest: +SKIP
    >>> rows[0]["kind"], rows[0]["name"]
    ('internal-api-key', 'vllm')
"""

from __future__ import annotations

import datetime as dt

from deploy.secrets import client_keys, internal_key, overlap, tls, transit, vllm_key
from deploy.secrets.store import Store, now, parse_time
from deploy.vault.bootstrap import TRANSIT_KEYS
from deploy.vault.identity import agent_pki_role, revoked_hosts
from deploy.vault.policies import GROUPS

KIND_IDENTITY = "host-identity"

# Which host groups hold (or use) each kind of secret: "where it is deployed".
GROUPS_OF = {
    "internal-api-key": ("gpu", "gateway"),
    "vllm-api-key": ("gpu",),
    "client-key": ("gateway",),
    "transit-key": ("gpu",),  # model-data decrypt, model-signing verify
    "tls-ca": ("gpu", "gateway"),
    "tls-cert": ("gpu", "gateway"),
    "host-identity": ("gpu", "gateway"),
}
TRANSIT_GROUPS = {"model-data": ("gpu",), "model-signing": ("gpu",), "audit-chain": ("gateway",),
                  "store-volume": ("gpu",)}


def _age_days(created: dt.datetime | None, when: dt.datetime) -> float | None:
    return None if created is None else round((when - created).total_seconds() / 86400, 1)


def _row(kind, name, version, created, hosts, when, max_age, *, expires=None, phase="", detail="") -> dict:
    rotate_by = created + dt.timedelta(days=max_age) if created else None
    if expires and (rotate_by is None or expires < rotate_by):
        rotate_by = expires
    return {
        "kind": kind, "name": name, "version": version, "created": created.isoformat() if created else None,
        "age_days": _age_days(created, when), "expires": expires.isoformat() if expires else None,
        "rotate_by": rotate_by.isoformat() if rotate_by else None,
        "due": bool(rotate_by and rotate_by <= when), "phase": phase or "current", "hosts": hosts,
        "detail": detail, "last_rotation": None,
    }


def _hosts(site, groups) -> list[str]:
    return sorted({h for g in groups for h in site.hosts_in(g)})


def _state_phase(state: dict) -> str:
    """A recorded rotation phase as status shows it: rotating (unfinished), overlap or current."""
    phase = state.get("phase", "none")
    return phase if phase in ("rotating", "overlap") else "current"


def _phase(doc: dict, when) -> str:
    return "overlap" if overlap.overlap_open(doc, when) else "current"


def collect(store: Store, site, trail_limit: int = 500) -> list[dict]:
    """The status rows (see the module docstring)."""
    when, max_age = now(), site.settings.transit_key_max_age_days
    rows = []
    doc = internal_key.read_pair(store)
    if doc.get("current"):
        cur = doc["current"]
        rows.append(_row(internal_key.KIND, internal_key.NAME, cur["version"], parse_time(cur["created"]),
                         _hosts(site, GROUPS_OF["internal-api-key"]), when, max_age,
                         expires=parse_time(doc.get("previous_expires")) if overlap.overlap_open(doc, when) else None,
                         phase=_phase(doc, when), detail=f"key id {cur['key_id']}"))
    else:
        rows.append(_row(internal_key.KIND, internal_key.NAME, 0, None, [], when, max_age, phase="missing",
                         detail="never issued: run `citadel secrets rotate internal-api-key`"))
    rows.append(_vllm_key_row(store, site, when, max_age))
    for name, entry in sorted(client_keys.read(store)["clients"].items()):
        cur = entry["current"]
        rows.append(_row(client_keys.KIND, name, cur["version"], parse_time(cur["created"]),
                         _hosts(site, GROUPS_OF["client-key"]), when, max_age, phase=_phase(entry, when),
                         detail=f"key id {cur['key_id']} (stored as a SHA-256 hash)"))
    rows.extend(_transit_rows(store, site, when, max_age))
    rows.extend(_identity_rows(store, site, when, max_age))
    rows.extend(_tls_rows(store, site, when, max_age))
    rows.extend(_ca_rows(store, site, when, max_age))
    last = {}
    for entry in store.trail(limit=trail_limit):
        last[(entry.get("kind"), entry.get("name"))] = {
            "action": entry.get("action"), "at": entry.get("at"), "by": (entry.get("by") or {}).get("display_name"),
        }
    for row in rows:
        row["last_rotation"] = last.get((row["kind"], row["name"]))
    return rows


def _vllm_key_row(store, site, when, max_age) -> dict:
    """vLLM's own key: overlap while GPU hosts may still present the old one (`rotate vllm-api-key --finish`)."""
    meta = vllm_key.read_meta(store)
    cur = meta["current"]
    if not cur:
        return _row(vllm_key.KIND, vllm_key.NAME, 0, None, [], when, max_age, phase="missing",
                    detail="never issued: run `citadel vault bootstrap`")
    state, _ = store.state(vllm_key.KIND, vllm_key.NAME)
    open_ = overlap.overlap_open(meta, when)
    # A seeded key has no creation time: its age is the bootstrap's, unknown here, so never "due" by age.
    return _row(vllm_key.KIND, vllm_key.NAME, cur["version"], parse_time(cur.get("created")),
                _hosts(site, GROUPS_OF[vllm_key.KIND]), when, max_age,
                expires=parse_time(meta["previous_expires"]) if open_ else None,
                phase="rotating" if state.get("phase") == "rotating" else _phase(meta, when),
                detail=f"key id {cur['key_id']}; each keyguard presents it once its vLLM accepts it")


def key_version_times(info: dict) -> dict[int, dt.datetime]:
    """Creation time of each version of a transit key, as far as the server reports them."""
    times = {}
    for version, value in (info.get("keys") or {}).items():
        if isinstance(value, dict):
            stamp = parse_time(value.get("creation_time"))
        else:
            stamp = dt.datetime.fromtimestamp(int(value), dt.UTC)
        if stamp:
            times[int(version)] = stamp
    return times


def _transit_rows(store, site, when, max_age) -> list[dict]:
    rows = []
    mount = site.vault.transit_mount
    wrapped = transit.wrapped_keys(store)
    for name in TRANSIT_KEYS:
        info = transit.key_info(store, mount, name)
        latest = int(info["latest_version"])
        created = key_version_times(info).get(latest)
        state, _ = store.state(transit.KIND, name)
        if created is None and state.get("finished_at"):
            created = parse_time(state["finished_at"])  # hmac keys report no version times
        detail = f"min_decryption_version {info.get('min_decryption_version')}"
        if name in transit.WRAPPING_KEYS:
            detail += f"; {len(wrapped)} wrapped data key(s)"
        rows.append(_row(transit.KIND, name, latest, created, _hosts(site, TRANSIT_GROUPS[name]), when, max_age,
                         phase=_state_phase(state),
                         detail=detail))
    return rows


def _identity_rows(store, site, when, max_age) -> list[dict]:
    """Per group: the newest identity of each host (renewed by its agent), revoked hosts apart."""
    rows = []
    certificates = tls.Certificates(store.client, site.vault.pki_mount)
    revoked = revoked_hosts(store)
    for group in GROUPS:
        hosts = site.hosts_in(group)
        if not hosts:
            continue
        out = sorted(h for h in hosts if h in revoked)
        serving = [h for h in hosts if h not in revoked]
        newest = certificates.latest(agent_pki_role(group), serving)
        gone = f"; revoked: {', '.join(out)} (`citadel secrets readmit-host`)" if out else ""
        without = sorted(set(serving) - set(newest))
        if without:
            rows.append(_row(KIND_IDENTITY, group, 0, None, hosts, when, max_age, phase="missing",
                             detail=f"no identity for {', '.join(without)}: deploy the vault-agent role{gone}"))
            continue
        oldest = min(newest.values(), key=lambda i: i["not_after"]) if newest else None
        rows.append(_row(KIND_IDENTITY, group, 0, oldest["not_before"] if oldest else None, hosts, when, max_age,
                         expires=oldest["not_after"] if oldest else None, phase="revoked" if out else "",
                         detail=f"{len(newest)} host identity(ies); renewed by the agents before they expire{gone}"))
    return rows


def _tls_rows(store, site, when, max_age) -> list[dict]:
    rows = []
    certificates = tls.Certificates(store.client, site.vault.pki_mount)
    for group in GROUPS:
        hosts = site.hosts_in(group)
        if not hosts:
            continue
        counter, _ = store.read(tls.counter_path(group))
        generation = int((counter or {}).get("generation", 0))
        newest = certificates.latest(group, hosts)
        state, _ = store.state(tls.KIND, group)
        without = sorted(set(hosts) - set(newest))
        if without:
            rows.append(_row(tls.KIND, group, generation, None, hosts, when, max_age, phase="missing",
                             detail=f"no certificate yet for {', '.join(without)}: deploy the vault-agent role"))
            continue
        oldest = min(newest.values(), key=lambda i: i["not_after"])
        rows.append(_row(tls.KIND, group, generation, parse_time((counter or {}).get("requested_at")), hosts, when,
                         max_age, expires=oldest["not_after"], phase=_state_phase(state),
                         detail=f"{len(newest)} host certificate(s); renewed by the agents before they expire"))
    return rows


def _ca_rows(store, site, when, max_age) -> list[dict]:
    from cryptography import x509  # heavy: imported late, so `citadel --help` stays fast

    mount = site.vault.pki_mount
    issuer = store.client.read(f"{mount}/issuer/default")
    if not issuer:
        return []
    cert = x509.load_pem_x509_certificate(issuer["data"]["certificate"].encode())
    expires = cert.not_valid_after_utc
    row = _row("tls-ca", issuer["data"].get("issuer_name") or "default", 1, cert.not_valid_before_utc,
               _hosts(site, GROUPS_OF["tls-ca"]), when, 3650, expires=expires,
               detail="host certificates are short-lived and issued by each host's agent")
    return [row]
