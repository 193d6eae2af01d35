"""The site left alone with short lifetimes: every credential renews itself, no chat fails.

On the vllm tier's host (tests/vllm/conftest.py), the inventory's ``vault.lifetimes`` are
shortened (token 60 s; host credential ``CITADEL_SOAK_CREDENTIAL_SECONDS`` and certificates
``CITADEL_SOAK_CERTIFICATE_SECONDS``, 180 s each by default, the smallest the schema allows,
so that CI can afford five lifetimes), ``citadel vault bootstrap`` and a deploy of the
vault-agent role apply them. Then nobody does anything for five times the longest lifetime
while a chat goes through the gateway every 10 s:

- no chat fails;
- the host's identity and its services' certificates are renewed several times (serials
  sampled every 20 s);
- at the end, ``citadel secrets status`` shows every identity and certificate current.

The site's own lifetimes are put back afterwards (bootstrap and deploy again).
"""

from __future__ import annotations

import json
import os
import time

import pytest
import yaml

from tests.lab.vaultutil import run_citadel
from tests.vllm.conftest import on_host
from tests.vllm.test_site_over_time import ChatLoop

SHORT = {"token_seconds": 60,
         "host_credential_seconds": int(os.environ.get("CITADEL_SOAK_CREDENTIAL_SECONDS", 180)),
         "certificate_seconds": int(os.environ.get("CITADEL_SOAK_CERTIFICATE_SECONDS", 180))}
LIFETIME = max(SHORT.values())
SERIALS = {
    "identity gpu": "/var/lib/citadel-agent/gpu/identity.pem",
    "identity gateway": "/var/lib/citadel-agent/gateway/identity.pem",
    "keyguard certificate": "/etc/citadel/secrets/keyguard/tls.pem",
    "gateway certificate": "/etc/citadel/secrets/gateway/tls.pem",
}


def apply(env, inventory) -> None:
    for args in (("vault", "bootstrap"), ("deploy", "--role", "vault-agent")):
        code, out, err, _ = run_citadel(*args, "-i", str(inventory), token=env["token"], extra_env=env["extra"],
                                        timeout=900)
        assert code == 0, (args, out[-2000:], err[-2000:])


def serials(env) -> dict[str, str]:
    script = "; ".join(f"openssl x509 -noout -serial -in {path}" for path in SERIALS.values())
    lines = on_host(env, f"sudo sh -c '{script}'").stdout.split()
    return dict(zip(SERIALS, lines, strict=True))


# Five lifetimes plus the two re-deploys: beyond the suite's default per-test timeout when
# the lifetimes are the (certificates of about 10 min, 50 min in all).
@pytest.mark.timeout(5 * LIFETIME + 1800)
def test_left_alone_for_five_lifetimes_every_credential_renews_and_no_chat_fails(env, gw, tmp_path):
    data = yaml.safe_load(env["inventory"].read_text())
    data["vault"]["lifetimes"] = SHORT
    short = tmp_path / "short-lifetimes.yaml"
    short.write_text(yaml.safe_dump(data, sort_keys=False))
    apply(env, short)
    try:
        seen = {name: {serial} for name, serial in serials(env).items()}
        duration = 5 * LIFETIME
        with ChatLoop(gw, every=10) as loop:
            ends = time.monotonic() + duration
            while time.monotonic() < ends:
                time.sleep(20)
                for name, serial in serials(env).items():
                    seen[name].add(serial)
        failed = [s for s in loop.statuses if s != 200]
        renewals = {name: len(found) - 1 for name, found in seen.items()}
        print(f"unattended {duration} s (lifetimes {SHORT}): {len(loop.statuses)} chats, {len(failed)} failed; "
              f"renewals {renewals}")
        assert not failed, failed
        assert all(count >= 4 for count in renewals.values()), renewals
        code, out, err, _ = run_citadel("secrets", "status", "-i", str(short), "--json", token=env["token"])
        rows = {(r["kind"], r["name"]): r for r in json.loads(out)["secrets"]}
        for kind in ("host-identity", "tls-cert"):
            for group in ("gpu", "gateway"):
                row = rows[(kind, group)]
                assert row["phase"] == "current" and not row["due"], row
    finally:
        apply(env, env["inventory"])
