"""Citadel's facts (roles/facts.py): shell that parses, and an empty output read as no output."""

from __future__ import annotations

import inspect
import shutil
import subprocess

import pytest
from pyinfra.api import FactBase

from roles import facts

# Arguments for each fact, as a role passes them.
ARGUMENTS = {
    "ControlFindings": {"control_ids": ["acct-root-locked", "acct-no-empty-passwords"]},
    "ControlVerdict": {"control_id": "log-audit-rules-compiled"},
    "ControlOutput": {"control_id": "log-files-not-world-readable"},
    "ContainerKind": {},
    "SshConnection": {},
    "AuthorizedKeysPresent": {"user": "deploy"},
    "GrepLines": {"pattern": "trusted=yes", "paths": ["/etc/apt/sources.list"], "exclude": "file:/srv/repo"},
    "FilesMatching": {"pattern": "flags=.*complain", "paths": "/etc/apparmor.d/*"},
    "DirectoryEntries": {"path": "/etc/citadel/vllm", "hidden": True},
    "InstalledPackages": {"packages": ["telnetd", "rsh-server"]},
    "CharacterDevices": {"globs": ["/dev/nvidia*", "/dev/dri/*"]},
    "FilesystemState": {"optional_paths": ["/etc/shadow-"], "setid_paths": ["/usr/bin/at"], "modules": ["usb-storage"],
                        "mountpoints": ["/tmp", "/dev/shm"], "config_dir": "/etc/citadel"},
    "SysctlValues": {"keys": ["kernel.sysrq", "net.ipv4.ip_forward"]},
    "SysctlAssignments": {"keys": ["kernel.sysrq", "net.ipv4.ip_forward"]},
    "AuditRulesLocked": {},
    "AppArmorComplaining": {},
    "UnitActive": {"unit": "citadel-vllm@m.service"},
    "UnitMasked": {"unit": "apt-daily.timer"},
    "UnitAndMount": {"unit": "citadel-unseal@m.service", "mountpoint": "/run/citadel/models/m"},
    "VaultAgentStatus": {"instance": "citadel-agent@gpu", "sink": "/run/citadel/agent/gpu/token"},
    "StoreVolumeState": {"backing": "/dev/vdb", "mapper": "citadel-store", "mountpoint": "/var/lib/citadel/models",
                         "wrapped_key": "/etc/citadel/models/store-volume.wrapped"},
    "NftablesHashes": {"record": "/var/lib/citadel/nftables.applied"},
    "VllmInstalled": {"mark": "/opt/citadel/vllm/k/.citadel-installed", "current": "/opt/citadel/vllm/current"},
}


def citadel_facts() -> dict[str, type[FactBase]]:
    return {name: value for name, value in vars(facts).items()
            if inspect.isclass(value) and issubclass(value, FactBase) and value.__module__ == facts.__name__}


def test_every_fact_is_listed_here():
    assert set(citadel_facts()) == set(ARGUMENTS)


@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_empty_output_reads_as_no_output(name):
    fact = citadel_facts()[name]()
    fact.command(**ARGUMENTS[name])  # facts that remember their arguments do it here, as under pyinfra
    assert fact.default() == fact.process([])
    assert fact.__doc__, f"{name} says what it reads"


@pytest.mark.skipif(shutil.which("dash") is None, reason="dash (Debian's /bin/sh) is not installed")
@pytest.mark.parametrize("name", sorted(ARGUMENTS))
def test_command_is_valid_posix_shell(name):
    command = str(citadel_facts()[name]().command(**ARGUMENTS[name]))
    result = subprocess.run(["dash", "-n", "-c", command], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_values_are_typed():
    agent = facts.VaultAgentStatus().process(["active", "600 root:root", "125"])
    assert agent == facts.AgentStatus(active=True, sink="600 root:root", token_age=125)
    assert facts.VaultAgentStatus().process(["inactive", "missing", "none"]).token_age is None
    mount = facts.UnitAndMount().process(["active", "rw,nosuid,nodev,noexec,relatime"])
    assert mount.active and {"nosuid", "nodev", "noexec"} <= mount.options
    assert facts.ContainerKind().process(["none"]) is None
    assert facts.ContainerKind().process(["systemd-nspawn"]) == "systemd-nspawn"
    assert facts.CharacterDevices().process(["/dev/nvidia0 666 root root", "garbage"]) == [
        facts.DeviceNode("/dev/nvidia0", "666", "root", "root")]
    assert facts.VllmInstalled().process(["mark=k1", "current=/opt/v/k1", "python=python3.11"]) == facts.VllmInstall(
        mark="k1", current="/opt/v/k1", python="python3.11")
    assert facts.SysctlValues().process(["kernel.sysrq=0", "vm.gone?"]) == {"kernel.sysrq": "0", "vm.gone": None}
    hashes = facts.NftablesHashes().process(["abc", "abc"])
    assert hashes.live == hashes.recorded == "abc"


def test_control_findings_run_the_catalog_checks_as_the_audit_does():
    fact = facts.ControlFindings()
    script = fact.command(control_ids=["acct-root-locked", "acct-no-empty-passwords"])
    assert f"@@{fact.nonce} begin acct-root-locked" in script
    output = [
        f"@@{fact.nonce} begin __env", "none", f"@@{fact.nonce} end __env 0",
        f"@@{fact.nonce} begin acct-root-locked", "@@end", f"@@{fact.nonce} end acct-root-locked 0",
        f"@@{fact.nonce} begin acct-no-empty-passwords", "bob has an empty password", "@@end",
        f"@@{fact.nonce} end acct-no-empty-passwords 0",
    ]
    findings = fact.process(output)
    assert list(findings) == ["acct-no-empty-passwords"]
    assert findings["acct-no-empty-passwords"] == ("fail", ["bob has an empty password"])
