"""SSH keys for lab hosts: the controller's key pair, pinned host keys, authorized_keys.

Uses ``ssh-keygen`` (openssh-client) through subprocess with list arguments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy.lab.errors import LabError

HOST_KEY_NAME = "ssh_host_ed25519_key"


def _ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise LabError(
            "ssh-keygen was not found: install the openssh-client package (apt-get install -y openssh-client)."
        )
    return path


def _generate(private_key: Path, comment: str) -> None:
    private_key.parent.mkdir(parents=True, exist_ok=True)
    for path in (private_key, private_key.with_name(private_key.name + ".pub")):
        path.unlink(missing_ok=True)
    result = subprocess.run(
        [_ssh_keygen(), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private_key)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LabError(f"ssh-keygen could not create {private_key}: {result.stderr.strip()}")


def ensure_controller_key(lab_dir: Path) -> Path:
    """Return the controller's ed25519 private key at ``lab_dir/ssh/id_ed25519``, creating it if needed.

    The directory is 0700 and the private key 0600. An existing key pair is reused.
    """
    ssh_dir = Path(lab_dir) / "ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    private_key = ssh_dir / "id_ed25519"
    public_key = ssh_dir / "id_ed25519.pub"
    if not (private_key.is_file() and public_key.is_file()):
        _generate(private_key, "citadel-lab-controller")
    os.chmod(private_key, 0o600)
    os.chmod(public_key, 0o644)
    return private_key


def public_key_line(private_key: Path) -> str:
    """The "ssh-ed25519 AAAA..." line (type and key, no comment) of a private key's .pub file."""
    pub = Path(str(private_key) + ".pub")
    parts = pub.read_text().split()
    return f"{parts[0]} {parts[1]}"


def generate_host_keys(etc_ssh: Path) -> str:
    """Write a fresh ed25519 host key into ``etc_ssh`` and remove every other host key.

    sshd then only offers the pinned key. Returns the public key line "ssh-ed25519 AAAA...".
    """
    etc_ssh = Path(etc_ssh)
    etc_ssh.mkdir(parents=True, exist_ok=True)
    for path in etc_ssh.glob("ssh_host_*_key*"):
        path.unlink()
    private_key = etc_ssh / HOST_KEY_NAME
    _generate(private_key, "citadel-lab-host")
    os.chmod(private_key, 0o600)
    os.chmod(etc_ssh / (HOST_KEY_NAME + ".pub"), 0o644)
    return public_key_line(private_key)


def write_authorized_key(home_ssh_dir: Path, pubkey_line: str, uid: int, gid: int) -> None:
    """Write ``authorized_keys`` with exactly ``pubkey_line`` into ``home_ssh_dir`` (dir 0700, file 0600)."""
    home_ssh_dir = Path(home_ssh_dir)
    home_ssh_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(home_ssh_dir, 0o700)
    os.chown(home_ssh_dir, uid, gid)
    target = home_ssh_dir / "authorized_keys"
    target.write_text(pubkey_line.strip() + "\n")
    os.chmod(target, 0o600)
    os.chown(target, uid, gid)
