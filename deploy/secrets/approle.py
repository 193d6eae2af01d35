"""AppRole secret-ids: the credential each host's Vault agent logs in with.

Nobody holds a host's secret-id but the host: the ``vault-agent`` role mints one per host
and group at deploy time, bound to the host's address, tagged with the host's name in its
metadata (``host``), and hands it to the agent response-wrapped. Vault keeps only
accessors, which is what rotation works on.

Rotation steps (each skipped on a re-run when already done):

1. record the intent: the target generation and the accessors live now (the "previous" set);
2. have the vault-agent role deliver a new secret-id to every host of the group still
   lacking one outside that set (``deliver(hosts)``, a deploy over SSH); the agent restarts
   on it and logs in, the old secret-ids still log in (overlap);
3. record the overlap.

``--finish`` keeps, per host of the group, its newest secret-id from this rotation and
destroys every other one of the role: the previous set, extras from repeated deploys, and
any not tagged with a host of the inventory (an orphan, or one issued by hand).

Example::

    >>> rotate(store, site, "gpu", deliver).phase                     # doctest: +SKIP
    'overlap'
    >>> finish(store, site, "gpu").phase                              # doctest: +SKIP
    'done'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, parse_time, vault_errors
from deploy.vault import VaultError
from deploy.vault.bootstrap import APPROLE_MOUNT
from deploy.vault.policies import GROUPS, policy_name

KIND = "approle-secret-id"

# deliver(hosts) -> {host: why it failed}; empty when every host got its secret-id.
Deliver = Callable[[list[str]], dict[str, str]]


@dataclass(frozen=True)
class SecretId:
    accessor: str
    host: str | None  # from the metadata the vault-agent role sets; None when not Citadel's
    created: str  # Vault's own time, ISO 8601 (compared as times, never with this machine's clock)
    expires: str | None
    uses_left: int | None


def check_group(group: str) -> str:
    if group not in GROUPS:
        raise VaultError(f"host group {group!r}: Citadel's groups are {', '.join(GROUPS)}", exit_code=2)
    return group


def _command(group: str, finishing: bool = False) -> str:
    return f"citadel secrets rotate approle-secret-id {group}{' --finish' if finishing else ''}"


def accessors(store: Store, group: str) -> list[str]:
    import hvac  # heavy: imported late, so `citadel --help` stays fast

    try:
        listed = store.client.auth.approle.list_secret_id_accessors(policy_name(group), mount_point=APPROLE_MOUNT)
    except hvac.exceptions.InvalidPath:  # a role with no secret-id answers 404
        return []
    return list(listed["data"]["keys"])


def secret_ids(store: Store, group: str) -> list[SecretId]:
    """Every live secret-id of the group's role, oldest first."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast

    found = []
    for accessor in accessors(store, group):
        try:
            info = store.client.auth.approle.read_secret_id_accessor(
                policy_name(group), accessor, mount_point=APPROLE_MOUNT
            )["data"]
        except hvac.exceptions.InvalidPath:  # expired between the list and the read
            continue
        expires = info.get("expiration_time") or ""
        found.append(SecretId(
            accessor=accessor, host=(info.get("metadata") or {}).get("host"), created=info["creation_time"],
            expires=expires if expires.startswith("2") else None,  # "0001-01-01..." means never
            uses_left=info.get("secret_id_num_uses"),
        ))
    return sorted(found, key=lambda s: parse_time(s.created))


def newest_by_host(ids: list[SecretId], hosts: list[str], exclude: set[str] = frozenset()) -> dict[str, SecretId]:
    """Each host's newest secret-id, leaving out the accessors in `exclude`."""
    newest: dict[str, SecretId] = {}
    for sid in ids:  # oldest first: later ones win
        if sid.host in hosts and sid.accessor not in exclude:
            newest[sid.host] = sid
    return newest


def _hosts(site, group: str) -> list[str]:
    hosts = site.hosts_in(group)
    if not hosts:
        raise VaultError(f"approle secret-id of {group}: the inventory has no host in group {group}", exit_code=2)
    return hosts


def rotate(store: Store, site, group: str, deliver: Deliver, progress=None) -> Result:
    """Give every host of `group` a new secret-id; the previous ones keep working until `finish`."""
    check_group(group)
    hosts = _hosts(site, group)
    secret = f"approle secret-id of {group}"
    with vault_errors(secret, _command(group)):
        run = Rotation(store, KIND, group, progress=progress)
        run.refuse_overlap(secret, _command(group, True))
        if not run.resuming:
            run.begin(target=int(run.state.get("target", 0)) + 1)
        target = int(run.state["target"])
        if (run.state.get("previous") or {}).get("target") != target:  # nothing delivered before this is saved
            run.remember(previous={"target": target, "accessors": [s.accessor for s in secret_ids(store, group)]})
        previous = set(run.state["previous"]["accessors"])
        done = newest_by_host(secret_ids(store, group), hosts, exclude=previous)
        pending = [h for h in hosts if h not in done]
        if pending:
            run.step(f"delivering new secret-ids to {', '.join(pending)} (vault-agent role)")
            failed = deliver(pending)
            if failed:
                reasons = "; ".join(f"{h}: {why}" for h, why in sorted(failed.items()))
                raise VaultError(
                    f"{secret}: not delivered to {', '.join(sorted(failed))} ({reasons}). Their agents still log "
                    f"in with their current secret-id. Fix the host(s), then re-run `{_command(group)}` "
                    "(it resumes with the hosts still missing)"
                )
            run.step(f"delivered: {len(pending)} host(s) log in with their new secret-id")
        run.result.version = target
        run.result.previous_version = run.result.version - 1 or None
        run.reach("overlap", versions={"to": run.result.version, "hosts": len(hosts)})
        return run.result


def finish(store: Store, site, group: str, progress=None) -> Result:
    """Destroy every secret-id of the group's role but each host's newest from the rotation."""
    check_group(group)
    hosts = _hosts(site, group)
    secret = f"approle secret-id of {group}"
    with vault_errors(secret, _command(group, True)):
        run = Rotation(store, KIND, group, action="finish", progress=progress)
        run.refuse_unfinished(_command(group))
        if not run.state:
            raise VaultError(f"{secret}: never rotated; run `{_command(group)}`", exit_code=2)
        ids = secret_ids(store, group)
        keep = newest_by_host(ids, hosts, exclude=set((run.state.get("previous") or {}).get("accessors", ())))
        missing = [h for h in hosts if h not in keep]
        if missing:  # a host added since the rotation: destroying would lock it out
            raise VaultError(
                f"{secret}: {', '.join(missing)} got no secret-id in this rotation; run `{_command(group)}` "
                "for them first (nothing was destroyed)", exit_code=2,
            )
        kept = {s.accessor for s in keep.values()}
        destroyed = 0
        for sid in ids:
            if sid.accessor not in kept:
                store.client.auth.approle.destroy_secret_id_accessor(
                    policy_name(group), sid.accessor, mount_point=APPROLE_MOUNT
                )
                destroyed += 1
        run.step(f"destroyed {destroyed} other secret-id(s) (by accessor); kept one per host")
        run.result.version = int(run.state.get("target", 0))
        if run.phase == "overlap":
            run.reach("done", versions={"to": run.result.version, "destroyed": destroyed})
        return run.result
