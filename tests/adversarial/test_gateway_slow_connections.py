"""Issue 15, item 2: slow and idle connections are bounded in number and in time.

On the baseline a refused request's body was drained with a 5 s timeout per read but no
total, there was no cap on connections, in total or per source, and a half-sent head was
closed after 30 s with no record. One byte every 4 s held a connection forever; once the
descriptor limit was reached, ``accept()`` failed and real clients timed out.

Now connections are counted at accept, in total and per source, before TLS; a head must
arrive within its deadline once started (else 408, recorded), and a refused body is drained
within a total deadline. The must-show, at loopback scale: 1,000 slow connections from one
source (127.0.0.2, a byte every few seconds) do not stop a real client's requests (from
127.0.0.1), and the gateway's descriptors and memory stay bounded. The gateway runs with a
descriptor limit of 512 here, so that on the baseline the attack exhausts it, as on a host;
its own limits are set within it (256 connections, 128 accepted at once), as a host's are
within the unit's 65,536 (1,024 and 1,024 by default).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

from tests.adversarial.harness import CHAT
from tests.gateway_harness import REPO

ATTACKER = r"""
import asyncio, json, random, ssl, sys
port, ca, connections, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000
context = ssl.create_default_context(cafile=ca)
counts = {"held": 0, "refused": 0, "answered": 0, "most_open": 0}
open_now = 0

async def slow(end):
    global open_now
    while asyncio.get_running_loop().time() < end:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost", local_addr=("127.0.0.2", 0)), 15)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            counts["refused"] += 1
            await asyncio.sleep(2 + 2 * random.random())
            continue
        counts["held"] += 1
        open_now += 1
        counts["most_open"] = max(counts["most_open"], open_now)
        try:
            for index in range(len(HEAD)):  # one byte every few seconds, until the gateway gives up
                writer.write(HEAD[index:index + 1])
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(65536), 2 + random.random()):
                        counts["answered"] += 1  # a 408: the head took too long
                        break
                    break  # closed
                except asyncio.TimeoutError:
                    pass
                if asyncio.get_running_loop().time() > end:
                    break
        except (OSError, ssl.SSLError):
            pass
        finally:
            open_now -= 1
            writer.close()

async def main():
    end = asyncio.get_running_loop().time() + seconds
    await asyncio.gather(*(slow(end) for _ in range(connections)))

asyncio.run(main())
print(json.dumps(counts), flush=True)
"""


def test_a_thousand_slow_connections_from_one_source_do_not_stop_a_real_client(gateway_with):
    gateway = gateway_with(descriptor_limit=512, config={"max_connections": 256, "listen_backlog": 128},
                           policies={"ward": {"models": ["tiny"], "max_tokens": 8, "requests_per_minute": 100_000}})
    descriptors_before, memory_before = gateway.open_descriptors(), gateway.resident_kib()
    seconds = 30
    attacker = subprocess.Popen([sys.executable, "-c", ATTACKER, str(gateway.port), str(gateway.tls.ca_file), "1000",
                                 str(seconds)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(8)  # every attacking connection has been tried at least once
        latencies, descriptors, memory = [], [], []
        end = time.monotonic() + seconds - 12
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                status = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT, timeout=10)[0]
            except (TimeoutError, OSError) as exc:
                status = type(exc).__name__
            latencies.append(time.perf_counter() - started)
            assert status == 200, f"a real client was refused while the slow connections were held: {status}"
            descriptors.append(gateway.open_descriptors())
            memory.append(gateway.resident_kib())
            time.sleep(0.05)
        load = json.loads(attacker.communicate(timeout=seconds + 60)[0])
    finally:
        attacker.kill()
    p50, p99 = statistics.median(latencies) * 1000, statistics.quantiles(latencies, n=100)[98] * 1000
    print(f"\nreal client: {len(latencies)} requests on new connections, p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
          f"gateway descriptors {descriptors_before} -> at most {max(descriptors)}, resident "
          f"{memory_before} -> at most {max(memory)} KiB; attacker: {load}")
    assert load["most_open"] >= 64 and load["refused"] > 0, load  # the attack was real, and met the limit
    # The source's 64, the connections accepted in one go before the over-limit ones are
    # closed (at most listen_backlog), and a few of the real client's: far from the 512.
    assert max(descriptors) <= descriptors_before + 64 + 128 + 20
    assert max(memory) - memory_before < 64 * 1024
    # The must-show is p99 under 100 ms (a new TLS connection per request, here); CI shares
    # two cores with the whole suite, so the test allows five times that. What it catches
    # is the baseline's failure: accept() failing, and real clients timing out.
    assert p99 < 500, f"p99 {p99:.1f} ms"


def test_a_half_sent_head_gets_a_408_and_a_record(gateway_with):
    gateway = gateway_with(config={"head_seconds": 2})
    with gateway.tls_socket(timeout=15) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")  # and no more
        started = time.monotonic()
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 6
    records = gateway.wait_for_records(1)
    assert [(r["status"], r["client"], r["source"]) for r in records] == [(408, None, "127.0.0.1")]


def test_a_refused_body_is_drained_within_a_total_deadline(gateway_with):
    gateway = gateway_with(config={"drain_seconds": 2})
    with gateway.tls_socket(timeout=15) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000000\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 401")  # no key: refused before the body
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 12:  # a byte a second, each within any per-read timeout
            try:
                sock.sendall(b"x")
                sock.settimeout(1)
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
        assert closed, "the gateway still holds a connection that sends a byte a second"
        assert time.monotonic() - started < 8
