"""Wait until vLLM really serves a model: one real completion, not just /health.

vLLM answers /health before its first request can run (a model its CPU attention cannot
serve passes /health and then fails), so the unit's ``ExecStartPost=`` runs this: the
start only succeeds, and whatever is ordered after it only starts, once a one-token
completion comes back 200 through the Unix socket with the API key. The key comes from
the environment (``VLLM_API_KEY``, as systemd gave it to vLLM) or ``--env-file``; it is
never an argument.

Example::

    python3 -m citadel_runtime.vllm_ready tiny-clinical --timeout 540
    sudo python3 -m citadel_runtime.vllm_ready tiny-clinical --env-file /etc/citadel/secrets/keyguard/vllm.env
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from citadel_runtime.uds import UnixHTTPConnection, read_env_file, socket_path


def complete(model: str, key: str, timeout: float = 30) -> tuple[int, bytes]:
    body = json.dumps({"model": model, "prompt": "ok", "max_tokens": 1, "temperature": 0}).encode()
    connection = UnixHTTPConnection(socket_path(model), timeout=timeout)
    try:
        connection.request("POST", "/v1/completions", body=body,
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def alive(pid: int | None) -> bool:
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait(model: str, key: str, timeout: float, pid: int | None = None) -> str | None:
    """None once a completion succeeds; else why not, when `timeout` seconds have passed
    or the server (`pid`, systemd's $MAINPID) has exited."""
    deadline = time.monotonic() + timeout
    why = "no answer yet"
    while time.monotonic() < deadline:
        if not alive(pid):
            return f"the server exited ({why}); its journal says why"
        try:
            status, body = complete(model, key)
            if status == 200:
                return None
            why = f"HTTP {status}: {body[:200].decode(errors='replace')}"
            if status in (401, 403, 404):
                return why  # a wrong key or model name does not heal by waiting
        except OSError as exc:
            why = f"{type(exc).__name__}: {exc}"
        time.sleep(1)
    return why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citadel-vllm-ready", description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--timeout", type=float, default=540)
    parser.add_argument("--env-file", help="read VLLM_API_KEY from this file instead of the environment")
    args = parser.parse_args(argv)
    key = read_env_file(args.env_file).get("VLLM_API_KEY") if args.env_file else os.environ.get("VLLM_API_KEY")
    if not key:
        print(f"{args.model}: no VLLM_API_KEY (the Vault agent's vllm.env)", file=sys.stderr)
        return 2
    started = time.monotonic()
    main_pid = int(os.environ["MAINPID"]) if os.environ.get("MAINPID", "").isdigit() else None
    why = wait(args.model, key, args.timeout, main_pid)
    if why:
        print(f"{args.model}: vLLM did not serve a completion within {args.timeout:.0f} s: {why}", file=sys.stderr)
        return 1
    print(f"{args.model}: serving (first completion after {time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
