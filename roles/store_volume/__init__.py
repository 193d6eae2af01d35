"""The ``store-volume`` role: the sealed model store on a LUKS2 volume, its key held by Vault.

An optional second layer (the sealed files are AES-256-GCM ciphertext already), for GPU
hosts whose inventory entry asks for it, on a dedicated device or on a file-backed image::

    hosts:
      gpu-01:
        groups: [gpu]
        model_store:
          luks: {device: /dev/disk/by-id/nvme-SAMSUNG_MZ1L23T8-S6EXNE0T123456}   # a spare disk
      gpu-02:
        groups: [gpu]
        model_store:
          luks: {image_size: 200G}   # /var/lib/citadel/store-volume.img, loop-mounted

For such a host it:

- makes the volume key once: 32 bytes from transit's ``datakey`` on key ``store-volume``
  (Vault's random generator; the plaintext is held only in this process's memory and
  registered for redaction) and keeps only the wrapped form: on the host
  (``/etc/citadel/models/store-volume.wrapped``, 0600 root) and, for recovery, in KV at
  ``admin/store-volume/<host>`` (operators only; hosts' policies read ``gpu/*``);
- formats the device or image as LUKS2 only when it holds no signature at all; a LUKS
  volume that exists is never formatted again, and a device holding anything else (a
  filesystem, a partition table, LUKS1) is refused with an error naming host and device;
- opens it when closed: this controller unwraps the key through Vault and pipes it to
  ``citadel_runtime.store_unlock --key-stdin`` on the host (the SSH channel's stdin; never a
  command line, never a file), which opens it, makes the ext4 filesystem on first use and
  mounts it at ``/var/lib/citadel/models`` (nosuid, nodev, noexec; 0700 root), moving in
  any sealed copies already there;
- installs ``citadel-store-unlock.service``, which does the same at boot with the host's
  own token (decrypt on ``store-volume`` only), before ``citadel-unseal@*``.

Hosts without ``model_store.luks`` are left alone. Turning it off later does not tear a
volume down; a second deploy changes nothing. Audited by ``models-store-volume-encrypted``
(``hardening/controls/store_volume.py``).

Threat: theft of model weights at rest (a disk, an image or a backup copied off the host).

Example::

    citadel deploy -i site.yaml --role store-volume --role model-store
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import apt, files, python, systemd

from citadel_runtime.layout import (
    MODEL_CONFIG_DIR,
    MODEL_STORE,
    RUN_MODULE,
    STORE_VOLUME_IMAGE,
    STORE_VOLUME_MAPPER,
    STORE_VOLUME_SETTINGS,
    STORE_VOLUME_TRANSIT_KEY,
    STORE_VOLUME_WRAPPED,
)
from citadel_runtime.store_unlock import passphrase
from deploy.models.keys import vault_step
from deploy.redaction import Secret, redact, register
from deploy.secrets.store import Store
from roles import Role
from roles.facts import StoreVolumeState
from roles.ops.pyinfra_private import will_change
from roles.ops.runtime import install_runtime
from roles.vault_agent import vault_access
from roles.vault_agent.templates import CONFIG_ROOT, SPECS

UNIT = "citadel-store-unlock.service"
MODULES = ("__init__.py", "layout.py", "store_unlock.py", "transit.py", "unseal.py", "waits.py")
KV_PREFIX = "admin/store-volume"  # operators only: the recovery copy of each host's wrapped key


def volume_settings(site, host_name: str) -> dict:
    """What ``citadel_runtime.store_unlock`` reads on the host (no secret: paths, names, Vault's address)."""
    luks = site.hosts[host_name].model_store.luks
    return {
        "backing": luks.device or STORE_VOLUME_IMAGE, "image_size": luks.image_bytes, "mapper": STORE_VOLUME_MAPPER,
        "mount": MODEL_STORE, "wrapped_file": STORE_VOLUME_WRAPPED, "transit_key": STORE_VOLUME_TRANSIT_KEY,
        "vault_address": str(site.vault.address).rstrip("/"), "vault_ca": f"{CONFIG_ROOT}/gpu/vault-ca.pem",
        "token_file": SPECS["gpu"].sink, "transit_mount": site.vault.transit_mount,
    }


def judge(state: dict, backing: str, host_name: str) -> dict:
    """What the volume needs: {"format": bool, "open": bool, "mount": bool}; raises on a device it must not touch."""
    where = f"{host_name}: {backing}"
    kind = state.get("TYPE", "")
    if state.get("backing") != "present" and not backing.startswith(STORE_VOLUME_IMAGE):
        raise OperationError(f"{where} does not exist (hosts.{host_name}.model_store.luks.device)")
    if kind == "crypto_LUKS" and state.get("VERSION", "2").split(".")[0] != "2":
        raise OperationError(f"{where} is a LUKS{state.get('VERSION')} volume, not LUKS2: Citadel does not convert "
                             "it; name a spare device instead")
    if kind and kind != "crypto_LUKS" or state.get("PTTYPE"):
        what = kind or f"{state['PTTYPE']} partition table"
        raise OperationError(f"{where} holds a {what}, not a LUKS volume: refusing to format it (Citadel formats only "
                             f"a device with no signature; name a spare device in hosts.{host_name}.model_store.luks)")
    mount = state.get("mount", "").split()
    options = set(mount[1].split(",")) if len(mount) > 1 else set()
    mounted = mount[:1] == [f"/dev/mapper/{STORE_VOLUME_MAPPER}"] and {"nosuid", "nodev", "noexec"} <= options
    return {"format": kind != "crypto_LUKS", "open": state.get("open") != "yes",
            "mount": not mounted or state.get("mode") != "700 root"}


def _new_key(access, site, host_name: str):
    """(passphrase as a Secret, wrapped) from one ``datakey`` call; the plaintext masked in all output first."""
    with vault_step(f"new volume key from transit key {STORE_VOLUME_TRANSIT_KEY}"):
        data = access.client.secrets.transit.generate_data_key(
            STORE_VOLUME_TRANSIT_KEY, "plaintext", mount_point=site.vault.transit_mount)["data"]
    register(data["plaintext"])
    raw = base64.b64decode(data["plaintext"])
    secret = Secret(passphrase(raw).decode())
    path = f"{KV_PREFIX}/{host_name}"
    with vault_step(f"KV {path}"):
        store = Store(access.client, site.vault.kv_mount)
        _, version = store.read(path)
        store.write(path, {"wrapped_key": data["ciphertext"], "transit_key": STORE_VOLUME_TRANSIT_KEY}, version)
    return secret, data["ciphertext"]


def _unwrap(access, site, wrapped: str):
    with vault_step(f"unwrapping the volume key with transit key {STORE_VOLUME_TRANSIT_KEY}"):
        data = access.client.secrets.transit.decrypt_data(STORE_VOLUME_TRANSIT_KEY, wrapped,
                                                          mount_point=site.vault.transit_mount)["data"]
    register(data["plaintext"])
    return Secret(passphrase(base64.b64decode(data["plaintext"])).decode())


def _wrapped_on_host(access, site) -> str:
    """The host's wrapped key; put back from KV's copy when the host lost it."""
    ok, output = host.run_shell_command(f"cat {STORE_VOLUME_WRAPPED} 2>/dev/null", _sudo=True, print_output=False)
    wrapped = "".join(output.stdout_lines).strip() if ok else ""
    if wrapped:
        return wrapped
    path = f"{KV_PREFIX}/{host.name}"
    with vault_step(f"KV {path}"):
        doc, _ = Store(access.client, site.vault.kv_mount).read(path)
    if not doc or not doc.get("wrapped_key"):
        raise OperationError(f"{host.name}: the store volume is LUKS but its wrapped key is neither in "
                             f"{STORE_VOLUME_WRAPPED} nor in KV {path}: it cannot be opened (restore the key, "
                             "or wipe the volume)")
    _put_wrapped(doc["wrapped_key"])
    return doc["wrapped_key"]


def _put_wrapped(wrapped: str) -> None:
    command = (f"umask 077 && cat > {STORE_VOLUME_WRAPPED}.new && chown root:root {STORE_VOLUME_WRAPPED}.new && "
               f"mv -f {STORE_VOLUME_WRAPPED}.new {STORE_VOLUME_WRAPPED}")
    ok, output = host.run_shell_command(command, _stdin=wrapped + "\n", _sudo=True)
    if not ok:
        raise OperationError(f"{host.name}: could not write {STORE_VOLUME_WRAPPED}: {output.stderr}")


def _unlock(site, access, formatting: bool) -> None:
    """At execution: a key (new, or unwrapped by this controller), piped to the host's store_unlock."""
    if formatting:
        secret, wrapped = _new_key(access, site, host.name)
        _put_wrapped(wrapped)  # before formatting: a volume whose key is lost is never made
    else:
        secret = _unwrap(access, site, _wrapped_on_host(access, site))
    flags = "--key-stdin --format" if formatting else "--key-stdin"
    ok, output = host.run_shell_command(f"{RUN_MODULE} citadel_runtime.store_unlock {flags}", _stdin=secret.reveal(),
                                        _sudo=True, print_output=False)
    del secret
    if not ok:
        raise OperationError(redact(f"{host.name}: {output.stderr.strip() or 'store_unlock failed'}"))


@deploy("Citadel store volume")
def apply() -> None:
    site = host.data.citadel_site
    luks = site.hosts[host.name].model_store.luks
    if luks is None:
        return
    settings = volume_settings(site, host.name)
    backing = settings["backing"]
    # First, before any operation: a device it must not touch stops the host here.
    state = host.get_fact(StoreVolumeState, backing=backing, mapper=STORE_VOLUME_MAPPER, mountpoint=MODEL_STORE,
                          wrapped_key=STORE_VOLUME_WRAPPED, _sudo=True)
    needs = judge(state, backing, host.name)
    apt.packages(name="cryptsetup (LUKS2)", packages=["cryptsetup-bin"])
    code = install_runtime(MODULES)
    files.directory(name="Model store settings", path=MODEL_CONFIG_DIR, user="root", group="root", mode="0755")
    # Its presence is what makes the control apply to this host.
    config = files.put(name="models-store-volume-encrypted: store volume settings",
                       src=io.StringIO(json.dumps(settings, indent=2) + "\n"), dest=STORE_VOLUME_SETTINGS,
                       user="root", group="root", mode="0600")
    unit = files.put(name=f"Unit {UNIT}", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    if will_change(unit):
        systemd.daemon_reload(name="Reload systemd units")
    # What `systemctl enable` makes; not started here: the deploy opens the volume itself.
    files.link(name=f"models-store-volume-encrypted: {UNIT} enabled at boot (opens the volume at boot)",
               path=f"/etc/systemd/system/multi-user.target.wants/{UNIT}", target=f"/etc/systemd/system/{UNIT}")
    if needs["format"] or needs["open"] or needs["mount"]:
        what = "format, open and mount" if needs["format"] else "open and mount" if needs["open"] else "mount"
        python.call(name=f"models-store-volume-encrypted: store volume {backing}: {what} at {MODEL_STORE} "
                         "(key from Vault, on stdin)",
                    function=_unlock, site=site, access=vault_access(), formatting=needs["format"])
    else:
        files.file(name="Wrapped volume key, root only", path=STORE_VOLUME_WRAPPED, user="root", group="root",
                   mode="0600")
    del code, config  # settings and code are read at each run of store_unlock: nothing to restart


ROLE = Role(name="store-volume", summary="Optional LUKS2 volume for the sealed model store, key wrapped by Vault",
            groups=("gpu",), apply=apply)
