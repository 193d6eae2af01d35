"""Open the sealed model store's LUKS2 volume and mount it: run by ``citadel-store-unlock.service``.

The optional second layer under ``/var/lib/citadel/models`` (the sealed files are already
AES-256-GCM ciphertext): a LUKS2 volume on a dedicated device or on a file-backed image,
whose 256-bit volume key exists on the host only wrapped by Vault's transit key
``store-volume`` (``/etc/citadel/models/store-volume.wrapped``). At boot this module:

1. unwraps the key through transit ``decrypt`` with the host's own token (the agent's
   sink), exactly as ``citadel_runtime.unseal`` unwraps a model's data key (both through
   ``citadel_runtime.transit``): at boot it waits, one journal line per wait, while the
   agent has no token yet or Vault cannot answer, for as long as it takes;
   ``--wait-seconds N`` or the settings' ``wait_seconds`` bound the wait;
2. hands it to ``cryptsetup open`` on stdin (never argv, never a file);
3. makes an ext4 filesystem if the volume holds none yet (first use), and mounts it at the
   store, ``nosuid,nodev,noexec``, the store's root 0700 root.

The deploy (roles/store_volume) runs the same code with ``--key-stdin``: the controller
unwraps the key and pipes it in, so a host is set up even before its agent has a token.
``--format`` also formats a device or image that holds nothing at all, and refuses anything
else. The lab VM runs the whole boot path under systemd (tests/vm/test_vm_hardening.py).

What ``cryptsetup`` is given as the key-slot passphrase is the key's 64 hex digits, read
with ``--keyfile-size=64``: text, so it crosses pyinfra's line-oriented stdin unchanged, and
exactly 64 bytes, so a trailing newline is never part of it.

Threat: theft of model weights at rest (a disk, an image or a backup copied off the host).

Example (what the unit runs; settings in ``/etc/citadel/models/store-volume.settings``)::

    python3 -m citadel_runtime.store_unlock              # boot: unwrap through Vault, open, mount
    python3 -m citadel_runtime.store_unlock --wait-seconds 60  # the same, giving up after a minute of waiting
    python3 -m citadel_runtime.store_unlock --key-stdin  # deploy: key (hex) on stdin
    python3 -m citadel_runtime.store_unlock --stop       # unmount and close
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from citadel_runtime import transit
from citadel_runtime.layout import STORE_VOLUME_SETTINGS
from citadel_runtime.waits import Terminated, journal, raise_on_sigterm, wait_seconds_option

SETTINGS = Path(STORE_VOLUME_SETTINGS)
KEY_HEX_LENGTH = 64  # 32 bytes, as hex: the passphrase of the LUKS key slot
MOUNT_OPTIONS = "nosuid,nodev,noexec"
FILESYSTEM = "ext4"
LABEL = "citadel-store"
REQUIRED = {"backing", "mapper", "mount", "wrapped_file", "transit_key", "vault_address", "vault_ca", "token_file",
            "transit_mount"}
# A random 256-bit key needs no stretching to resist guessing; argon2id is kept (LUKS2's
# default) with memory bounded so small hosts and the lab VM do not swap or OOM on open.
PBKDF = ("--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--pbkdf-parallel", "1")


class StoreError(Exception):
    """A refusal, worded for the journal or the deploy's error; never carries a secret."""


def load_settings(path: Path = SETTINGS) -> dict:
    from citadel_runtime.unseal import read_settings

    return read_settings(path, REQUIRED, "store-volume", StoreError)


def passphrase(key: bytes) -> bytes:
    """What the key slot holds: the 32-byte volume key as 64 lower-case hex digits."""
    if len(key) != 32:
        raise StoreError("the volume key is not 32 bytes")
    return key.hex().encode()


def read_key_stdin(stream) -> bytes:
    """The passphrase the deploy pipes in (64 hex digits, a newline allowed after it)."""
    text = stream.read(KEY_HEX_LENGTH + 2).strip()
    if not re.fullmatch(rb"[0-9a-f]{%d}" % KEY_HEX_LENGTH, text):
        raise StoreError(f"expected the volume key as {KEY_HEX_LENGTH} hex digits on stdin")
    return text


def open_command(backing: str, mapper: str) -> list[str]:
    """``cryptsetup open`` reading exactly the passphrase from stdin (a file backing gets a loop device)."""
    return ["cryptsetup", "open", "--type", "luks2", "--key-file=-", f"--keyfile-size={KEY_HEX_LENGTH}", backing, mapper]


def format_command(backing: str) -> list[str]:
    return ["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", *PBKDF, "--key-file=-",
            f"--keyfile-size={KEY_HEX_LENGTH}", backing]


def mount_command(mapper: str, mount: str) -> list[str]:
    return ["mount", "-t", FILESYSTEM, "-o", MOUNT_OPTIONS, f"/dev/mapper/{mapper}", mount]


def mount_entry(mount: str, mountinfo: str) -> tuple[str, set[str]] | None:
    """(source, mount options) of the last mount at `mount` in /proc/self/mountinfo text, or None."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or fields[4] != mount or "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        found = (fields[dash + 2], set(fields[5].split(",")))  # the last one is on top
    return found


def signature(device: str) -> dict[str, str]:
    """What ``blkid -p`` finds on `device` (TYPE, VERSION, PTTYPE...); empty when nothing is there."""
    done = subprocess.run(["blkid", "-p", "-o", "export", device], capture_output=True, text=True)
    if done.returncode == 2:  # nothing recognised
        return {}
    if done.returncode != 0:
        raise StoreError(f"cannot probe {device}: {done.stderr.strip() or 'blkid failed'}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def refuse_unless_empty(backing: str, found: dict[str, str]) -> None:
    """Formatting destroys what is there: only a device or image with no signature at all qualifies."""
    what = found.get("TYPE") or (f"{found['PTTYPE']} partition table" if found.get("PTTYPE") else "")
    if what:
        raise StoreError(f"{backing} holds a {what}, not an empty device: refusing to format it (Citadel formats "
                         "only a device with no signature; wipe it yourself with `wipefs -a` if it is really spare)")


def _run(argv: list[str], what: str, stdin: bytes | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True)
    if done.returncode != 0:
        # cryptsetup's and mount's messages name devices, never the key (it came on stdin).
        raise StoreError(f"{what} failed: {done.stderr.decode(errors='replace').strip() or f'exit {done.returncode}'}")


def make_image(path: str, size: int) -> None:
    """The file-backed volume's image, root only; allocated, so a full disk shows now, not later."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)  # /var/lib/citadel: before model-store
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise StoreError(f"cannot allocate {size} bytes for {path}: {exc.strerror}") from None
    os.close(fd)


def format_volume(settings: dict, key: bytes) -> None:
    backing = settings["backing"]
    if settings.get("image_size") and not os.path.exists(backing):
        make_image(backing, int(settings["image_size"]))
    if not os.path.exists(backing):
        raise StoreError(f"{backing} does not exist")
    found = signature(backing)
    if found.get("TYPE") == "crypto_LUKS":
        return  # formatted already (a re-run): never again
    refuse_unless_empty(backing, found)
    _run(format_command(backing), f"luksFormat of {backing}", key)


def open_volume(settings: dict, key: bytes) -> None:
    if not os.path.exists(f"/dev/mapper/{settings['mapper']}"):
        _run(open_command(settings["backing"], settings["mapper"]), f"opening {settings['backing']}", key)


def unwrap_key(settings: dict, wait_seconds: float | None = None) -> bytes:
    """The passphrase, from Vault with the host's own token; waits while that cannot happen yet (see transit)."""
    try:
        wrapped = Path(settings["wrapped_file"]).read_text().strip()
    except OSError as exc:
        raise StoreError(f"no wrapped volume key at {settings['wrapped_file']} ({exc.strerror})") from None
    try:
        return passphrase(transit.unwrap(settings, wrapped, settings["transit_key"], key_name="the volume key",
                                         wait_seconds=wait_seconds, log=lambda line: journal(f"store volume: {line}")))
    except transit.TransitError as exc:
        raise StoreError(str(exc)) from None


def _migrate(device: str, mount: str) -> None:
    """Files already in the store's directory (deployed before the volume) move onto the volume."""
    import tempfile

    scratch = tempfile.mkdtemp(prefix="citadel-store-", dir="/run")
    _run(["mount", "-t", FILESYSTEM, "-o", MOUNT_OPTIONS, device, scratch], f"mounting {device}")
    try:
        _run(["cp", "-a", "--", f"{mount}/.", scratch], f"copying {mount} onto the volume")
        _run(["find", mount, "-mindepth", "1", "-delete"], f"emptying {mount} (now on the volume)")
    finally:
        subprocess.run(["umount", scratch], check=False)
        os.rmdir(scratch)


def mount_store(settings: dict, mountinfo: str | None = None) -> str:
    mapper, mount = settings["mapper"], settings["mount"]
    device = f"/dev/mapper/{mapper}"
    if not signature(device):  # first use: nothing on the opened volume yet
        _run(["mkfs.ext4", "-q", "-L", LABEL, "-m", "0", device], f"mkfs.{FILESYSTEM} on {device}")
    entry = mount_entry(mount, mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text())
    if entry is None:
        os.makedirs(mount, mode=0o700, exist_ok=True)
        if os.listdir(mount):
            _migrate(device, mount)
        _run(mount_command(mapper, mount), f"mounting {device} at {mount}")
        done = "mounted"
    elif os.path.realpath(entry[0]) != os.path.realpath(device):
        raise StoreError(f"{mount} is a mount of {entry[0]}, not of {device}: unmount it first")
    elif not set(MOUNT_OPTIONS.split(",")) <= entry[1]:
        _run(["mount", "-o", f"remount,{MOUNT_OPTIONS}", mount], f"remounting {mount}")
        done = "remounted"
    else:
        done = "already mounted"
    os.chown(mount, 0, 0)
    os.chmod(mount, 0o700)
    return f"{device} {done} at {mount} ({MOUNT_OPTIONS})"


def stop(settings: dict) -> str:
    mount, mapper = settings["mount"], settings["mapper"]
    if mount_entry(mount, Path("/proc/self/mountinfo").read_text()) is not None:
        _run(["umount", mount], f"unmounting {mount}")
    if os.path.exists(f"/dev/mapper/{mapper}"):
        _run(["cryptsetup", "close", mapper], f"closing {mapper}")
    return f"{mount} unmounted, {mapper} closed"


def main(argv: list[str] | None = None) -> int:
    usage = "usage: python3 -m citadel_runtime.store_unlock [--wait-seconds N | --key-stdin [--format] | --stop]"
    try:
        args, wait_seconds = wait_seconds_option(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"{exc}\n{usage}", file=sys.stderr)
        return 2
    known = {"--key-stdin", "--format", "--stop"}
    if set(args) - known or ("--format" in args and "--key-stdin" not in args) or ("--stop" in args and len(args) > 1):
        print(usage, file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        if "--stop" in args:
            print(f"store volume: {stop(settings)}")
            return 0
        raise_on_sigterm()  # a stop while it waits ends with one line, not a traceback
        if "--key-stdin" in args:
            key = read_key_stdin(sys.stdin.buffer)
        else:
            key = unwrap_key(settings, wait_seconds)
            # Where the key came from, for the journal (boot): the deploy pipes it in instead.
            journal(f"store volume: volume key unwrapped through Vault at {settings['vault_address']} "
                    f"(transit key {settings['transit_key']})")
        try:
            if "--format" in args:
                format_volume(settings, key)
            open_volume(settings, key)
        finally:
            del key
        print(f"store volume: {mount_store(settings)}")
        return 0
    except StoreError as exc:
        print(f"store volume: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # one journal line, not a traceback
        print(f"store volume: {exc.strerror} ({exc.filename})", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"store volume: {exc} before the volume was mounted", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
