"""Run the Vault controls and report: pass, fail, or error (with why), never a silent skip.

Example::

    >>> results = run_checks(Facts(client, site))                   # doctest: +SKIP
    >>> results[0]["id"], results[0]["status"]
    ('vault-tls-only', 'pass')
"""

from __future__ import annotations

from deploy.redaction import redact
from hardening.vault.controls import CONTROLS


def _error(exc: Exception) -> str:
    import hvac  # heavy: imported late, so `citadel --help` stays fast
    import requests

    if isinstance(exc, hvac.exceptions.Forbidden):
        return "permission denied: the token lacks a read this check needs (see hardening/vault/auditor.hcl)"
    if isinstance(exc, requests.RequestException):
        return f"lost the connection to Vault ({type(exc).__name__})"
    return redact(f"{type(exc).__name__}: {exc}")


def run_checks(facts, controls=CONTROLS) -> list[dict]:
    """One result per control: id, title, severity, status, evidence, and the references."""
    results = []
    for control in controls:
        try:
            verdict = control.check(facts)
            status, evidence = verdict.status, verdict.message
        except Exception as exc:  # a check that cannot run is an error result, not a crash
            status, evidence = "error", _error(exc)
        results.append({
            "id": control.id, "title": control.title, "severity": control.severity, "status": status,
            "evidence": redact(evidence), "remediation": control.remediation,
            "refs": control.refs.model_dump(exclude_defaults=True),
        })
    return results


def exit_code(results: list[dict]) -> int:
    """0 all pass, 1 a failure, 2 a check could not run (like `citadel audit`)."""
    statuses = {r["status"] for r in results}
    return 2 if "error" in statuses else 1 if "fail" in statuses else 0
