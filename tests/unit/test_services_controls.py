"""Unit tests for the services controls and the pure logic of their role part."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hardening.checks.services import DeviceNodes, FileExact, PackagesAbsent, PackageService, installed_packages
from hardening.controls.services import (
    CONTROLS,
    GPU_GROUP,
    PERIODIC,
    UNWANTED,
    UNWANTED_PACKAGES,
    UPDATE_TIMERS,
    apt_value,
    chrony_conf,
    fake_package,
    gpu_rules,
)
from roles.facts import parse_grep_hits
from roles.hardening.services import TIMER_CONTROLS, apt_policy, auto_upgrades, origins, time_sources

DEVSEC = Path(__file__).resolve().parents[2] / "hardening" / "devsec"


def test_controls_are_well_formed():
    ids = [c.id for c in CONTROLS]
    assert len(ids) == len(set(ids)) and len(ids) >= 18
    for control in CONTROLS:
        assert control.id.startswith("svc-")
        assert control.remediation == "hardening"
        assert control.refs.threats and all(re.fullmatch(r"T([1-9]|10)", t) for t in control.refs.threats)
        assert all(h.startswith("164.312(") for h in control.refs.hipaa)


def test_kernel_scope_is_only_what_a_container_cannot_show():
    kernel = {c.id for c in CONTROLS if c.scope == "kernel"}
    assert kernel == {"svc-chrony-synchronised", "svc-apparmor-enforcing"}


def test_devsec_ids_are_real():
    known = {c["id"] for c in yaml.safe_load((DEVSEC / "linux-baseline.yaml").read_text())["controls"]}
    used = {d for c in CONTROLS for d in c.refs.devsec}
    assert used <= known
    # The package-* controls of dev-sec in this area are all covered, except syslog and auditd (logging area).
    packages = {d for d in known if d.startswith("package-")} - {"package-07", "package-08"}
    assert packages <= used


def test_devsec_reference_files_list_every_id_once():
    for name, prefix in (("linux-baseline.yaml", ("os-", "package-", "sysctl-")), ("ssh-baseline.yaml", ("sshd-",))):
        controls = yaml.safe_load((DEVSEC / name).read_text())["controls"]
        ids = [c["id"] for c in controls]
        assert len(ids) == len(set(ids))
        assert all(i.startswith(prefix) and c["title"] for i, c in zip(ids, controls, strict=True))


def test_packages_absent_judges_dpkg_states():
    check = PackagesAbsent(names=["telnetd", "inetutils-telnetd"])
    assert check.evaluate("", 0).status == "pass"
    assert check.evaluate("telnetd deinstall ok config-files 0.17-44", 0).status == "pass"
    verdict = check.evaluate("telnetd install ok installed 0.17-44", 0)
    assert verdict.status == "fail" and "telnetd 0.17-44" in verdict.message
    assert check.evaluate("telnetd install ok unpacked 99:0-citadel-break", 0).status == "fail"
    assert "dpkg-query" in check.script() and "telnetd inetutils-telnetd" in check.script()


def test_installed_packages_counts_partial_installs():
    lines = "a install ok installed 1\nb install ok half-configured 1\nc deinstall ok config-files 1\nd unknown ok not-installed"
    assert installed_packages(lines) == ["a", "b"]


def test_unwanted_table_feeds_controls_and_role():
    assert UNWANTED_PACKAGES == [n for u in UNWANTED for n in u.packages]
    by_id = {c.id: c for c in CONTROLS}
    for u in UNWANTED:
        assert by_id[u.id].check.names == u.packages
        assert f"Package: {u.packages[0]}\\n" in by_id[u.id].break_with


def test_every_update_timer_names_a_real_control():
    ids = {c.id for c in CONTROLS}
    assert set(TIMER_CONTROLS) == set(UPDATE_TIMERS)
    assert set(TIMER_CONTROLS.values()) <= ids


def test_fake_package_builds_outside_its_own_tree():
    recipe = fake_package("nis")
    assert "dpkg-deb -b $d/pkg $d/p.deb" in recipe and "Version: 99:" in recipe


def test_file_exact():
    check = FileExact(path="/etc/x", content="a\nb\n")
    assert check.evaluate("a\nb", 0).status == "pass"
    assert check.evaluate("@@MISSING", 0).status == "fail"
    verdict = check.evaluate("a\nc", 0)
    assert verdict.status == "fail" and "line 2" in verdict.message
    assert check.evaluate("a\nb\nextra", 0).status == "fail"


def test_device_nodes_not_applicable_without_gpu():
    check = DeviceNodes(globs=["/dev/nvidia*"], group=GPU_GROUP)
    assert check.evaluate("", 0).status == "notapplicable"
    assert check.evaluate(f"/dev/nvidia0 660 root {GPU_GROUP}\n/dev/nvidiactl 600 root {GPU_GROUP}", 0).status == "pass"
    assert check.evaluate(f"/dev/nvidia0 666 root {GPU_GROUP}", 0).status == "fail"
    assert check.evaluate("/dev/dri/card0 660 root video", 0).status == "fail"


def test_package_service():
    check = PackageService(package="chrony", unit="chrony.service")
    assert check.evaluate("package=install ok installed 4.3-2\nenabled=enabled", 0).status == "pass"
    assert check.evaluate("package=\nenabled=", 0).status == "fail"
    verdict = check.evaluate("package=install ok installed 4.3-2\nenabled=disabled", 0)
    assert verdict.status == "fail" and "disabled" in verdict.message


@pytest.mark.parametrize(
    ("output", "status"),
    [("APT::Get::AllowUnauthenticated=", "pass"), ("APT::Get::AllowUnauthenticated=false", "pass"),
     ("APT::Get::AllowUnauthenticated=true", "fail"), ("APT::Get::AllowUnauthenticated=1", "fail")],
)
def test_apt_value(output, status):
    check = apt_value("APT::Get::AllowUnauthenticated", ["", "false", "no", "0", "off"], "x")
    assert check.evaluate(output, 0).status == status


def test_insecure_repositories_check():
    check = {c.id: c for c in CONTROLS}["svc-apt-no-insecure-repositories"].check
    ok = "Acquire::AllowInsecureRepositories=unset\nAcquire::AllowDowngradeToInsecureRepositories=false\n"
    bad = "Acquire::AllowInsecureRepositories=true\nAcquire::AllowDowngradeToInsecureRepositories=unset\n"
    assert check.evaluate(ok, 0).status == "pass"
    assert check.evaluate(bad, 0).status == "fail"


def test_role_files_match_what_the_checks_expect():
    for key, value in PERIODIC.items():
        assert f'{key} "{value}";' in auto_upgrades()
    assert "-security" in origins()
    assert 'APT::Get::AllowUnauthenticated "false";' in apt_policy()
    rule = gpu_rules()
    assert rule == {c.id: c for c in CONTROLS}["svc-gpu-udev-rule"].check.content
    assert all('MODE="0660"' in line and f'GROUP="{GPU_GROUP}"' in line for line in rule.splitlines() if not line.startswith("#"))
    sources = {c.id: c for c in CONTROLS}["svc-chrony-sources"].check
    conf = chrony_conf(["server ntp.hospital.example iburst"])
    assert any(re.search(sources.pattern.replace("[^[:space:]]", r"\S").replace("[[:space:]]", r"\s"), line) for line in conf.splitlines())


def test_time_sources_default_and_inventory():
    class Settings:
        pass

    class Site:
        settings = Settings()

    assert time_sources(Site()) == ["pool 2.debian.pool.ntp.org iburst"]
    Site.settings.time_servers = ["ntp1.hospital.example"]
    assert time_sources(Site()) == ["server ntp1.hospital.example iburst"]


def test_parse_grep_hits():
    out = "/etc/apt/sources.list.d/x.list:1:deb [trusted=yes] http://a/ b main\nnoise\n/etc/apt/apt.conf.d/9:3:A::B \"1\"; // c:d"
    assert parse_grep_hits(out) == [
        ("/etc/apt/sources.list.d/x.list", "deb [trusted=yes] http://a/ b main"),
        ("/etc/apt/apt.conf.d/9", 'A::B "1"; // c:d'),
    ]
    assert parse_grep_hits(None) == []
