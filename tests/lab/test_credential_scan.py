"""The stray-credential scan (tests/lab/credential_scan.py) on a real lab host.

Plants a token-shaped string and a literal "secret" in a file, in the journal (logger) and in
a sleeping process's argv (the secret also in its environment), checks that the scan finds
each one without its text showing the value, then removes the plants and checks that the scan
finds nothing there any more. Removing the journal's copy means emptying that host's journal
(rotate, then vacuum): a journal keeps no way to delete single entries.
"""

from __future__ import annotations

import secrets as random_source
import string
import time

import pytest

from tests.lab.credential_scan import PRIVATE_KEY, VAULT_TOKEN, Finding, assert_no_stray_credentials, scan_host
from tests.lab.sshutil import ssh

PLANT_FILE = "/var/tmp/citadel-credential-scan-plant"
TAG = "citadel-credential-scan-plant"
SECRET = "planted secret"
SSH_HOST_KEYS = {"/etc/ssh/ssh_host_*_key": "the host's SSH host keys"}

# The values come on stdin: neither the ssh command nor sudo's log ever shows them. The
# process keeps them in its argv and environment until killed; its pid is printed.
PLANT = f"""set -e
read -r token; read -r secret
printf '%s %s\\n' "$token" "$secret" | sudo install -m 600 /dev/stdin {PLANT_FILE}
printf '%s %s\\n' "$token" "$secret" | logger -t {TAG}
export CITADEL_SCAN_PLANT=$secret
nohup bash -c 'sleep 600; :' {TAG} "$token" "$secret" </dev/null >/dev/null 2>&1 &
echo $!
"""
# The sleep first: bash then exits by itself, and nothing keeps the environment.
UNPLANT = "pkill -P {pid}; kill {pid}; sudo rm -f " + PLANT_FILE + """
sudo journalctl --rotate && sleep 2 && sudo journalctl --vacuum-time=1s --quiet"""


def fake_token() -> str:
    """An OpenBao service token's shape: "s." and 24 base62 characters, both cases and a digit."""
    alphabet = string.ascii_letters + string.digits
    return "s." + "".join(random_source.choice(alphabet) for _ in range(21)) + "aZ7"


def wait_for_journal(lab, host) -> None:
    deadline = time.monotonic() + 30
    while not ssh(lab, host, f"sudo journalctl --no-pager -o cat -t {TAG}").stdout.strip():
        assert time.monotonic() < deadline, f"logger's line never reached the journal of {host.name}"
        time.sleep(0.5)


def timed_scan(lab, host, secret: str, allowed: dict[str, str]) -> list[Finding]:
    started = time.monotonic()
    findings = scan_host(lab, host, secrets={SECRET: secret}, allowed=allowed)
    print(f"credential scan of {host.name}: {time.monotonic() - started:.1f} s, {len(findings)} findings")
    for finding in findings:
        print(f"  {finding}")
    return findings


def planted(findings: list[Finding], pid: int) -> dict[str, set[str]]:
    """Which of the plants' places (file, journal, argv, environment) hold what."""
    places = {"file": lambda w: w == PLANT_FILE, "journal": lambda w: w.startswith("journal (") and TAG in w,
              "argv": lambda w: w.startswith(f"cmdline of {pid} "), "environment": lambda w: w.startswith(f"environ of {pid} ")}
    return {place: {f.what for f in findings if matches(f.where)} for place, matches in places.items()}


def test_scan_finds_planted_credentials_and_nothing_once_they_are_gone(lab):
    host = lab.hosts[0]
    token, secret = fake_token(), "citadel-scan-" + random_source.token_hex(12)
    pid = int(ssh(lab, host, PLANT, stdin=f"{token}\n{secret}\n").stdout.strip())
    try:
        wait_for_journal(lab, host)
        findings = timed_scan(lab, host, secret, allowed=SSH_HOST_KEYS)
        assert planted(findings, pid) == {"file": {SECRET, VAULT_TOKEN}, "journal": {SECRET, VAULT_TOKEN},
                                          "argv": {SECRET, VAULT_TOKEN}, "environment": {SECRET}}
        shown = [str(f) for f in findings] + [repr(f) for f in findings]
        assert not any(token in text or secret in text for text in shown), "a finding's text shows a value"
    finally:
        ssh(lab, host, UNPLANT.format(pid=pid), check=False)

    after = timed_scan(lab, host, secret, allowed={})
    assert planted(after, pid) == {"file": set(), "journal": set(), "argv": set(), "environment": set()}
    assert not [f for f in after if SECRET == f.what or TAG in f.where], "a plant is still found"
    # Real private keys are found too: every host has its SSH host keys.
    assert Finding(host.name, "/etc/ssh/ssh_host_ed25519_key", PRIVATE_KEY) in after
    # Whatever earlier tests deployed, the planted secret is nowhere: an allowance never covers one.
    assert_no_stray_credentials(lab, secrets={SECRET: secret}, allowed={"*": "only the planted secret is checked"})


def test_a_secret_the_scan_cannot_search_for_is_refused(lab):
    with pytest.raises(ValueError, match="'short'"):
        scan_host(lab, lab.hosts[0], secrets={"short": "abc"}, allowed={})
