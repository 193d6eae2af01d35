"""Pure logic of the filesystem area: the control table, fstab rewriting, the state fact, modprobe files."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest

from hardening.audit_script import HostFacts, judge
from hardening.controls.filesystem import (
    CONTROLS,
    COREDUMP,
    COREDUMP_SETTINGS,
    FSTAB_OPTIONS,
    MODULES,
    MOUNT_OPTIONS,
    MOUNTS,
    PATHS,
    modprobe_file,
)
from roles.facts import FilesystemState
from roles.hardening.filesystem import blocked_modules, modprobe_conf, rewrite_fstab


def by_id(cid):
    return next(c for c in CONTROLS if c.id == cid)


def sh(script: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, input=stdin)


def test_catalog_shape():
    ids = [c.id for c in CONTROLS]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("fs-") for i in ids)
    assert all(c.remediation == "hardening" and c.refs.threats for c in CONTROLS)
    kernel = {c.id for c in CONTROLS if c.scope == "kernel"}
    assert kernel == {"fs-modules-not-loaded", "fs-swap-inactive"}
    # every module the role blocks has a control
    assert {f"fs-module-{m.module}-blocked" for m in MODULES} <= set(ids)


def test_kernel_controls_not_applicable_in_containers():
    verdict = judge(by_id("fs-swap-inactive"), HostFacts(container="systemd-nspawn", os="debian 12"), None)
    assert verdict.status == "notapplicable"


def test_fstab_rewrite_adds_entries_and_is_idempotent():
    once = rewrite_fstab("# UNCONFIGURED FSTAB FOR BASE SYSTEM\n", swap_off=True)
    assert once.splitlines()[0] == "# UNCONFIGURED FSTAB FOR BASE SYSTEM"
    assert "tmpfs /tmp tmpfs rw,nodev,nosuid,noexec,size=2G,mode=1777 0 0" in once
    assert "tmpfs /dev/shm tmpfs rw,nodev,nosuid,noexec,mode=1777 0 0" in once
    assert rewrite_fstab(once, swap_off=True) == once


def test_fstab_rewrite_fixes_options_comments_swap_keeps_the_rest():
    text = (
        "UUID=abc /               ext4    errors=remount-ro 0       1\n"
        "UUID=def none swap sw 0 0\n"
        "/dev/sdb1 /tmp ext4 defaults,exec 0 2\n"
        "#/dev/sdc1 /dev/shm tmpfs defaults 0 0\n"
        "tmpfs /dev/shm tmpfs defaults\n"
    )
    out = rewrite_fstab(text, swap_off=True).splitlines()
    assert out[0] == "UUID=abc /               ext4    errors=remount-ro 0       1"
    assert out[1].startswith("# UUID=def none swap sw 0 0")
    assert out[2] == "/dev/sdb1 /tmp ext4 defaults,nodev,nosuid,noexec 0 2"
    assert out[3] == "#/dev/sdc1 /dev/shm tmpfs defaults 0 0"
    assert out[4] == "tmpfs /dev/shm tmpfs defaults,nodev,nosuid,noexec 0 0"
    assert len(out) == 5
    assert rewrite_fstab("\n".join(out) + "\n", swap_off=True) == "\n".join(out) + "\n"


def test_fstab_rewrite_keeps_swap_when_encrypted():
    text = "/dev/mapper/cswap none swap sw 0 0\n"
    assert rewrite_fstab(text, swap_off=False).splitlines()[0] == "/dev/mapper/cswap none swap sw 0 0"


@pytest.mark.parametrize("option", ["nodev", "nosuid", "noexec"])
def test_fstab_option_check_reads_last_entry(tmp_path, option):
    check = by_id(f"fs-tmp-{option}").check
    good = rewrite_fstab("", swap_off=True)
    script = check.script().replace("/etc/fstab", str(tmp_path / "fstab"))
    (tmp_path / "fstab").write_text(good)
    assert sh(script).returncode == 0
    (tmp_path / "fstab").write_text(good.replace(f",{option}", ""))
    assert sh(script).returncode != 0


def test_swap_check_sees_only_active_entries(tmp_path):
    script = by_id("fs-swap-fstab").check.script().replace("/etc/fstab", str(tmp_path / "fstab"))
    (tmp_path / "fstab").write_text(rewrite_fstab("UUID=x none swap sw 0 0\n", swap_off=True))
    assert sh(script).returncode == 0
    (tmp_path / "fstab").write_text("UUID=x none swap sw 0 0\n")
    assert sh(script).returncode == 1


def test_module_config_check(tmp_path):
    d = tmp_path / "modprobe.d"
    d.mkdir()
    groups = blocked_modules(SimpleNamespace(usb_storage=False))
    for group, mods in groups.items():
        (d / f"citadel-{group}.conf").write_text(modprobe_conf(group, mods))
    for mod in MODULES:
        script = by_id(f"fs-module-{mod.module}-blocked").check.script().replace("/etc/modprobe.d", str(d))
        assert sh(script).returncode == 0, mod.module
    # hfs's break must not touch hfsplus
    brk = by_id("fs-module-hfs-blocked").break_with.replace(modprobe_file("filesystems"), str(d / "citadel-filesystems.conf"))
    assert sh(brk).returncode == 0
    hfs = by_id("fs-module-hfs-blocked").check.script().replace("/etc/modprobe.d", str(d))
    hfsplus = by_id("fs-module-hfsplus-blocked").check.script().replace("/etc/modprobe.d", str(d))
    assert sh(hfs).returncode != 0 and sh(hfsplus).returncode == 0


def test_usb_storage_setting_allows_it():
    allowed = blocked_modules(SimpleNamespace(usb_storage=True))
    assert "usb-storage" not in [m.module for m in allowed["devices"]]
    assert "firewire-core" in [m.module for m in allowed["devices"]]
    assert "usb-storage" in [m.module for m in blocked_modules(SimpleNamespace(usb_storage=False))["devices"]]


def test_core_limit_check(tmp_path):
    from hardening.controls.filesystem import LIMITS_CONTENT

    script = by_id("fs-core-dump-limits").check.script().replace("/etc/security", str(tmp_path))
    (tmp_path / "limits.d").mkdir()
    (tmp_path / "limits.conf").write_text("# nothing\n")
    (tmp_path / "limits.d" / "citadel-coredump.conf").write_text(LIMITS_CONTENT)
    assert sh(script).returncode == 0
    (tmp_path / "limits.d" / "other.conf").write_text("@admins hard core unlimited\n")
    assert sh(script).returncode != 0
    (tmp_path / "limits.d" / "other.conf").write_text("")
    (tmp_path / "limits.d" / "citadel-coredump.conf").write_text(LIMITS_CONTENT.replace("root hard core 0\n", ""))
    assert sh(script).returncode != 0


def test_state_fact_parses():
    output = "\n".join([
        "virt systemd-nspawn", "exists /etc/shadow-", "setid /usr/lib/openssh/ssh-keysign",
        "fstab IyBlbXB0eQo=", "loaded cramfs", "swaps 0", "mount /tmp rw,nosuid,nodev", "mount /dev/shm ",
        "sudoersd /etc/sudoers.d/citadel", "writable /etc/citadel/host.json",
    ])
    state = FilesystemState().process(output.splitlines())
    assert state["virt"] == "systemd-nspawn"
    assert state["exists"] == {"/etc/shadow-"}
    assert state["fstab"] == "# empty\n"
    assert state["mount"] == {"/tmp": "rw,nosuid,nodev", "/dev/shm": ""}
    assert state["loaded"] == ["cramfs"] and state["swaps"] == 0
    assert FilesystemState.default()["virt"] == "none"
    command = FilesystemState().command(optional_paths=[], setid_paths=[], modules=[], mountpoints=[], config_dir="/x")
    assert "systemd-detect-virt --container" in command


def test_paths_table_matches_checks():
    for p in PATHS:
        check = by_id(p.id).check
        assert check.path == p.path and check.max_mode == p.mode and check.missing_ok == p.if_present


def test_written_out_rows_cover_their_tables():
    # The rows spell their ids out (grep finds them); these keep the spelled-out tables whole.
    assert all(m.id == f"fs-module-{m.module}-blocked" and m.module in m.title for m in MODULES)
    mountpoints = [m.mountpoint for m in MOUNTS]
    assert [(r.mountpoint, r.option) for r in FSTAB_OPTIONS] == [(m, o) for m in mountpoints for o in MOUNT_OPTIONS]
    assert all(r.id.endswith(f"-{r.option}") and r.option in r.title for r in FSTAB_OPTIONS)
    assert all(f"{r.key}={r.value}" in r.title for r in COREDUMP) and list(COREDUMP_SETTINGS) == [r.key for r in COREDUMP]
