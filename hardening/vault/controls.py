"""The Vault controls: one record each, with a read-only check over the API.

"As configured" means as ``citadel vault bootstrap`` sets it (its constants and the
inventory), so a drift made by hand on the server shows up here.

Example::

    >>> [c.id for c in CONTROLS][:2]
    ['vault-tls-only', 'vault-audit-device']
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from deploy.secrets.status import key_version_times
from deploy.secrets.store import now, parse_time
from deploy.vault.bootstrap import TRANSIT_KEYS, _same_networks, host_networks, seconds, token_limits
from deploy.vault.identity import agent_pki_role
from deploy.vault.policies import FORBIDDEN_CAPABILITIES, GROUPS, parse, policy_name
from hardening.checks import Verdict
from hardening.model import References
from hardening.vault.model import VaultControl

CA_MIN_DAYS_LEFT = 30  # time to plan a CA rollover: every host certificate chains to it


def _verdict(problems: list[str], ok: str) -> Verdict:
    return Verdict("fail", "; ".join(problems)) if problems else Verdict("pass", ok)


def tls_only(facts) -> Verdict:
    """https, and plain http to the same port gets no API answer."""
    import requests  # heavy: imported late, so `citadel --help` stays fast

    parts = urlsplit(facts.address)
    if parts.scheme != "https":
        return Verdict("fail", f"Citadel reaches Vault at {facts.address}, not over https")
    plain = f"http://{parts.hostname}:{parts.port or 443}/v1/sys/health"
    try:
        answer = requests.get(plain, timeout=5, allow_redirects=False)
    except requests.RequestException:
        return Verdict("pass", f"{facts.address} verified with TLS; plain http to the same port gets no connection")
    if "initialized" in answer.text:
        return Verdict("fail", f"{plain} answers the API without TLS (HTTP {answer.status_code})")
    return Verdict("pass", f"{facts.address} verified with TLS; plain http gets HTTP {answer.status_code}, no API")


def audit_device(facts) -> Verdict:
    devices = facts.audit_devices
    if not devices:
        return Verdict("fail", "no audit device is enabled: requests to secrets leave no record")
    return Verdict("pass", "enabled: " + ", ".join(f"{path} ({d.get('type')})" for path, d in sorted(devices.items())))


def no_root_token(facts) -> Verdict:
    token = facts.token
    if "root" in (token.get("policies") or []):
        return Verdict("fail", f"Citadel is using a root token ({token.get('display_name')}): use an operator's token")
    if not token.get("ttl"):
        return Verdict("fail", f"the token in use ({token.get('display_name')}) never expires")
    return Verdict("pass", f"token {token.get('display_name')} with policies {', '.join(token['policies'])}, "
                           f"expiring in {token['ttl']} s")


def _roles(facts):
    """(group, host, cert auth role name, its settings or None) of every host not revoked."""
    for (group, host), (name, role) in sorted(facts.identities.items()):
        yield group, host, name, role


def identity_ttls(facts) -> Verdict:
    limits = token_limits(facts.site)
    credential = facts.site.vault.lifetimes.host_credential_seconds
    problems, seen = [], []
    for group, host, name, role in _roles(facts):
        if role is None:
            problems.append(f"identity role {name} is missing (run citadel vault bootstrap)")
            continue
        for field, limit in limits.items():
            value = int(role.get(field) or 0)
            if value == 0 or value > limit:  # 0 means unlimited
                problems.append(f"{name} {field} = {value or 'unlimited'}, expected at most {limit}")
        if sorted(role.get("allowed_common_names") or []) != [host]:
            problems.append(f"{name} accepts common names {role.get('allowed_common_names') or 'any'}, not only {host}")
        if sorted(role.get("allowed_organizational_units") or []) != [agent_pki_role(group)]:
            problems.append(f"{name} does not require the identity OU {agent_pki_role(group)}")
        seen.append(name)
    for group in GROUPS:
        issuer = facts.agent_pki_roles.get(group)
        if issuer is None:
            continue
        value = seconds(issuer.get("max_ttl") or 0)
        if value == 0 or value > credential:
            problems.append(f"PKI role {agent_pki_role(group)} issues identities for {value or 'unlimited'} s, "
                            f"expected at most {credential}")
    return _verdict(problems, f"{', '.join(seen) or 'no host'}: tokens <= {limits['token_ttl']} s (max "
                              f"{limits['token_max_ttl']} s), identities <= {credential} s, one host each")


def identity_cidrs(facts) -> Verdict:
    problems, seen = [], []
    for _group, host, name, role in _roles(facts):
        wanted = host_networks(facts.site, host)
        if role is None:
            problems.append(f"identity role {name} is missing")
            continue
        if not role.get("token_bound_cidrs"):
            problems.append(f"{name} token_bound_cidrs is empty: its tokens work from anywhere")
        elif not _same_networks(role["token_bound_cidrs"], wanted):
            problems.append(f"{name} token_bound_cidrs = {role['token_bound_cidrs']}, expected the host's {wanted}")
        seen.append(f"{name} -> {', '.join(wanted)}")
    return _verdict(problems, "bound to their hosts: " + ("; ".join(seen) or "no host"))


def no_wildcard_policies(facts) -> Verdict:
    """Citadel's policies (and any other attached to its identity roles): no globs but the own KV prefix."""
    problems, seen = [], []
    # Each group's own policy, and any other policy an identity role hands out.
    attached = {(group, policy) for group, _host, _name, role in _roles(facts)
                for policy in (role or {}).get("token_policies") or []}
    for group, policy in sorted({(g, policy_name(g)) for g in GROUPS} | attached):
        if policy == "default":
            continue
        text = facts.policy(policy)
        if text is None:
            problems.append(f"policy {policy} is missing")
            continue
        allowed = f"{facts.vault.kv_mount}/data/{group}/*"
        for rule in parse(text):
            if ("*" in rule.path or "+" in rule.path) and rule.path != allowed:
                problems.append(f"{policy} grants wildcard path {rule.path!r}")
            bad = FORBIDDEN_CAPABILITIES.intersection(rule.capabilities)
            if bad:
                problems.append(f"{policy} grants {', '.join(sorted(bad))} on {rule.path!r}")
        seen.append(policy)
    return _verdict(problems, f"{', '.join(seen)}: exact paths only (and each group's own KV prefix)")


def transit_key_age(facts) -> Verdict:
    max_days = facts.site.settings.transit_key_max_age_days
    problems, seen = [], []
    for name in TRANSIT_KEYS:
        info = facts.transit_keys[name]
        if info is None:
            problems.append(f"transit key {name} is missing")
            continue
        latest = int(info["latest_version"])
        created = key_version_times(info).get(latest)
        if created is None:  # hmac keys: the server reports no version times; judge the auto-rotation
            period = seconds(info.get("auto_rotate_period") or 0)
            if not period or period > max_days * 86400:
                problems.append(f"{name}: no version time reported and auto-rotation is not within {max_days} days")
            else:
                seen.append(f"{name} v{latest} (auto-rotated every {period // 86400} days)")
            continue
        age = (now() - created).days
        if age > max_days:
            problems.append(f"{name} v{latest} is {age} days old (policy: {max_days})")
        else:
            seen.append(f"{name} v{latest} {age} days old")
    return _verdict(problems, f"within {max_days} days: " + ", ".join(seen))


def transit_keys_stay_in_vault(facts) -> Verdict:
    problems = []
    for name, info in facts.transit_keys.items():
        for flag in ("exportable", "allow_plaintext_backup", "deletion_allowed"):
            if info and info.get(flag):
                problems.append(f"{name} has {flag}=true")
    return _verdict(problems, "no key exportable, backed up in plaintext or deletable")


def ca_not_near_expiry(facts) -> Verdict:
    from cryptography import x509  # heavy: imported late, so `citadel --help` stays fast

    pem = facts.ca_certificate
    if not pem:
        return Verdict("fail", f"no CA in {facts.vault.pki_mount} (run citadel vault bootstrap)")
    cert = x509.load_pem_x509_certificate(pem.encode())
    left = (cert.not_valid_after_utc - now()).days
    if left < CA_MIN_DAYS_LEFT:
        return Verdict("fail", f"the CA expires in {left} days ({cert.not_valid_after_utc:%Y-%m-%d})")
    return Verdict("pass", f"the CA expires in {left} days ({cert.not_valid_after_utc:%Y-%m-%d})")


def secrets_rotated(facts) -> Verdict:
    """The internal key and client keys: rotated within the policy, none stuck midway."""
    max_age = dt.timedelta(days=facts.site.settings.transit_key_max_age_days)
    when, problems, seen = now(), [], []
    states = {"internal-api-key vllm": facts.kv("admin/rotation/internal-api-key/vllm")}
    for label, state in states.items():
        if not state:
            problems.append(f"{label} was never issued by citadel secrets")
        elif state.get("phase") == "rotating":
            problems.append(f"{label}: a rotation stopped midway at {state.get('started_at')}; re-run it")
        else:
            last = parse_time(state.get("finished_at") or state.get("started_at"))
            if last and when - last > max_age:
                problems.append(f"{label} last rotated {last:%Y-%m-%d}, older than {max_age.days} days")
            else:
                seen.append(label)
    for name, entry in ((facts.kv("gateway/client-keys") or {}).get("clients") or {}).items():
        created = parse_time(entry["current"]["created"])
        if when - created > max_age:
            problems.append(f"client key {name} is from {created:%Y-%m-%d}, older than {max_age.days} days")
        else:
            seen.append(f"client-key {name}")
    return _verdict(problems, f"rotated within {max_age.days} days: {', '.join(seen) or 'nothing issued'}")


TRANSMISSION = ["164.312(e)(1)", "164.312(e)(2)(ii)"]
ACCESS = ["164.312(a)(1)", "164.312(d)"]

CONTROLS = [
    VaultControl(
        id="vault-tls-only", title="Vault is reached over verified TLS only", severity="critical",
        rationale="Tokens, keys and unwrapped data keys cross this link; over plain HTTP anyone on the path reads them.",
        refs=References(hipaa=TRANSMISSION, nist=["SC-8", "SC-8(1)", "SC-23"], owasp_llm=["LLM02"], threats=["T9", "T10"]),
        check=tls_only, remediation="listen with TLS only; set vault.address to https and vault.ca_file"),
    VaultControl(
        id="vault-audit-device", title="Vault has an audit device enabled", severity="high",
        rationale="Every read of a secret and every rotation must leave a record, or a leak cannot be traced.",
        refs=References(hipaa=["164.312(b)"], nist=["AU-2", "AU-3", "AU-12"], threats=["T10", "T9"]),
        check=audit_device, remediation="declare an audit device in the server's config (OpenBao) or enable one"),
    VaultControl(
        id="vault-no-root-token", title="Citadel does not use a root token", severity="high",
        rationale="A root token can do anything, forever; an operator's token is attributable, limited and expires.",
        refs=References(hipaa=["164.312(a)(2)(i)", "164.312(d)"], nist=["AC-6(2)", "IA-2", "IA-5"], threats=["T9"]),
        check=no_root_token, remediation="give Citadel an operator's token with a TTL; revoke root tokens after setup"),
    VaultControl(
        id="vault-host-identity-ttls", title="Each host logs in with its own short-lived identity and tokens",
        severity="high",
        rationale="A stolen host token must stop working within its lifetime, a stolen identity within the host "
                  "credential's, and one host's identity must never log in as another's.",
        refs=References(hipaa=ACCESS, nist=["IA-5(1)", "AC-12", "IA-4", "IA-3"], threats=["T9", "T10"]),
        check=identity_ttls, remediation="citadel vault bootstrap"),
    VaultControl(
        id="vault-host-identity-cidrs", title="Host tokens only work from their own host's address", severity="high",
        rationale="A token copied off a host is useless anywhere else when it is bound to the host's address.",
        refs=References(hipaa=ACCESS, nist=["AC-3", "IA-3", "SC-7"], threats=["T9"]),
        check=identity_cidrs, remediation="citadel vault bootstrap"),
    VaultControl(
        id="vault-policy-no-wildcards", title="Citadel's policies grant exact paths, no wildcards", severity="high",
        rationale="A glob grants secrets that do not exist yet; least privilege means naming each path.",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-6", "AC-3"], owasp_llm=["LLM06"], threats=["T9", "T10"]),
        check=no_wildcard_policies, remediation="fix deploy/vault/policies/*.hcl, then citadel vault bootstrap"),
    VaultControl(
        id="vault-transit-key-age", title="Transit keys are younger than the rotation policy", severity="medium",
        rationale="Rotation bounds how much data one key protects and how long a leaked key is useful.",
        refs=References(hipaa=["164.312(a)(2)(iv)"], nist=["SC-12", "SC-13"], owasp_llm=["LLM04"], threats=["T10", "T1"]),
        check=transit_key_age, remediation="citadel secrets rotate transit-key NAME"),
    VaultControl(
        id="vault-transit-keys-stay-in-vault", title="Transit keys cannot be exported, backed up or deleted",
        severity="high",
        rationale="Model data keys and the signing key are only safe while their material never leaves Vault.",
        refs=References(hipaa=["164.312(a)(2)(iv)", "164.312(c)(1)"], nist=["SC-12", "SC-28"], owasp_llm=["LLM03"],
                        threats=["T8", "T10"]),
        check=transit_keys_stay_in_vault, remediation="citadel vault bootstrap (an exportable key must be replaced)"),
    VaultControl(
        id="vault-ca-not-near-expiry", title=f"The PKI root CA is valid for {CA_MIN_DAYS_LEFT} more days at least",
        severity="medium",
        rationale="When the CA expires every host certificate fails at once: the model goes offline.",
        refs=References(hipaa=TRANSMISSION, nist=["SC-17", "SC-12"], threats=["T5", "T9"]),
        check=ca_not_near_expiry, remediation="plan a CA rollover before it expires"),
    VaultControl(
        id="vault-secrets-rotated", title="API keys are rotated within the policy", severity="medium",
        rationale="Keys that never change make a leak permanent; a rotation stuck midway leaves two keys live.",
        refs=References(hipaa=["164.312(d)", "164.312(a)(1)"], nist=["IA-5(1)", "SC-12"], owasp_llm=["LLM02", "LLM10"],
                        threats=["T9", "T10"]),
        check=secrets_rotated, remediation="citadel secrets rotate KIND [NAME] (see citadel secrets status)"),
]
