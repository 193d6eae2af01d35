"""Pure logic of the audit: checks judge evidence, the engine parses sections, waivers, reports."""

from __future__ import annotations

import datetime as dt
import json
from xml.etree import ElementTree as ET

import pytest

from hardening.audit_script import HostFacts, build_script, judge, parse_output
from hardening.checks import (
    Command,
    FileContent,
    FileMode,
    KernelModuleBlocked,
    Package,
    ServiceState,
    SshdOption,
    Sysctl,
    SysctlPersisted,
)
from hardening.engine import Result
from hardening.model import Control, References
from hardening.report import AuditReport, outcome
from hardening.waivers import Waiver, WaiverError, apply_waivers, load_waivers


def control(id="test-control", check=None, scope="any", **refs) -> Control:
    return Control(
        id=id, title="A test control", rationale="Because tests need one.", severity="medium",
        refs=References(threats=["T9"], **refs), check=check or Sysctl(key="net.ipv4.ip_forward", expected=["0"]),
        remediation="hardening", scope=scope, break_with="true",
    )


@pytest.mark.parametrize(
    "check, evidence, code, status",
    [
        (Sysctl(key="net.ipv4.ip_forward", expected=["0"]), "0\n", 0, "pass"),
        (Sysctl(key="net.ipv4.ip_forward", expected=["0"]), "1\n", 0, "fail"),
        (Sysctl(key="kernel.nope", expected=["0"]), "cat: ...: No such file", 1, "notapplicable"),
        (SysctlPersisted(key="kernel.kptr_restrict", expected="2"), "kernel.kptr_restrict = 1\nkernel.kptr_restrict=2\n", 0, "pass"),
        (SysctlPersisted(key="kernel.kptr_restrict", expected="2"), "kernel.kptr_restrict = 2\nkernel.kptr_restrict = 1\n", 0, "fail"),
        (SysctlPersisted(key="kernel.kptr_restrict", expected="2"), "", 0, "fail"),
        (SshdOption(option="permitrootlogin", expected=["no"]), "permitrootlogin no", 0, "pass"),
        (SshdOption(option="permitrootlogin", expected=["no"]), "permitrootlogin without-password", 0, "fail"),
        (SshdOption(option="ciphers", expected=["a", "b", "c"], match="subset"), "ciphers a,c", 0, "pass"),
        (SshdOption(option="ciphers", expected=["a", "b"], match="subset"), "ciphers a,z", 0, "fail"),
        (SshdOption(option="maxauthtries", expected=["4"], match="max_int"), "maxauthtries 3", 0, "pass"),
        (SshdOption(option="maxauthtries", expected=["4"], match="max_int"), "maxauthtries 6", 0, "fail"),
        (FileMode(path="/etc/shadow", max_mode="0640", owner="root", group=["shadow", "root"]), "640 root shadow", 0, "pass"),
        (FileMode(path="/etc/shadow", max_mode="0640", owner="root"), "644 root shadow", 0, "fail"),
        (FileMode(path="/etc/shadow", max_mode="0640", owner="root"), "600 daemon root", 0, "fail"),
        (FileMode(path="/x", max_mode="0640", missing_ok=True), "MISSING", 0, "pass"),
        (FileContent(path="/etc/issue.net", pattern="Authorised"), "Authorised use only\n@rc=0", 0, "pass"),
        (FileContent(path="/etc/issue.net", pattern="Authorised"), "@rc=1", 0, "fail"),
        (FileContent(path="/etc/issue.net", pattern="Debian", present=False), "@rc=1", 0, "pass"),
        (FileContent(path="/etc/x", pattern="y"), "MISSING", 0, "fail"),
        (ServiceState(unit="auditd", enabled=True, active=True), "enabled=enabled\nactive=active", 0, "pass"),
        (ServiceState(unit="auditd", enabled=True, active=True), "enabled=disabled\nactive=inactive", 0, "fail"),
        (ServiceState(unit="telnet.socket", enabled=False, active=False), "enabled=\nactive=inactive", 0, "pass"),
        (Package(name="auditd"), "install ok installed 1:3.0.9-1", 0, "pass"),
        (Package(name="telnet", installed=False), "not-installed", 0, "pass"),
        (KernelModuleBlocked(module="usb-storage"), "install usb-storage /bin/false\nblacklist usb-storage", 0, "pass"),
        (KernelModuleBlocked(module="usb-storage"), "blacklist usb-storage", 0, "fail"),
        (KernelModuleBlocked(module="cramfs"), "install cramfs /bin/false\nblacklist cramfs\nLOADED", 0, "fail"),
        (Command(command="true", describe="ok"), "", 0, "pass"),
        (Command(command="false", describe="ok"), "", 1, "fail"),
        (Command(command="x", expect_output=r"^policy drop", describe="drop"), "policy drop;", 0, "pass"),
    ],
)
def test_checks_judge_evidence(check, evidence, code, status):
    assert check.evaluate(evidence, code).status == status


def test_script_and_parse_round_trip():
    controls = [control("first-one"), control("second-one")]
    script = build_script(controls, "abc123")
    assert script.count("@@abc123 begin") == 3  # the environment section plus two controls
    assert "rc=$?; echo; echo" in script
    lines = [
        "@@abc123 begin __env", "none", "debian 12", "@@abc123 end __env 0",
        "@@abc123 begin first-one", "0", "", "@@abc123 end first-one 0",
        "@@abc123 begin second-one", "stray", "@@abc123 end second-one 1",
        "@@other begin first-one", "spoofed", "@@other end first-one 0",
    ]
    sections = parse_output(lines, "abc123")
    assert sections["first-one"] == ("0", 0)
    assert sections["second-one"] == ("stray", 1)
    assert sections["__env"] == ("none\ndebian 12", 0)


def test_kernel_controls_not_applicable_in_containers():
    kernel = control(scope="kernel")
    verdict = judge(kernel, HostFacts(container="systemd-nspawn", os="debian 12"), ("1", 0))
    assert verdict.status == "notapplicable" and "container" in verdict.message
    assert judge(kernel, HostFacts(container="none", os="debian 12"), ("0", 0)).status == "pass"
    assert judge(kernel, HostFacts(container="none", os="debian 12"), None).status == "error"


def waiver(**kw) -> Waiver:
    base = dict(control="test-control", hosts="gpu-*", justification="Accepted risk, ticket 42", approver="CISO",
                expires=dt.date(2030, 1, 1))
    base.update(kw)
    return Waiver(**base)


def test_waivers_cover_failures_only_and_expire():
    results = [
        Result("gpu-01", "test-control", "fail", "x"),
        Result("gw-01", "test-control", "fail", "x"),
        Result("gpu-02", "test-control", "pass", "x"),
    ]
    apply_waivers(results, [waiver()], today=dt.date(2027, 1, 1))
    assert [outcome(r) for r in results] == ["waived", "fail", "pass"]
    expired = [Result("gpu-01", "test-control", "fail", "x")]
    apply_waivers(expired, [waiver(expires=dt.date(2026, 1, 1))], today=dt.date(2027, 1, 1))
    assert outcome(expired[0]) == "fail" and expired[0].waiver["expired"] is True


def test_waiver_file_errors(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("waivers:\n  - control: nope-control\n    justification: because reasons\n    approver: me\n    expires: 2030-01-01\n")
    with pytest.raises(WaiverError, match="waivers.0.control: no control 'nope-control'"):
        load_waivers(path, {"test-control"})
    path.write_text("waivers:\n  - control: test-control\n    approver: me\n    expires: 2030-01-01\n")
    with pytest.raises(WaiverError, match="waivers.0.justification: required field is missing"):
        load_waivers(path, {"test-control"})


def test_report_renderings_and_exit_codes():
    c1 = control("ctl-one", hipaa=["164.312(b)"], nist=["AU-2"])
    c2 = control("ctl-two", cis=["5.1.20"])
    results = [
        Result("gpu-01", "ctl-one", "pass", "fine"),
        Result("gpu-01", "ctl-two", "fail", "<bad> & broken"),
        Result("gpu-02", "ctl-one", "notapplicable", "container"),
        Result("gpu-02", "ctl-two", "pass", "fine"),
    ]
    report = AuditReport(site="demo", profile="all", controls=[c1, c2], results=results)
    assert report.exit_code() == 1
    data = json.loads(report.to_json())
    assert data["summary"]["gpu-01"] == {"pass": 1, "fail": 1}
    assert report.by_framework()["hipaa"]["164.312(b)"]["pass"] == 1
    page = report.to_html()
    assert "&lt;bad&gt; &amp; broken" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    suites = ET.fromstring(report.to_junit())
    assert [s.get("failures") for s in suites] == ["1", "0"]
    results[1].status = "error"
    assert report.exit_code() == 2


def test_options_sshd_t_does_not_print_are_read_from_the_config():
    # bookworm's `sshd -T` leaves DebianBanner out, so an SshdOption check would always fail.
    from hardening.controls.ssh import CONTROLS

    banner = next(c for c in CONTROLS if c.id == "ssh-debian-banner")
    assert "sshd -T" not in banner.check.script() and "sshd_config" in banner.check.script()
    assert banner.check.evaluate("no\n", 0).status == "pass"
    assert banner.check.evaluate("yes\n", 0).status == "fail"
