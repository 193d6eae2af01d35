"""The ``model-store`` role: sealed models on GPU hosts, unsealed only into RAM at start.

For every model the inventory assigns to the host (``hosts.NAME.models``, at the revision
``models.NAME.revision`` names), it:

- keeps the sealed copy in ``/var/lib/citadel/models/NAME/REVISION/`` (root only,
  ciphertext): pushed from the controller's store (``$CITADEL_MODEL_STORE``) with rsync
  when the host's manifest differs from the store's, so a second deploy sends nothing;
- pins the public keys of transit's ``model-signing`` key in
  ``/etc/citadel/models/signing-keys.pem``: the host checks signatures offline;
- installs ``citadel_runtime`` (the unseal code; Debian's python3 and
  python3-cryptography) and ``citadel-unseal@NAME.service``, which checks the signature,
  unwraps the data key through Vault with the host's own AppRole token (from the
  vault-agent role's sink) and decrypts into a tmpfs at ``/run/citadel/models/NAME``
  (0700, the model service's user, nosuid, nodev, noexec); the model server starts after it.

A model that fails its checks keeps the unit from starting; the journal says why, and so
does ``citadel audit`` (``hardening/controls/models.py``).

Threats: theft of model weights at rest; model poisoning or substitution.

Example::

    CITADEL_MODEL_STORE=/srv/models citadel deploy -i site.yaml --role model-store
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.facts.server import Command
from pyinfra.operations import apt, files, python, server, systemd

import citadel_runtime
from roles import Role
from roles.ops.runtime import install_runtime
from roles.model_store.paths import CONFIG_DIR, HOST_STORE, MODEL_USER, MOUNT_ROOT, PUBLIC_KEYS
from roles.vault_agent import vault_access
from roles.model_store.user import ensure_model_user
from roles.vault_agent.templates import SPECS

UNIT = "citadel-unseal@.service"
MODULES = ("__init__.py", "unseal.py", *sorted(p.name for p in Path(citadel_runtime.__file__).parent.glob("sealed*.py")))


def unit_name(model: str) -> str:
    return f"citadel-unseal@{model}.service"


def mount_point(model: str) -> str:
    return f"{MOUNT_ROOT}/{model}"


def unseal_config(site, model: str, revision: str) -> dict:
    from deploy.models.push import host_dir
    from roles.vault_agent.templates import CONFIG_ROOT

    return {
        "model": model, "revision": revision, "sealed_dir": host_dir(model, revision), "mount": mount_point(model),
        "user": MODEL_USER, "vault_address": str(site.vault.address).rstrip("/"),
        "vault_ca": f"{CONFIG_ROOT}/gpu/vault-ca.pem", "token_file": SPECS["gpu"].sink,
        "transit_mount": site.vault.transit_mount, "public_keys": PUBLIC_KEYS,
    }


def _store() -> Path | None:
    from deploy.models.location import ENV

    return Path(os.environ[ENV]) if os.environ.get(ENV) else None


def _push(site, store: Path, model: str) -> None:
    from deploy.models import ModelError
    from deploy.models.push import push_models

    try:
        push_models(site, store, hosts=[host.name], models=[model])
    except ModelError as exc:
        raise OperationError(str(exc)) from None


def _health(model: str) -> bool:
    """Unsealed: the unit is active and its tmpfs has the options it was mounted with."""
    state = (host.get_fact(Command, command=f"systemctl is-active {unit_name(model)} || true; findmnt -n -o "
                           f"OPTIONS --mountpoint {mount_point(model)} || echo unmounted") or "").split()
    options = set((state[1] if len(state) > 1 else "").split(","))
    return state[:1] == ["active"] and {"nosuid", "nodev", "noexec"} <= options


def _model(site, access, model: str, revision: str, healthy: bool) -> bool:
    """Operations for one model; True when the sealed copy or its settings change (re-unseal)."""
    from deploy.models.push import host_dir

    sealed = host_dir(model, revision)
    remote = (host.get_fact(Command, command=f"sha256sum {sealed}/manifest.json 2>/dev/null || true",
                            _sudo=True) or "").split()
    store = _store()
    local = store / model / revision / "manifest.json" if store else None
    if local is not None and local.is_file():
        wanted = hashlib.sha256(local.read_bytes()).hexdigest()
        stale = not remote or remote[0] != wanted
        if stale or not healthy:  # a failed unseal may be a damaged copy: rsync re-sends what differs
            python.call(name=f"Push sealed {model}/{revision} (rsync, resumable)", function=_push, site=site,
                        store=store, model=model)
    elif not remote:
        raise OperationError(
            f"model {model} revision {revision} is neither on {host.name} nor in a local store: set "
            f"CITADEL_MODEL_STORE to the store `citadel model seal` wrote, or run `citadel model push`"
        )
    else:
        stale = False
    config = files.put(name=f"Unseal settings of {model}", src=io.StringIO(json.dumps(unseal_config(site, model, revision),
                                                                                     indent=2) + "\n"),
                       dest=f"{CONFIG_DIR}/{model}.json", user="root", group="root", mode="0600")
    return stale or config._maybe_is_change  # noqa: SLF001 - pyinfra's own prediction


@deploy("Citadel model store")
def apply() -> None:
    from deploy.models.keys import Keys
    from deploy.secrets.store import Store

    site = host.data.citadel_site
    models = [(m, site.models[m].revision) for m in site.hosts[host.name].models]
    apt.packages(name="python3-cryptography and rsync (unseal, push)", packages=["python3-cryptography", "rsync"])
    ensure_model_user()
    code = install_runtime(MODULES)
    files.directory(name="Unseal settings", path=CONFIG_DIR, user="root", group="root", mode="0755")
    files.directory(name="Sealed models (ciphertext, root only)", path=HOST_STORE, user="root",
                    group="root", mode="0700")
    unit = files.put(name=f"Unit {UNIT}", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    if unit._maybe_is_change:  # noqa: SLF001
        systemd.daemon_reload(name="Reload systemd units")
    if not models:
        return
    access = vault_access()
    keys = Keys(Store(access.client, site.vault.kv_mount), site.vault.transit_mount).public_key_pem(all_versions=True)
    pinned = files.put(name="Public keys of model-signing (signature checks, offline)", src=io.BytesIO(keys),
                       dest=PUBLIC_KEYS, user="root", group="root", mode="0644")
    common = any(op._maybe_is_change for op in [*code, unit, pinned])  # noqa: SLF001
    for model, revision in models:
        healthy = _health(model)
        changed = _model(site, access, model, revision, healthy)
        # Template instances are not in pyinfra's facts of enabled units: the link is what
        # `systemctl enable` makes, and the state is read directly.
        files.link(name=f"{unit_name(model)} enabled at boot", path=f"/etc/systemd/system/multi-user.target.wants/"
                   f"{unit_name(model)}", target=f"/etc/systemd/system/{UNIT}")
        if changed or common or not healthy:
            server.shell(name=f"Unseal {model} into RAM ({unit_name(model)})",
                         commands=[f"systemctl restart {unit_name(model)} || {{ journalctl -u {unit_name(model)} "
                                   f"-n 5 --no-pager -o cat >&2; exit 1; }}"])


ROLE = Role(name="model-store", summary="Sealed models pushed to GPU hosts, unsealed into RAM", groups=("gpu",),
            apply=apply)
