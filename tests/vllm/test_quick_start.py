"""Issue 17's must-show: the README's quick start, run as written in a fresh clone, then its curl.

A new user's first hour, on this machine: ``git clone`` (here, of this checkout's HEAD),
the commands of the README's "Quick start" block, then the ``curl`` that ``./demo.sh``
printed, then the teardown it printed. The answer must be a 200 with a completion; its
record must be in the gateway's audit log (found by the request id in the answer's
headers), the log's chain must verify; after the teardown no lab process, mount,
namespace or link and no Vault server of the demo is left, and the demo's directories are
gone.

The demo's own directories go under this test's temporary directory
(``CITADEL_DEMO_DIR``, ``CITADEL_DEMO_VAULT_DIR``: demo.sh's documented settings), so a
person's demo on this machine is not touched; the lab is the demo's own (``citadel``,
10.77.0.0/16), so a running lab of that name is refused rather than taken over.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import require_root

ROOT = Path(__file__).resolve().parents[2]
DEMO_LAB = "citadel"
DEMO_SECONDS = 3600  # a cold machine builds the rootfs, the apt repository and the wheelhouse first


def quick_start_commands(readme: str) -> list[str]:
    """The shell lines of the README's quick start: its first ```sh block that runs ./demo.sh."""
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```sh\n(.*?)```", section, re.S):
        if "./demo.sh" in block:
            return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    raise AssertionError("the README's quick start has no ```sh block that runs ./demo.sh")


def printed_command(output: str, starts: str) -> str:
    """A command the demo printed: the indented line starting with `starts`, with its continuation lines."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith(starts):
            command = [line.strip()]
            while command[-1].endswith("\\"):
                index += 1
                command.append(lines[index].strip())
            return "\n".join(command)
    raise AssertionError(f"the demo printed no command starting with {starts!r}:\n{output[-3000:]}")


def run(command: str, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_readme_quick_start_in_a_fresh_clone_ends_with_a_curl_that_is_answered_and_recorded(tmp_path):
    require_root("the quick start (./demo.sh)")
    import deploy.lab
    from deploy.lab import state

    if state.load(DEMO_LAB) is not None:
        pytest.fail(f"a lab named {DEMO_LAB} (the demo's) exists on this machine: take it down first "
                    "(`citadel lab down`); this test does not take over a person's demo", pytrace=False)
    clone = tmp_path / "citadel"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=300)
    demo_dir, vault_dir = tmp_path / "demo", tmp_path / "vault"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "CITADEL_"))},
           "CITADEL_DEMO_DIR": str(demo_dir), "CITADEL_DEMO_VAULT_DIR": str(vault_dir)}
    commands = quick_start_commands((clone / "README.md").read_text())
    started = time.monotonic()
    try:
        demo = run("\n".join(commands), clone, env, DEMO_SECONDS)
        output = demo.stdout + demo.stderr
        print(f"\nquick start ({'; '.join(commands)}): exit {demo.returncode} after {time.monotonic() - started:.0f} s")
        assert demo.returncode == 0, output[-6000:]
        assert "the model answered through the gateway" in output, output[-3000:]

        # The curl it printed, as a user pastes it; `citadel` on the PATH as the README says.
        user_env = {**env, "PATH": f"{clone / '.venv/bin'}:{env.get('PATH', '/usr/bin:/bin')}"}
        curl = printed_command(output, "curl ")
        answer = run(f"{curl} --silent --show-error --fail-with-body --dump-header {tmp_path}/headers.txt", tmp_path,
                     user_env, 120)
        assert answer.returncode == 0, answer.stdout + answer.stderr
        completion = json.loads(answer.stdout)
        assert completion["object"] == "chat.completion" and completion["usage"]["completion_tokens"] >= 1, completion
        head = (tmp_path / "headers.txt").read_text()
        assert head.startswith("HTTP/1.1 200"), head
        request_id = re.search(r"(?im)^x-request-id: *(\S+)", head).group(1)
        assert (demo_dir / "demo-client.key").stat().st_mode & 0o777 == 0o600
        assert completion["choices"] and not any(k in answer.stdout for k in ("ck_",)), "a key in the answer"

        # Its record, fetched and read as the demo said.
        fetch = run(printed_command(output, "ssh "), tmp_path, user_env, 60)
        assert fetch.returncode == 0, fetch.stderr
        records = [json.loads(line) for line in (demo_dir / "audit.jsonl").read_text().splitlines() if line.strip()]
        mine = [r for r in records if r.get("request_id") == request_id]
        assert len(mine) == 1 and mine[0]["status"] == 200 and mine[0]["client"] == "demo", mine
        verify = run(printed_command(output, "export BAO_CACERT") + "\n" + printed_command(output, "citadel audit-log verify"),
                     tmp_path, user_env, 120)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        # The teardown it printed (or, when the demo failed before printing it, the same by hand).
        user_env = {**env, "PATH": f"{clone / '.venv/bin'}:{env.get('PATH', '/usr/bin:/bin')}"}
        output = locals().get("output", "")
        try:
            teardown = [printed_command(output, "citadel lab down"), printed_command(output, "rm -rf")]
        except AssertionError:
            teardown = [f"{clone}/.venv/bin/citadel vault stop --dir {vault_dir} || true"]
            deploy.lab.down(name=DEMO_LAB)
        for command in teardown:
            done = run(command, tmp_path, user_env, 600)
            print(f"teardown: {command}: exit {done.returncode}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert deploy.lab.leftovers(name=DEMO_LAB) == [], deploy.lab.leftovers(name=DEMO_LAB)
    assert state.load(DEMO_LAB) is None
    assert not demo_dir.exists() and not vault_dir.exists()
    servers = subprocess.run(["pgrep", "-af", f"bao server -config={vault_dir}"], capture_output=True, text=True).stdout
    assert not servers.strip(), servers
