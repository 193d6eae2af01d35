"""Read-only facts about the running model servers, for the audit (run as root on a GPU host).

Everything is read from the kernel (``/proc``, the service cgroups), not from the unit or
its settings, so a check sees what runs, not what was meant to run. Each subcommand prints
its evidence (never a secret) and exits 0 when the control holds, 1 when it does not:

- ``listeners``: every listening socket of the model server's user, in whatever network
  namespace it lives, is on loopback (vLLM's own door is a Unix socket);
- ``key-on-cmdline``: the vLLM API key appears in no process's command line;
- ``offline``: each vLLM process runs with the offline variables set;
- ``flags``: no remote code, no development routes, no runtime LoRA, unless the
  inventory opted that model in by name (``/etc/citadel/vllm/MODEL.conf``);
- ``served``: each configured model has its server running on its unseal mount.

Example::

    python3 -m citadel_runtime.vllm_inspect listeners
"""

from __future__ import annotations

import glob
import ipaddress
import os
import pwd
import subprocess
import sys

from citadel_runtime.layout import MODEL_CONFIG_DIR, MODEL_MOUNT_ROOT, MODEL_USER, VLLM_CONF_DIR, VLLM_KEY_FILE
from citadel_runtime.uds import read_env_file

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
TRUE = {"1", "true", "yes"}


def configured() -> list[str]:
    return sorted(os.path.basename(p)[:-len(".conf")] for p in glob.glob(f"{VLLM_CONF_DIR}/*.conf"))


def main_pid(model: str) -> int | None:
    """The server's main process: the one systemd started, whose environment and flags the
    engine's processes inherit (their own /proc environ is overwritten by setproctitle)."""
    shown = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", f"citadel-vllm@{model}.service"],
                           capture_output=True, text=True).stdout.strip()
    return int(shown) if shown.isdigit() and shown != "0" else None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def argv(pid: int) -> list[str]:
    return [a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a]


def environ(pid: int) -> dict[str, str]:
    pairs = [e.decode(errors="replace").partition("=") for e in _read(f"/proc/{pid}/environ").split(b"\0") if e]
    return {k: v for k, _, v in pairs}


def _address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return str(ipaddress.IPv6Address(words))


def listening(pid: int) -> list[str]:
    """'ADDRESS:PORT/proto' of the TCP listeners and bound UDP sockets this process holds."""
    inodes = set()
    for fd in glob.glob(f"/proc/{pid}/fd/*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto, table in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
        for line in _read(f"/proc/{pid}/net/{table}").decode().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[9] not in inodes:
                continue
            if proto == "tcp" and fields[3] != "0A":  # 0A: LISTEN
                continue
            host, port = fields[1].split(":")
            found.append(f"{_address(host)}:{int(port, 16)}/{proto}")
    return sorted(set(found))


def user_pids(user: str) -> list[int]:
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except OSError:
                continue
    return sorted(pids)


def cmd_listeners() -> int:
    bad, total = [], 0
    for pid in user_pids(MODEL_USER):
        for endpoint in listening(pid):
            total += 1
            if not ipaddress.ip_address(endpoint.rsplit(":", 1)[0]).is_loopback:
                bad.append(f"pid {pid} ({' '.join(argv(pid)[:3])[:60]}): {endpoint}")
    if bad:
        print(f"{MODEL_USER} listens beyond loopback: " + "; ".join(bad))
        return 1
    print(f"{MODEL_USER}: {total} socket(s) listening, all on loopback (in its own network namespace)")
    return 0


def cmd_key_on_cmdline() -> int:
    key = read_env_file(VLLM_KEY_FILE).get("VLLM_API_KEY") if os.path.exists(VLLM_KEY_FILE) else None
    if not key:
        print("no vLLM API key on this host")
        return 0
    needle = key.encode()
    shown = [f"pid {d} ({_read(f'/proc/{d}/comm').decode().strip()})" for d in os.listdir("/proc")
             if d.isdigit() and needle in _read(f"/proc/{d}/cmdline")]
    if shown:
        print("the vLLM API key is on the command line of " + ", ".join(shown))
        return 1
    print("the vLLM API key is on no process's command line")
    return 0


def _each_running(check) -> int:
    models = configured()
    # The model-store role's NAME.json: the models this host unseals.
    unsealed = sorted(os.path.basename(p)[:-len(".json")] for p in glob.glob(f"{MODEL_CONFIG_DIR}/*.json"))
    missing = [m for m in unsealed if m not in models]
    if missing:
        print(f"unsealed for serving but no model server configured: {', '.join(missing)}")
        return 1
    if not models:
        print("serves no model")
        return 0
    bad = 0
    for model in models:
        pid = main_pid(model)
        if pid is None:
            print(f"{model}: citadel-vllm@{model} is not running")
            bad = 1
            continue
        problems = sorted(check(model, pid))
        print(f"{model}: " + ("; ".join(problems) if problems else "ok"))
        bad |= bool(problems)
    return bad


def _offline(model: str, pid: int) -> list[str]:
    env = environ(pid)
    return [f"{k}={env.get(k, '(unset)')}, not {v}" for k, v in OFFLINE.items() if env.get(k) != v]


def _flags(model: str, pid: int) -> list[str]:
    opted = read_env_file(f"{VLLM_CONF_DIR}/{model}.conf")
    args, env = argv(pid), environ(pid)
    problems = []
    remote = [a for a in args if a in ("--trust-remote-code", "--no-trust-remote-code")]
    if remote[-1:] == ["--trust-remote-code"] and opted.get("CITADEL_OPT_IN_TRUST_REMOTE_CODE") != "1":
        problems.append("runs with --trust-remote-code without the inventory's opt-in")
    if env.get("VLLM_SERVER_DEV_MODE", "0").strip().lower() in TRUE:
        problems.append("development routes on (VLLM_SERVER_DEV_MODE)")
    lora = env.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING", "0").strip().lower() in TRUE
    if lora and opted.get("CITADEL_OPT_IN_RUNTIME_LORA") != "1":
        problems.append("runtime LoRA loading on without the inventory's opt-in")
    return problems


def _served(model: str, pid: int) -> list[str]:
    args = argv(pid)
    if "--model" not in args:
        return [f"pid {pid} names no --model"]
    served = args[args.index("--model") + 1]
    if served != f"{MODEL_MOUNT_ROOT}/{model}":
        return [f"serves {served}, not its unseal mount {MODEL_MOUNT_ROOT}/{model}"]
    return []


COMMANDS = {
    "listeners": cmd_listeners,
    "key-on-cmdline": cmd_key_on_cmdline,
    "offline": lambda: _each_running(_offline),
    "flags": lambda: _each_running(_flags),
    "served": lambda: _each_running(_served),
}


def main(argv_: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv_ is None else argv_
    if len(args) != 1 or args[0] not in COMMANDS:
        print(f"usage: python3 -m citadel_runtime.vllm_inspect {{{','.join(COMMANDS)}}}", file=sys.stderr)
        return 2
    return COMMANDS[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
