"""Accounts controls: the tables, the check kinds' judging, and that what the role writes is
exactly what the checks accept (one source, two views)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardening.checks.accounts import KINDS, ConfigValue, Lines, Offenders, SudoDefault
from hardening.controls import accounts as a
from hardening.controls.accounts import CONTROLS
from hardening.model import Control

ROOT = Path(__file__).resolve().parents[2]


def test_catalog_shape():
    ids = [c.id for c in CONTROLS]
    assert len(ids) == len(set(ids)) >= 25
    assert all(i.startswith("acct-") for i in ids)
    assert all(c.remediation == "hardening" and c.scope == "any" for c in CONTROLS)
    assert all(c.refs.threats and c.break_with for c in CONTROLS)


def test_check_kinds_are_their_own_and_survive_validation():
    control = a.CONTROLS_BY_ID["acct-pass-max-days"]
    assert isinstance(control.check, ConfigValue)
    assert "PASS_MAX_DAYS" in control.check.script()
    assert len({kind.model_fields["kind"].default for kind in KINDS}) == len(KINDS)
    for control in CONTROLS:
        again = Control.model_validate(control.model_dump())
        assert type(again.check) is type(control.check) and again.check.script() == control.check.script()


def _evidence(*lines: str) -> str:
    return "\n".join([*lines, "@@end"])


@pytest.mark.parametrize("setting", a.SETTINGS, ids=lambda s: s.id)
def test_written_line_passes_and_break_value_fails(setting):
    check = a.CONTROLS_BY_ID[setting.id].check
    assert check.evaluate(_evidence(setting.line()), 0).status == "pass"
    if setting.break_value is None:
        assert check.evaluate(_evidence(), 0).status == "fail"
    else:
        assert check.evaluate(_evidence(setting.line(setting.break_value)), 0).status == "fail"


def test_config_value_last_assignment_wins_and_defaults():
    check = ConfigValue(paths=["/f"], key="minlen", style="equals", op="range", low=14)
    assert check.evaluate(_evidence("minlen = 14", "minlen=8"), 0).status == "fail"
    assert check.evaluate(_evidence("minlen = 8", "minlen = 15"), 0).status == "pass"
    assert check.evaluate(_evidence(), 0).status == "fail"
    assert check.evaluate("cut short", 0).status == "error"
    dict_check = ConfigValue(paths=["/f"], key="dictcheck", style="equals", op="eq", values=["1"], default="1")
    assert dict_check.evaluate(_evidence(), 0).status == "pass"
    assert dict_check.evaluate(_evidence("dictcheck = 0"), 0).status == "fail"


def test_config_value_ops():
    umask = ConfigValue(paths=["/f"], key="UMASK", style="space", op="umask", values=["027"])
    assert umask.judge("077") and umask.judge("027") and not umask.judge("022") and not umask.judge("abc")
    path = ConfigValue(paths=["/f"], key="ENV_PATH", style="space", op="path")
    assert path.judge("PATH=/usr/bin:/bin")
    assert not path.judge("PATH=.:/usr/bin") and not path.judge("PATH=/usr/bin::/bin") and not path.judge("/usr/bin")
    unlock = ConfigValue(paths=["/f"], key="unlock_time", style="equals", op="zero_or_min", low=900)
    assert unlock.judge("0") and unlock.judge("900") and not unlock.judge("60")
    flag = ConfigValue(paths=["/f"], key="even_deny_root", style="equals", op="flag")
    assert flag.evaluate(_evidence("even_deny_root"), 0).status == "pass"


def test_sudo_defaults_follow_sudo_order():
    pty = SudoDefault(option="use_pty", op="on", default="off")
    assert pty.evaluate(_evidence("Defaults\tenv_reset", "Defaults use_pty"), 0).status == "pass"
    assert pty.evaluate(_evidence("Defaults use_pty", "Defaults !use_pty"), 0).status == "fail"
    assert pty.evaluate(_evidence("# Defaults use_pty"), 0).status == "fail"
    timeout = SudoDefault(option="timestamp_timeout", op="range", low=0, high=15, default="15")
    assert timeout.evaluate(_evidence(), 0).status == "pass"
    assert timeout.evaluate(_evidence("Defaults timestamp_timeout=-1"), 0).status == "fail"
    log = SudoDefault(option="logfile", op="eq", values=["/var/log/sudo.log"])
    assert log.evaluate(_evidence('Defaults secure_path="/a:/b", logfile="/var/log/sudo.log"'), 0).status == "pass"


def test_sudo_policy_written_by_the_role_satisfies_the_checks():
    for control_id in ("acct-sudo-use-pty", "acct-sudo-logfile", "acct-sudo-timeout"):
        check = a.CONTROLS_BY_ID[control_id].check
        assert check.evaluate(_evidence(*a.SUDO_POLICY_CONTENT.splitlines()), 0).status == "pass", control_id


def test_lines_required_forbidden_and_missing():
    check = Lines(describe="t", required=[("/p", r"^auth\s+x")], forbidden=[("/p", r"nullok")])
    assert check.evaluate("@@file /p\nauth   x\n@@end", 0).status == "pass"
    assert check.evaluate("@@file /p\nauth x nullok\n@@end", 0).status == "fail"
    assert check.evaluate("@@file /p\n@@missing\n@@end", 0).status == "fail"
    assert check.evaluate("@@file /p\n", 0).status == "error"


def test_profile_scripts_satisfy_their_checks():
    for control_id, path in (("acct-default-umask", a.PROFILE_UMASK), ("acct-shell-timeout", a.PROFILE_TMOUT)):
        check = a.CONTROLS_BY_ID[control_id].check
        evidence = f"@@file {path}\n" + a.PROFILE_SCRIPTS[path] + "@@end"
        assert check.evaluate(evidence, 0).status == "pass"


def test_pam_su_file_restricts_su_as_the_check_expects():
    content = (ROOT / "roles/hardening/files/accounts/pam-su").read_text()
    assert a.PAM_SU_WHEEL in content.splitlines()
    check = a.CONTROLS_BY_ID["acct-su-restricted"].check
    assert check.evaluate(f"@@file {a.PAM_SU}\n{content}@@end", 0).status == "pass"


def test_pam_files_written_by_the_role_satisfy_the_pam_checks():
    content = {**a.PAM_FILES, a.PAM_SU: (ROOT / "roles/hardening/files/accounts/pam-su").read_text()}
    for rule in a.PAM_RULES:
        check = rule.make_check()
        evidence = "".join(f"@@file {p}\n" + content[p] for p in check.paths()) + "@@end"
        assert check.evaluate(evidence, 0).status == "pass", rule.id
    weak = a.PAM_FILES[a.PAM_PASSWORD].replace("remember=24", "remember=5")
    check = a.CONTROLS_BY_ID["acct-pam-pwhistory"].check
    assert check.evaluate(f"@@file {a.PAM_PASSWORD}\n{weak}@@end", 0).status == "fail"
    md5 = a.PAM_FILES[a.PAM_PASSWORD].replace("yescrypt", "md5")
    check = a.CONTROLS_BY_ID["acct-pam-strong-hash"].check
    assert check.evaluate(f"@@file {a.PAM_PASSWORD}\n{md5}@@end", 0).status == "fail"


def test_offenders():
    check = Offenders(script_text="true", describe="things")
    assert check.evaluate("@@end", 0).status == "pass"
    assert check.evaluate("daemon has the login shell /bin/bash\n@@end", 0).status == "fail"
    assert check.offenders("daemon has x\n@@end") == ["daemon has x"]
    assert check.evaluate("", 1).status == "error"


def test_role_only_acts_on_plain_names_and_paths():
    from roles.hardening.accounts import _names, _paths

    assert _names(["daemon has x", "$(reboot) has y", "; evil", "toor has UID 0", "a/b c"]) == ["daemon", "toor"]
    assert _paths(["/etc/sudoers.d/x line 1: y", "$(x) line 2", "/etc/sudoers.d/y 640 root:root"]) == [
        "/etc/sudoers.d/x", "/etc/sudoers.d/y"]
    assert _paths(["/home/a/.netrc", "/home/a b/.netrc", "/root/.rhosts"], whole_line=True) == [
        "/home/a/.netrc", "/root/.rhosts"]


def _operation_names(source: str) -> list[str]:
    """The literal start of every pyinfra operation's name= in a role module ('{}' where the
    name starts with a value computed at deploy time, such as a row's id)."""
    import ast

    names = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in {"files", "server", "apt"}):
            continue
        for keyword in node.keywords:
            if keyword.arg == "name":
                first = keyword.value.values[0] if isinstance(keyword.value, ast.JoinedStr) else keyword.value
                names.append(first.value if isinstance(first, ast.Constant) else "{}")
    return names


def test_role_operations_start_with_the_ids_they_fix():
    from fnmatch import fnmatch

    from roles.hardening import accounts as role

    ids = set(a.CONTROLS_BY_ID)
    names = _operation_names((ROOT / "roles/hardening/accounts.py").read_text())
    assert len(names) > 20
    for name in names:
        if name != "{}":
            prefix = name.split(":")[0]
            assert any(fnmatch(i, prefix) for i in ids), name
    assert set(role.SUDO_POLICY_CONTROLS.split(", ")) <= ids
    assert set(role.PROFILE_CONTROLS.values()) <= ids and set(role.PROFILE_CONTROLS) == set(a.PROFILE_SCRIPTS)
