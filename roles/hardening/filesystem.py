"""Apply the filesystem controls from their own tables (hardening/controls/filesystem.py).

One read-only fact gathers what the host looks like (container or not, which optional files
exist, set-id bits, fstab, loaded modules, active swap, current mount options, sudoers.d
drop-ins); every fix below is then a pyinfra operation that does nothing when the host
already complies, so a second deploy changes nothing.

What a container cannot change (its kernel is the lab machine's: loaded modules, active
swap) is still configured for boot, and reported as written-but-not-applied.
"""

from __future__ import annotations

import io
import logging
import shlex

from pyinfra import host
from pyinfra.operations import files, server, systemd

from hardening.controls.filesystem import (
    ABSENT,
    CITADEL_CONFIG,
    COREDUMP_CONTENT,
    COREDUMP_FILE,
    LIMITS_CONTENT,
    LIMITS_FILE,
    MODULES,
    MOUNT_OPTIONS,
    MOUNTS,
    PATHS,
    SUID_BLACKLIST,
    SWAP_TARGET_LINK,
    SYSTEM_CONTENT,
    SYSTEM_FILE,
    BlockedModule,
    MountPolicy,
    modprobe_file,
)
from roles.facts import FilesystemState
from roles.ops.pyinfra_private import will_change

logger = logging.getLogger(__name__)

# apt extracts packages' debconf config scripts to a temporary directory and runs them from
# there: with /tmp mounted noexec it needs a directory of its own.
APT_TMP_CONF = "/etc/apt/apt.conf.d/50citadel-extract-templates"
APT_TMP_DIR = "/var/cache/apt/citadel-extract"
APT_TMP_CONTENT = (
    "// Managed by Citadel: /tmp is mounted noexec, so debconf config scripts are extracted here.\n"
    f'APT::ExtractTemplates::TempDir "{APT_TMP_DIR}";\n'
)

_SWAP_NOTE = "disabled by Citadel: no swap (prompts and model weights stay in RAM)"


# ---------------------------------------------------------------------------- pure helpers


def modprobe_conf(group: str, modules: list[BlockedModule]) -> str:
    lines = [f"# Managed by Citadel (hardening/controls/filesystem.py): {group} this host never needs."]
    for mod in modules:
        lines += [f"install {mod.module} /bin/false", f"blacklist {mod.module}"]
    return "\n".join(lines) + "\n"


def blocked_modules(settings) -> dict[str, list[BlockedModule]]:
    """The modules to block per configuration file; a site setting can allow one (usb_storage)."""
    groups: dict[str, list[BlockedModule]] = {}
    for mod in MODULES:
        groups.setdefault(mod.group, [])
        if mod.setting is None or not getattr(settings, mod.setting, False):
            groups[mod.group].append(mod)
    return groups


MOUNT_OPTIONS_UNIT = "citadel-mount-options.service"
MOUNT_OPTIONS_UNIT_TEXT = (
    "# Managed by Citadel (role hardening). fstab says how /tmp and /dev/shm are mounted, but\n"
    "# whatever mounts them first at boot wins: systemd's own tmp.mount, or a container manager\n"
    "# (seen after a reboot in the lab: /tmp without noexec). This puts the options back, each boot.\n"
    "[Unit]\n"
    "Description=Citadel: /tmp and /dev/shm mounted nodev,nosuid,noexec, whatever mounted them\n"
    "After=local-fs.target tmp.mount dev-shm.mount\n"
    "\n"
    "[Service]\n"
    "Type=oneshot\n"
    "RemainAfterExit=yes\n"
    + "".join(f"ExecStart=/bin/sh -c 'mountpoint -q {m.mountpoint} && mount -o remount,{','.join(MOUNT_OPTIONS)} "
              f"{m.mountpoint} || true'\n" for m in MOUNTS)
    + "\n[Install]\nWantedBy=multi-user.target\n"
)


def rewrite_fstab(text: str, swap_off: bool, mounts: list[MountPolicy] = MOUNTS) -> str:
    """fstab with swap entries commented out and /tmp, /dev/shm carrying nodev,nosuid,noexec.

    Only those lines change; every other line is kept byte for byte. A mount point with no
    entry gets the policy's default tmpfs line. Applying it twice gives the same text.
    """
    by_mountpoint = {m.mountpoint: m for m in mounts}
    seen: set[str] = set()
    out: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            out.append(line)
            continue
        if swap_off and fields[2] == "swap":
            out.append(f"# {line}  # {_SWAP_NOTE}")
            continue
        if fields[1] in by_mountpoint:
            seen.add(fields[1])
            options = fields[3].split(",") if len(fields) > 3 else ["defaults"]
            kept = [o for o in options if o not in ("exec", "suid", "dev")]
            wanted = kept + [o for o in MOUNT_OPTIONS if o not in kept]
            if wanted != options:
                rest = fields[4:] if len(fields) > 4 else ["0", "0"]
                line = " ".join([*fields[:3], ",".join(wanted), *rest])
        out.append(line)
    for mount in mounts:
        if mount.mountpoint not in seen:
            out.append(mount.default_line)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- the role part


def _written_not_applied(what: str) -> None:
    message = f"{host.name}: {what}"
    logger.warning(message)
    host.noop(message)


def _paths(state: dict) -> None:
    for p in PATHS:
        what = f"{p.id}: {p.path} {p.owner}:{p.group} {p.mode}"
        if p.content is not None:
            files.put(name=what, src=io.StringIO(p.content), dest=p.path, user=p.owner, group=p.group, mode=p.mode)
        elif p.if_present and p.path not in state["exists"]:
            continue
        elif p.directory:
            files.directory(name=what, path=p.path, user=p.owner, group=p.group, mode=p.mode)
        else:
            files.file(name=what, path=p.path, user=p.owner, group=p.group, mode=p.mode)
    for a in ABSENT:
        files.file(name=f"{a.id}: no {a.path}", path=a.path, present=False)
    for path in state["writable"]:
        server.shell(name=f"fs-citadel-config-not-writable: {path} not writable by group or others",
                     commands=[f"chmod go-w {shlex.quote(path)}"])
    for path in state["setid"]:
        server.shell(name=f"fs-suid-blacklist: no set-id bit on {path}",
                     commands=[f"chmod u-s,g-s {shlex.quote(path)}"])


def _modules(site, state: dict, container: bool) -> None:
    changed = []
    for group, modules in blocked_modules(site.settings).items():
        # One file per group fixes the fs-module-<module>-blocked control of each of its MODULES rows.
        changed.append(files.put(
            name=f"fs-module-*-blocked: kernel modules blocked: {group}",
            src=io.StringIO(modprobe_conf(group, modules)), dest=modprobe_file(group), user="root", group="root", mode="0644",
        ))
    blocked = {m.module.replace("-", "_") for mods in blocked_modules(site.settings).values() for m in mods}
    loaded = [m for m in state["loaded"] if m in blocked]
    if container:
        if loaded:
            _written_not_applied(f"modules {', '.join(loaded)} are loaded in the parent's kernel; blocked for boot only")
        return
    if state["initramfs"]:
        server.shell(name="fs-module-*-blocked: blocked modules also kept out of the initramfs",
                     commands=["update-initramfs -u"],
                     _if=lambda: any(op.did_change() for op in changed))
    for module in loaded:
        server.shell(
            name=f"fs-modules-not-loaded: unload blocked module {module}",
            commands=[f"modprobe -r {module} || echo 'citadel: {module} is in use; it stays loaded until reboot' >&2"],
        )


def _core_dumps(site) -> None:
    if site.settings.core_dumps:
        logger.warning("%s: core dumps allowed by settings.core_dumps; the fs-core* controls will fail", host.name)
        host.noop("core dumps allowed by site.settings.core_dumps")
        return
    files.put(name="fs-core-dump-limits: no core dumps through PAM (root included)", src=io.StringIO(LIMITS_CONTENT),
              dest=LIMITS_FILE, user="root", group="root", mode="0644")
    # One drop-in holds every COREDUMP row's setting: fs-coredump-storage and fs-coredump-processsizemax.
    files.put(name="fs-coredump-storage, fs-coredump-processsizemax: systemd-coredump stores nothing",
              src=io.StringIO(COREDUMP_CONTENT), dest=COREDUMP_FILE, user="root", group="root", mode="0644")
    manager = files.put(name="fs-core-default-limit: services start with a core limit of 0",
                        src=io.StringIO(SYSTEM_CONTENT), dest=SYSTEM_FILE, user="root", group="root", mode="0644")
    # The manager reads system.conf only when it starts: re-execute it to apply the new default.
    server.shell(name="fs-core-default-limit: apply the manager's DefaultLimitCORE",
                 commands=["systemctl daemon-reexec"], _if=manager.did_change)


def _fstab_and_swap(site, state: dict, container: bool) -> None:
    swap_off = site.settings.swap == "off"
    if not swap_off:
        logger.warning("%s: settings.swap=%s: swap entries kept; the fs-swap* controls will fail", host.name,
                       site.settings.swap)
        host.noop(f"swap kept as configured (settings.swap={site.settings.swap})")
    if state["fstab"] is None:
        logger.warning("%s: /etc/fstab is not readable as text; left unchanged", host.name)
    else:
        # One rewrite fixes fs-swap-fstab and every FSTAB_OPTIONS row: fs-tmp-nodev, fs-tmp-nosuid, fs-tmp-noexec,
        # fs-shm-nodev, fs-shm-nosuid, fs-shm-noexec.
        fstab = rewrite_fstab(state["fstab"], swap_off)
        files.put(name="fs-swap-fstab, fs-tmp-no*, fs-shm-no*: fstab: no swap; /tmp and /dev/shm nodev,nosuid,noexec",
                  src=io.StringIO(fstab), dest="/etc/fstab", user="root", group="root", mode="0644")
        unit = files.put(name="fs-tmp-mounted-options, fs-shm-mounted-options: their options put back at every boot",
                         src=io.StringIO(MOUNT_OPTIONS_UNIT_TEXT), dest=f"/etc/systemd/system/{MOUNT_OPTIONS_UNIT}",
                         user="root", group="root", mode="0644")
        systemd.service(name=f"fs-tmp-mounted-options, fs-shm-mounted-options: {MOUNT_OPTIONS_UNIT} enabled",
                        service=MOUNT_OPTIONS_UNIT, running=True, enabled=True, daemon_reload=will_change(unit))
    if swap_off:
        mask = files.link(name="fs-swap-target-masked: swap.target masked", path=SWAP_TARGET_LINK, target="/dev/null",
                          user="root", group="root")
        systemd.daemon_reload(name="fs-swap-target-masked: systemd sees swap.target masked", _if=mask.did_change)
        if state["swaps"]:
            if container:
                _written_not_applied("swap is active in the parent's kernel; disabled for boot only")
            else:
                server.shell(name="fs-swap-inactive: turn off active swap", commands=["swapoff -a"])
    for mount in MOUNTS:
        options = state["mount"].get(mount.mountpoint, "")
        if not options:
            if container:
                _written_not_applied(f"{mount.mountpoint} is not a separate mount; its fstab entry applies at the next boot")
            else:
                # The fstab entry written above says how (tmpfs, nodev,nosuid,noexec).
                server.shell(name=f"{mount.id}: mount {mount.mountpoint} as its fstab entry says",
                             commands=[f"mount {mount.mountpoint}"])
            continue
        if any(o not in options.split(",") for o in MOUNT_OPTIONS):
            server.shell(name=f"{mount.id}: remount {mount.mountpoint} {','.join(MOUNT_OPTIONS)}",
                         commands=[f"mount -o remount,{','.join(MOUNT_OPTIONS)} {mount.mountpoint}"])
    files.directory(name="apt's own directory for debconf scripts", path=APT_TMP_DIR, user="root", group="root", mode="0700")
    files.put(name="apt extracts debconf scripts outside the noexec /tmp", src=io.StringIO(APT_TMP_CONTENT),
              dest=APT_TMP_CONF, user="root", group="root", mode="0644")


def apply(site, entry) -> None:
    state = host.get_fact(
        FilesystemState, optional_paths=[p.path for p in PATHS if p.if_present], setid_paths=SUID_BLACKLIST,
        modules=[m.module for m in MODULES], mountpoints=[m.mountpoint for m in MOUNTS], config_dir=CITADEL_CONFIG,
    )
    container = state["virt"] != "none"
    _paths(state)
    _modules(site, state, container)
    _core_dumps(site)
    _fstab_and_swap(site, state, container)
