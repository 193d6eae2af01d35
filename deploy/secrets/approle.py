"""AppRole secret-ids: the credential each host group logs in to Vault with.

The current secret-id of a group is kept for the deploy at ``admin/approle/<group>``
(``secret_id``, ``accessor``; operators only: no host policy reads ``admin/``), with the
``previous_accessor`` during an overlap. Rotation: record the intent, issue a new
secret-id (the old one still logs in), store it, record the overlap; ``--finish``
destroys the previous secret-id by its accessor, and any other secret-id of the role that
Citadel does not hold (one orphaned by a failure between issuing and storing).

Example::

    >>> rotate(store, "gpu").phase                                  # doctest: +SKIP
    'overlap'
    >>> finish(store, "gpu").phase                                  # doctest: +SKIP
    'done'
"""

from __future__ import annotations

from deploy.redaction import register
from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, stamp, vault_errors
from deploy.vault import VaultError
from deploy.vault.bootstrap import APPROLE_MOUNT
from deploy.vault.policies import GROUPS, policy_name

KIND = "approle-secret-id"
PREFIX = "admin/approle"


def check_group(group: str) -> str:
    if group not in GROUPS:
        raise VaultError(f"host group {group!r}: Citadel's groups are {', '.join(GROUPS)}", exit_code=2)
    return group


def _command(group: str, finishing: bool = False) -> str:
    return f"citadel secrets rotate approle-secret-id {group}{' --finish' if finishing else ''}"


def accessors(store: Store, group: str) -> list[str]:
    import hvac

    try:
        listed = store.client.auth.approle.list_secret_id_accessors(policy_name(group), mount_point=APPROLE_MOUNT)
    except hvac.exceptions.InvalidPath:  # a role with no secret-id answers 404
        return []
    return list(listed["data"]["keys"])


def rotate(store: Store, group: str, progress=None) -> Result:
    """Issue a new secret-id for `group`; the previous one keeps working until `finish`."""
    check_group(group)
    with vault_errors(f"approle secret-id of {group}", _command(group)):
        run = Rotation(store, KIND, group, progress=progress)
        run.refuse_overlap(f"approle secret-id of {group}", _command(group, True))
        doc, version = store.read(f"{PREFIX}/{group}")
        doc = doc or {}
        if not run.resuming:
            run.begin(target=int(doc.get("version", 0)) + 1)
        target = int(run.state["target"])
        role = policy_name(group)
        if int(doc.get("version", 0)) < target:  # else a re-run after the store: nothing to issue
            issued = store.client.auth.approle.generate_secret_id(
                role, metadata={"issued_by": "citadel", "version": str(target)}, mount_point=APPROLE_MOUNT
            )["data"]
            register(issued["secret_id"])  # masked in any message from here on
            run.step(f"issued secret-id version {target} for role {role}")
            doc = {
                "secret_id": issued["secret_id"], "accessor": issued["secret_id_accessor"], "version": target,
                "issued_at": stamp(), "previous_accessor": doc.get("accessor"),
                "previous_version": doc.get("version"),
            }
            store.write(f"{PREFIX}/{group}", doc, version)
            run.step(f"stored it at {PREFIX}/{group} for the deploy")
        run.result.version, run.result.previous_version = target, doc.get("previous_version")
        versions = {"to": target, "from": doc.get("previous_version")}
        run.reach("overlap" if doc.get("previous_accessor") else "done", versions=versions)
        return run.result


def finish(store: Store, group: str, progress=None) -> Result:
    """Destroy every secret-id of the group's role but the current one."""
    check_group(group)
    with vault_errors(f"approle secret-id of {group}", _command(group, True)):
        run = Rotation(store, KIND, group, action="finish", progress=progress)
        run.refuse_unfinished(_command(group))
        doc, version = store.read(f"{PREFIX}/{group}")
        if not doc:
            raise VaultError(f"approle secret-id of {group}: none issued yet; run `{_command(group)}`", exit_code=2)
        for accessor in accessors(store, group):
            if accessor != doc["accessor"]:
                store.client.auth.approle.destroy_secret_id_accessor(
                    policy_name(group), accessor, mount_point=APPROLE_MOUNT
                )
                run.step("destroyed a previous secret-id (by its accessor)")
        if doc.get("previous_accessor"):
            store.write(f"{PREFIX}/{group}", {**doc, "previous_accessor": None}, version)
        run.result.version = int(doc["version"])
        if run.phase == "overlap":
            run.reach("done", versions={"to": run.result.version})
        return run.result
