"""Kernel/network sysctl controls: the table, the combined running+boot check, the role's helpers.

A simulated host (running values and sysctl files) stands in for a real one: every
control's break_with, applied to a hardened simulated host, must fail that control alone.
"""

from __future__ import annotations

import re

import pytest

from hardening.checks.kernel import SYSCTL_CONF, SysctlHardened, boot_values, parse_assignment
from hardening.controls import kernel
from hardening.controls.kernel import CONTROLS, SETTINGS, SYSCTL_FILE
from hardening.model import Control
from roles.facts import SysctlAssignments
from roles.hardening import kernel as role

DEBIAN_LINKS = "fs.protected_fifos = 1\nfs.protected_hardlinks = 1\nfs.protected_regular = 2\nfs.protected_symlinks = 1\n"


def hardened_host() -> tuple[dict[str, str], dict[str, str]]:
    running = {key: s.value for s in SETTINGS for key in s.keys}
    files = {
        "/usr/lib/sysctl.d/50-pid-max.conf": "kernel.pid_max = 4194304\n",
        "/usr/lib/sysctl.d/99-protect-links.conf": DEBIAN_LINKS,
        SYSCTL_FILE: kernel.sysctl_conf(),
        "/etc/sysctl.d/99-sysctl.conf": "",
        SYSCTL_CONF: "# empty\n",
    }
    return running, files


def evidence(control: Control, running: dict[str, str], files: dict[str, str]) -> str:
    lines = [f"run {k}={running[k]}" if running.get(k) is not None else f"run {k}?" for k in control.check.keys]
    for path, text in files.items():
        lines.append(f"@file {path}")
        lines += text.splitlines()
    return "\n".join(lines)


def failing(running, files) -> list[str]:
    return sorted(c.id for c in CONTROLS if c.check.evaluate(evidence(c, running, files), 0).status != "pass")


def simulate_break(control: Control, running: dict[str, str], files: dict[str, str]) -> None:
    """Apply the three forms of break_with the table generates to the simulated host."""
    cmd = control.break_with
    if m := re.fullmatch(r"sysctl -q -w (\S+)=(\S+)", cmd):
        key, value = m.groups()
        running[key] = value
        if key == "net.ipv4.ip_forward":  # the kernel's side effects
            running["net.ipv4.conf.all.forwarding"] = value
            running["net.ipv4.conf.all.accept_redirects"] = "0" if value == "1" else "1"
    elif m := re.fullmatch(r"sed -i 's\|\^(\S+) = \.\*\|(\S+) = (\S+)\|' (\S+)", cmd):
        key, _, value, path = m.groups()
        files[path] = re.sub(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", files[path])
    elif m := re.fullmatch(r"echo '(\S+) = (\S+)' >> (\S+)", cmd):
        key, value, path = m.groups()
        files[path] = files.get(path, "") + f"{key} = {value}\n"
    else:
        raise AssertionError(f"unrecognised break_with {cmd!r}")


def test_enough_controls_with_unique_prefixed_ids():
    assert len(CONTROLS) >= 32
    ids = [c.id for c in CONTROLS]
    assert len(ids) == len(set(ids))
    assert all(i.startswith("kern-") for i in ids)
    assert all(c.remediation == "hardening" and c.refs.threats for c in CONTROLS)


def test_scope_kernel_exactly_for_parameters_outside_the_network_namespace():
    for s, c in zip(SETTINGS, CONTROLS, strict=True):
        per_netns = all(k.startswith(("net.ipv4.", "net.ipv6.")) for k in s.keys)
        assert c.scope == ("any" if per_netns else "kernel"), c.id
    assert next(c for c in CONTROLS if c.id == "kern-bpf-jit-harden").scope == "kernel"


def test_written_value_is_accepted_and_every_key_is_written_once():
    conf = kernel.sysctl_conf()
    for s in SETTINGS:
        assert s.value in s.ok_values and s.bad not in s.ok_values
        for key in s.keys:
            assert len(re.findall(rf"(?m)^{re.escape(key)} = ", conf)) == 1


def test_hardened_host_passes_everything():
    running, files = hardened_host()
    assert failing(running, files) == []


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.id)
def test_break_with_fails_exactly_its_control(control):
    running, files = hardened_host()
    simulate_break(control, running, files)
    assert failing(running, files) == [control.id]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.id)
def test_running_or_boot_break_each_caught_by_this_control_alone(control):
    s = next(s for s in SETTINGS if s.id == control.id)
    key = s.keys[-1]
    running, files = hardened_host()
    running[key] = s.bad
    if key != "net.ipv4.conf.all.forwarding":
        assert failing(running, files) == [control.id]
    running, files = hardened_host()
    files[SYSCTL_CONF] += f"{key} = {s.bad}\n"
    assert failing(running, files) == [control.id]


def test_precedence_follows_systemd_sysctl():
    # 99-protect-links.conf (in /usr/lib) sorts after 60-citadel.conf and wins there...
    values = boot_values([
        (SYSCTL_FILE, ["fs.protected_fifos = 2"]),
        ("/usr/lib/sysctl.d/99-protect-links.conf", ["fs.protected_fifos = 1"]),
    ])
    assert values["fs.protected_fifos"] == ("1", "/usr/lib/sysctl.d/99-protect-links.conf")
    # ...unless a same-named file in /etc masks it.
    values = boot_values([
        (SYSCTL_FILE, ["fs.protected_fifos = 2"]),
        ("/usr/lib/sysctl.d/99-protect-links.conf", ["fs.protected_fifos = 1"]),
        ("/etc/sysctl.d/99-protect-links.conf", []),
    ])
    assert values["fs.protected_fifos"] == ("2", SYSCTL_FILE)
    # /etc/sysctl.conf is read last; slashes and the '-' prefix are understood.
    values = boot_values([(SYSCTL_CONF, ["-kernel/sysrq=1"]), ("/etc/sysctl.d/90-x.conf", ["kernel.sysrq = 0"])])
    assert values["kernel.sysrq"] == ("1", SYSCTL_CONF)
    assert parse_assignment("# kernel.sysrq = 1") is None


def test_missing_key_is_not_applicable_and_unset_key_fails():
    check = SysctlHardened(keys=["kernel.kexec_load_disabled"], accepted=["1"])
    assert check.evaluate("run kernel.kexec_load_disabled?", 0).status == "notapplicable"
    verdict = check.evaluate("run kernel.kexec_load_disabled=1\n@file /etc/sysctl.conf", 0)
    assert verdict.status == "fail" and "not set" in verdict.message


def test_check_is_its_own_kind_and_only_reads():
    dumped = CONTROLS[0].model_dump()["check"]
    assert dumped == {"kind": "sysctl_hardened", "keys": list(SETTINGS[0].keys), "accepted": SETTINGS[0].ok_values}
    script = CONTROLS[0].check.script()
    assert "/proc/sys/net/ipv4/ip_forward" in script and "grep -E" in script
    assert not re.search(r"sysctl -w|sed -i|>\s*/", script)


def test_check_round_trips_through_the_catalog_union():
    again = Control.model_validate(CONTROLS[0].model_dump())
    assert isinstance(again.check, SysctlHardened) and again.check == CONTROLS[0].check


def test_role_operations_name_the_controls_they_fix():
    keys = ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "kernel.sysrq"]
    assert role.control_ids(keys) == "kern-ipv4-forwarding, kern-sysrq"


def test_devsec_sysctl_controls_covered():
    covered = {d for c in CONTROLS for d in c.refs.devsec}
    expected = {f"sysctl-{n:02d}" for n in range(1, 35)} - {"sysctl-18", "sysctl-29", "sysctl-31", "sysctl-33"}
    expected |= {"sysctl-31a", "sysctl-31b"}
    assert expected <= covered


def test_role_comments_out_only_conflicting_assignments():
    listing = SysctlAssignments().process([
        f"{SYSCTL_CONF}:net.ipv4.tcp_syncookies = 0",
        f"{SYSCTL_CONF}:kernel.sysrq = 0",
        "/etc/sysctl.d/70-local.conf:-fs/suid_dumpable=2",
        f"{SYSCTL_FILE}:kernel.sysrq = 1",
        f"{SYSCTL_CONF}:vm.swappiness = 10",
    ])
    assert role.conflicting_assignments(listing) == {
        SYSCTL_CONF: ["net.ipv4.tcp_syncookies"],
        "/etc/sysctl.d/70-local.conf": ["fs.suid_dumpable"],
    }
    command = role.comment_out_command(SYSCTL_CONF, ["net.ipv4.tcp_syncookies"])
    assert command.startswith("sed -i --follow-symlinks -E ") and command.endswith(SYSCTL_CONF)


def test_role_applies_forwarding_before_redirects_and_skips_missing_keys():
    running = {k: v for k, v in hardened_host()[0].items()}
    running["net.ipv4.ip_forward"] = "1"
    running["net.ipv6.conf.default.autoconf"] = None
    command = role.apply_command(SETTINGS, running)
    assert command.index("ip_forward") < command.index("conf/all/accept_redirects")
    assert "autoconf" not in command
    # Each key is re-read on the host before it is written: side effects are caught.
    assert 'case "$(cat /proc/sys/net/ipv4/conf/all/accept_redirects)" in 0)' in command
