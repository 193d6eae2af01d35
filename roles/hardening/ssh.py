"""Harden sshd from the SSH controls' own table, without ever locking the operator out.

Before key-only authentication and the group allowlist are applied, the connection pyinfra
is using is checked: its user must be in the admins group (this role adds it) and must have
an authorized key. If the change would cut the connection, the role refuses with a clear
message instead of applying it.
"""

from __future__ import annotations

import io

from pyinfra import host
from pyinfra.api import OperationError
from pyinfra.operations import files, server, systemd

from hardening.controls.ssh import SETTINGS, SSHD_CONFIG
from roles.facts import AuthorizedKeysPresent

ADMIN_GROUP = "citadel-admins"
# The banner files this role writes, and the control that reads each.
BANNERS = {"/etc/issue.net": "ssh-banner-text", "/etc/issue": "acct-issue-banner"}


# sshd re-executes itself on SIGHUP: its listening sockets close and reopen after the new
# process has read its configuration and keys, and `systemctl reload` returns before that. A
# login in that gap (the audit that follows a deploy) is refused, so the reload waits until
# every port sshd -T names has a listener other than the ones it had before (socket inodes).
RELOAD_AND_WAIT = r"""
# A socket-activated sshd (ssh.socket) starts per connection and reads its policy each time.
if systemctl is-active -q ssh.socket; then exit 0; fi
ports=$(sshd -T 2>/dev/null | awk '$1 == "port" {print $2}')
inodes() { ss -Hltne "sport = :$1" | grep -o 'ino:[0-9]*'; }
before=$(for p in $ports; do inodes "$p"; done)
systemctl reload ssh.service
for i in $(seq 120); do
  ready=yes
  for p in $ports; do
    now=$(inodes "$p")
    [ -n "$now" ] || ready=no
    for ino in $now; do printf '%s\n' "$before" | grep -qx "$ino" && ready=no; done
  done
  [ "$ready" = yes ] && exit 0
  sleep 0.5
done
echo "sshd has not reopened its port(s) $ports 60 s after its reload: see journalctl -u ssh" >&2
exit 1
"""


def sshd_config() -> str:
    """sshd keeps the first value it reads, so Citadel's policy comes before the Include."""
    lines = ["# Managed by Citadel (role hardening). Edits are overwritten; see hardening/controls/ssh.py."]
    lines += [f"{setting.option} {setting.value}" for setting in SETTINGS]
    lines += [
        f"allowgroups {ADMIN_GROUP}",
        "",
        "# Local additions may go in sshd_config.d; they cannot override the settings above.",
        "Include /etc/ssh/sshd_config.d/*.conf",
        "",
        "# Debian's defaults",
        "AcceptEnv LANG LC_*",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ]
    return "\n".join(lines) + "\n"


def check_no_lockout(ssh_user: str) -> None:
    """Refuse to apply key-only auth and AllowGroups if they would cut this connection."""
    if not host.get_fact(AuthorizedKeysPresent, user=ssh_user, _sudo=True):
        raise OperationError(
            f"refusing to make SSH key-only: user {ssh_user} has no ~/.ssh/authorized_keys on {host.name}, "
            "so this connection would be cut. Install the operator's key first."
        )


def apply(site, entry) -> None:
    ssh_user = site.ssh_for(host.name).user
    check_no_lockout(ssh_user)
    server.group(name="ssh-allow-groups: SSH administrators group", group=ADMIN_GROUP, system=True)
    server.user(
        name=f"ssh-allow-groups: {ssh_user} may log in over SSH (member of {ADMIN_GROUP})",
        user=ssh_user,
        groups=[ADMIN_GROUP],
        append=True,
    )
    banner = site.settings.login_banner.strip() + "\n"
    for path, control_id in BANNERS.items():
        files.put(name=f"{control_id}: login banner {path}", src=io.StringIO(banner), dest=path,
                  user="root", group="root", mode="0644")
    # One file for the whole table (hardening.controls.ssh.SETTINGS): it fixes every ssh-* row of it, plus the
    # AllowGroups line and the file's own mode, so its name gives the id prefix and the table.
    config = files.put(
        name="ssh-* (the sshd table), ssh-allow-groups, ssh-config-permissions: sshd policy",
        src=io.StringIO(sshd_config()),
        dest=SSHD_CONFIG,
        user="root",
        group="root",
        mode="0600",
    )
    files.directory(name="ssh-dir-permissions: /etc/ssh owned by root", path="/etc/ssh", user="root", group="root",
                    mode="0755")
    files.file(name="ssh-host-private-keys: SSH host key private to root", path="/etc/ssh/ssh_host_ed25519_key",
               user="root", group="root", mode="0600")
    server.shell(
        name="Validate sshd configuration",
        commands=["sshd -t"],
        _if=config.did_change,
    )
    systemd.service(name="sshd running", service="ssh", running=True)
    # The table's new values take effect for new logins only once sshd has reloaded.
    server.shell(name="ssh-* (the sshd table): reload sshd and wait for its new listener", commands=[RELOAD_AND_WAIT],
                 _if=config.did_change)
