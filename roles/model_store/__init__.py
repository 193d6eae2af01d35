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
  unwraps the data key through Vault with the host's own token (from the
  vault-agent role's sink) and decrypts into a tmpfs at ``/run/citadel/models/NAME``
  (0700, the model service's user, nosuid, nodev, noexec); the model server starts after it.

A model that fails its checks keeps the unit from starting; the journal says why, and so
does ``citadel audit`` (``hardening/controls/model_store.py``).

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
from pyinfra.facts.files import Sha256File
from pyinfra.operations import apt, files, python, server, systemd

import citadel_runtime
from citadel_runtime.layout import MODEL_CONFIG_DIR, MODEL_MOUNT_ROOT, MODEL_PUBLIC_KEYS, MODEL_STORE, MODEL_USER
from deploy.models import ModelError
from deploy.models.keys import Keys
from deploy.models.location import ENV
from deploy.models.push import host_dir, push_models
from deploy.secrets.store import Store
from deploy.steps import sent_bytes
from roles import Role
from roles.facts import UnitAndMount
from roles.model_store.user import ensure_model_user
from roles.ops.pyinfra_private import will_change
from roles.ops.runtime import install_runtime
from roles.vault_agent import vault_access
from roles.vault_agent.templates import CONFIG_ROOT, SPECS

UNIT = "citadel-unseal@.service"
DEPLOY_UNSEAL_WAIT = 1800  # seconds a deploy waits for an unseal: decrypting a large model takes minutes
MODULES = ("__init__.py", "layout.py", "transit.py", "unseal.py", "waits.py",
           *sorted(p.name for p in Path(citadel_runtime.__file__).parent.glob("sealed*.py")))


def unit_name(model: str) -> str:
    return f"citadel-unseal@{model}.service"


def mount_point(model: str) -> str:
    return f"{MODEL_MOUNT_ROOT}/{model}"


def unseal_config(site, model: str, revision: str) -> dict:
    return {
        "model": model, "revision": revision, "sealed_dir": host_dir(model, revision), "mount": mount_point(model),
        "user": MODEL_USER, "vault_address": str(site.vault.address).rstrip("/"),
        "vault_ca": f"{CONFIG_ROOT}/gpu/vault-ca.pem", "token_file": SPECS["gpu"].sink,
        "transit_mount": site.vault.transit_mount, "public_keys": MODEL_PUBLIC_KEYS,
    }


def _store() -> Path | None:
    return Path(os.environ[ENV]) if os.environ.get(ENV) else None


def _push(site, store: Path, model: str) -> None:
    try:
        push_models(site, store, hosts=[host.name], models=[model], progress=sent_bytes(f"push sealed {model}"))
    except ModelError as exc:
        raise OperationError(str(exc)) from None


def _health(model: str) -> bool:
    """Unsealed: the unit is active and its tmpfs has the options it was mounted with."""
    state = host.get_fact(UnitAndMount, unit=unit_name(model), mountpoint=mount_point(model))
    return state.active and {"nosuid", "nodev", "noexec"} <= state.options


def _model(site, access, model: str, revision: str, healthy: bool) -> bool:
    """Operations for one model; True when the sealed copy or its settings change (re-unseal)."""
    sealed = host_dir(model, revision)
    remote = host.get_fact(Sha256File, path=f"{sealed}/manifest.json", _sudo=True)
    store = _store()
    local = store / model / revision / "manifest.json" if store else None
    if local is not None and local.is_file():
        wanted = hashlib.sha256(local.read_bytes()).hexdigest()
        stale = remote != wanted
        if stale or not healthy:  # a failed unseal may be a damaged copy: rsync re-sends what differs
            python.call(name=f"models-no-plaintext-on-disk: push sealed {model}/{revision} (rsync, resumable)",
                        function=_push, site=site, store=store, model=model)
    elif remote is None:
        raise OperationError(
            f"model {model} revision {revision} is neither on {host.name} nor in a local store: set "
            f"CITADEL_MODEL_STORE to the store `citadel model seal` wrote, or run `citadel model push`"
        )
    else:
        stale = False
    # Where and for whom it is unsealed (the tmpfs's owner), and the keys its signature is checked with.
    config = files.put(name=f"models-unseal-mount, models-served-signed: unseal settings of {model}",
                       src=io.StringIO(json.dumps(unseal_config(site, model, revision), indent=2) + "\n"),
                       dest=f"{MODEL_CONFIG_DIR}/{model}.json", user="root", group="root", mode="0600")
    return stale or will_change(config)


@deploy("Citadel model store")
def apply() -> None:
    site = host.data.citadel_site
    models = [(m, site.models[m].revision) for m in site.hosts[host.name].models]
    apt.packages(name="python3-cryptography and rsync (unseal, push)", packages=["python3-cryptography", "rsync"])
    ensure_model_user()
    # unseal.py mounts the private tmpfs and checks the signature before any byte is decrypted.
    code = install_runtime(MODULES, fixes={"unseal.py": "models-unseal-mount, models-served-signed"})
    files.directory(name="Unseal settings", path=MODEL_CONFIG_DIR, user="root", group="root", mode="0755")
    files.directory(name="models-no-plaintext-on-disk: sealed models (ciphertext, root only)", path=MODEL_STORE,
                    user="root", group="root", mode="0700")
    unit = files.put(name=f"Unit {UNIT}", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    if will_change(unit):
        systemd.daemon_reload(name="Reload systemd units")
    if not models:
        return
    access = vault_access()
    keys = Keys(Store(access.client, site.vault.kv_mount), site.vault.transit_mount).public_key_pem(all_versions=True)
    pinned = files.put(name="models-served-signed: public keys of model-signing (signature checks, offline)",
                       src=io.BytesIO(keys), dest=MODEL_PUBLIC_KEYS, user="root", group="root", mode="0644")
    common = any(will_change(op) for op in [*code, unit, pinned])
    for model, revision in models:
        healthy = _health(model)
        changed = _model(site, access, model, revision, healthy)
        # Template instances are not in pyinfra's facts of enabled units: the link is what
        # `systemctl enable` makes, and the state is read directly.
        files.link(name=f"{unit_name(model)} enabled at boot", path=f"/etc/systemd/system/multi-user.target.wants/"
                   f"{unit_name(model)}", target=f"/etc/systemd/system/{UNIT}")
        if changed or common or not healthy:
            # A fresh unseal: a new tmpfs, the signature and every file checked again. The unit
            # has no start limit (at boot it waits for Vault as long as Vault is away): the
            # deploy stops waiting after DEPLOY_UNSEAL_WAIT and shows the unit's last lines
            # ("waiting for ..."), while the unit carries on by itself.
            server.shell(name=f"models-unseal-mount, models-served-signed, vllm-serves-signed-model: unseal {model} "
                         f"into RAM ({unit_name(model)})",
                         commands=[f"timeout {DEPLOY_UNSEAL_WAIT} systemctl restart {unit_name(model)} || "
                                   f"{{ journalctl -u {unit_name(model)} "
                                   f"-n 5 --no-pager -o cat >&2; exit 1; }}"])


ROLE = Role(name="model-store", summary="Sealed models pushed to GPU hosts, unsealed into RAM", groups=("gpu",),
            apply=apply)
