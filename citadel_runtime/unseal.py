"""Unseal a sealed model into RAM for the model server: run by ``citadel-unseal@NAME.service``.

Steps, each of which stops the start with one clear line in the journal:

1. check the manifest's and the bundle's signatures offline against the pinned public
   keys (before asking Vault for anything: a tampered model costs no unwrap);
2. unwrap the data key through Vault's transit ``decrypt`` with this host's own token (the
   one ``citadel-agent@gpu`` keeps in its sink); the key stays in memory. At boot the agent
   may not have logged in yet, or Vault may be away: the unseal waits, with one journal
   line per wait, for as long as it takes (``citadel_runtime.transit`` lists what is waited
   out and what is refused at once); ``--wait-seconds N`` or the settings' ``wait_seconds``
   bound the wait;
3. mount a fresh tmpfs (mode 0700, owned by the model service's user, nosuid, nodev,
   noexec, sized to the model) and decrypt every file into it, checking every chunk's tag
   and every file's SHA-256;
4. hand the files to the model service's user (0400, directories 0700).

On any failure, and on SIGTERM (systemd stopping the unit, at any step), the tmpfs is
unmounted, which drops every byte written to it: no partial plaintext survives, and none
ever reaches persistent disk. ``--stop`` unmounts;
``--check`` (read-only, for ``citadel audit``) compares what is served with the signed
manifest.

Threats: theft of model weights at rest (only ciphertext on disk), model poisoning or
substitution (signature and tags checked before anything is served).

Example (what the unit runs; the settings are in ``/etc/citadel/models/NAME.json``)::

    python3 -m citadel_runtime.unseal llama-3-8b
    python3 -m citadel_runtime.unseal --wait-seconds 60 llama-3-8b   # gives up after a minute of waiting
    python3 -m citadel_runtime.unseal --stop llama-3-8b
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from citadel_runtime import transit
from citadel_runtime.layout import MODEL_CONFIG_DIR
from citadel_runtime.waits import Terminated, journal, raise_on_sigterm, wait_seconds_option

CONFIG_DIR = Path(MODEL_CONFIG_DIR)
HEADROOM = 16 << 20  # bytes of tmpfs beyond the model's plaintext size (directories, rounding)


class UnsealError(Exception):
    """A refusal, worded for the journal; never carries a secret."""


def read_settings(path: Path, required: set[str], role: str, error: type[Exception] = UnsealError,
                  what: str = "") -> dict:
    """The JSON object a role left at `path`, with every `required` key; else `error` saying what is wrong."""
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what}no {path} (deploy the {role} role)") from None
    except (OSError, ValueError) as exc:
        raise error(f"{what}{path} unreadable ({type(exc).__name__})") from None
    missing = required - set(settings) if isinstance(settings, dict) else required
    if missing:
        raise error(f"{what}{path} lacks {', '.join(sorted(missing))}")
    return settings


def load_config(name: str, config_dir: Path = CONFIG_DIR) -> dict:
    return read_settings(config_dir / f"{name}.json", {"model", "sealed_dir", "mount", "user", "vault_address",
                                                        "vault_ca", "token_file", "transit_mount", "public_keys"},
                         "model-store", what=f"model {name}: ")


def unwrap(config: dict, wrapped: str, transit_key: str, name: str, wait_seconds: float | None = None) -> bytes:
    """The data key, from Vault's transit decrypt with the host's own token. Never written anywhere.

    Waits (one journal line per wait) while the agent has no token yet or Vault cannot answer;
    what is waited out and what is refused at once: ``citadel_runtime.transit``.
    """
    try:
        return transit.unwrap(config, wrapped, transit_key, key_name="the data key", wait_seconds=wait_seconds,
                              log=lambda line: journal(f"model {name}: {line}"))
    except transit.TransitError as exc:
        raise UnsealError(str(exc)) from None


def is_mounted(mount: str) -> bool:
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == mount for line in handle)


def unmount(mount: str) -> None:
    if is_mounted(mount):
        subprocess.run(["umount", mount], check=True)


def mount_tmpfs(mount: str, size: int, uid: int, gid: int) -> None:
    parent = Path(mount).parent
    parent.mkdir(parents=True, exist_ok=True)
    # Traversable, not listable, whatever the unit's umask made them: the model server's
    # user must reach its mount; nobody needs to list which models a host serves.
    for directory in (parent, parent.parent):
        if str(directory).startswith("/run/citadel"):
            os.chmod(directory, 0o711)
    Path(mount).mkdir(mode=0o700, exist_ok=True)
    unmount(mount)  # a restart unseals afresh
    options = f"size={size},mode=0700,uid={uid},gid={gid},nosuid,nodev,noexec"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "citadel-model", mount],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise UnsealError(f"cannot mount the RAM-backed tmpfs at {mount}: {done.stderr.strip()}")


def hand_over(mount: str, uid: int, gid: int) -> None:
    """Give the decrypted tree to the model service's user: it reads, nobody else does."""
    # Bottom up: once a directory is the user's (0700), root without CAP_DAC_OVERRIDE cannot enter it.
    for root, dirs, names in os.walk(mount, topdown=False):
        for name in names + dirs:
            os.chown(os.path.join(root, name), uid, gid)
    os.chown(mount, uid, gid)


def run(name: str, config_dir: Path = CONFIG_DIR, wait_seconds: float | None = None) -> str:
    import pwd

    from citadel_runtime.sealed import SealError, read_manifest, unseal

    config = load_config(name, config_dir)
    keys = Path(config["public_keys"]).read_bytes()
    sealed, mount = config["sealed_dir"], config["mount"]
    try:
        user = pwd.getpwnam(config["user"])
    except KeyError:
        raise UnsealError(f"model service user {config['user']!r} does not exist") from None
    try:
        manifest = read_manifest(sealed, keys)  # 1: signatures, offline
    except SealError as exc:
        raise UnsealError(f"refused: {exc}") from None
    if manifest.model != config["model"] or (config.get("revision") and manifest.revision != config["revision"]):
        raise UnsealError(f"refused: {sealed} holds {manifest.model}/{manifest.revision}, "
                          f"not {config['model']}/{config.get('revision')} as the inventory assigns")
    key = unwrap(config, manifest.wrapped_key, manifest.transit_key, name, wait_seconds)  # 2
    size = sum(e.size for e in manifest.files) + HEADROOM
    try:
        # Root's while decrypting (this unit has no CAP_DAC_OVERRIDE to write into another
        # user's 0700 directory), the model user's once complete. Inside the try: a SIGTERM
        # right after the mount still unmounts.
        mount_tmpfs(mount, size, 0, 0)  # 3
        unseal(sealed, mount, key, keys)
        hand_over(mount, user.pw_uid, user.pw_gid)  # 4
    except BaseException as exc:
        unmount(mount)  # drops every byte written so far
        if isinstance(exc, SealError):
            raise UnsealError(f"refused: {exc}; nothing was left in {mount}") from None
        if isinstance(exc, OSError):
            raise UnsealError(f"failed: {exc.strerror} ({exc.filename}); nothing was left in {mount}") from None
        raise
    finally:
        del key
    return f"unsealed {manifest.model}/{manifest.revision} ({len(manifest.files)} files, {size - HEADROOM} bytes) into {mount}"


def check(name: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    """Read-only: problems with what is served for `name` (empty when it is the signed model).

    The signed manifest is checked against the pinned keys, then every unsealed file's
    SHA-256 against it, and nothing else may be in the mount.
    """
    import hashlib

    from citadel_runtime.sealed import SealError, read_manifest

    config = load_config(name, config_dir)
    mount = Path(config["mount"])
    try:
        manifest = read_manifest(config["sealed_dir"], Path(config["public_keys"]).read_bytes())
    except (SealError, OSError) as exc:
        return [f"the sealed copy does not verify: {exc}"]
    if not is_mounted(str(mount)):
        return [f"not unsealed: nothing is mounted at {mount}"]
    problems, listed = [], {e.path: e for e in manifest.files}
    for root, _, names in os.walk(mount):
        for file_name in names:
            relative = os.path.relpath(os.path.join(root, file_name), mount)
            entry = listed.pop(relative, None)
            if entry is None:
                problems.append(f"{relative}: not in the signed manifest")
                continue
            digest = hashlib.sha256()
            with open(os.path.join(root, file_name), "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            if digest.hexdigest() != entry.sha256:
                problems.append(f"{relative}: differs from the signed manifest (sha256)")
    problems += [f"{path}: missing" for path in sorted(listed)]
    return problems


def main(argv: list[str] | None = None) -> int:
    usage = "usage: python3 -m citadel_runtime.unseal [--wait-seconds N] MODEL | --stop MODEL | --check MODEL"
    try:
        args, wait_seconds = wait_seconds_option(list(sys.argv[1:] if argv is None else argv))
    except ValueError as exc:
        print(f"{exc}\n{usage}", file=sys.stderr)
        return 2
    stopping, checking = "--stop" in args, "--check" in args
    names = [a for a in args if not a.startswith("--")]
    if len(names) != 1 or len(args) != 1 + stopping + checking or (stopping and checking):
        print(usage, file=sys.stderr)
        return 2
    name = names[0]
    try:
        if checking:
            problems = check(name)
            for problem in problems:
                print(f"model {name}: {problem}")
            if not problems:
                print(f"model {name}: served files match the signed manifest")
            return 1 if problems else 0
        if stopping:
            unmount(load_config(name)["mount"])
            print(f"model {name}: unmounted; its plaintext is gone")
        else:
            raise_on_sigterm()  # a stop while it waits or decrypts unwinds through run()'s unmount
            print(f"model {name}: {run(name, wait_seconds=wait_seconds)}")
        return 0
    except UnsealError as exc:
        print(f"model {name}: {exc}", file=sys.stderr)
        return 1
    except Terminated as exc:
        print(f"model {name}: {exc} before the model was served; no plaintext was left behind", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
