"""Audit reports: one result set, four renderings (table, JSON, HTML, JUnit XML).

The HTML report is one self-contained file (inline CSS, no scripts, no external links) that
an auditor can open offline and file: a summary per host and per framework, then every
control with its rationale, references and the evidence observed on each host.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from xml.etree import ElementTree as ET

from hardening.model import Control

FRAMEWORKS = {
    "hipaa": "HIPAA 45 CFR 164.312",
    "nist": "NIST SP 800-53 r5",
    "cis": "CIS Debian 12 benchmark",
    "owasp_llm": "OWASP Top 10 for LLM 2025",
    "threats": "Threat model (Radiology: AI 2025)",
}


def outcome(result) -> str:
    """What a result counts as: pass, fail, waived, notapplicable or error."""
    if result.status in ("fail", "error") and result.waiver and not result.waiver["expired"]:
        return "waived"
    return result.status


@dataclass
class AuditReport:
    site: str
    profile: str
    controls: list[Control]
    results: list  # hardening.engine.Result
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    citadel_version: str = "unknown"  # which code produced the evidence: `citadel audit` gives its own

    @property
    def hosts(self) -> list[str]:
        return sorted({r.host for r in self.results})

    def exit_code(self) -> int:
        counted = Counter(outcome(r) for r in self.results)
        if counted["error"]:
            return 2
        return 1 if counted["fail"] else 0

    def by_host(self) -> dict[str, Counter]:
        summary: dict[str, Counter] = defaultdict(Counter)
        for r in self.results:
            summary[r.host][outcome(r)] += 1
        return dict(sorted(summary.items()))

    def by_framework(self) -> dict[str, dict[str, Counter]]:
        """Per framework, per reference (e.g. 164.312(b)), how its controls' results came out."""
        control_by_id = {c.id: c for c in self.controls}
        summary: dict[str, dict[str, Counter]] = {key: defaultdict(Counter) for key in FRAMEWORKS}
        for r in self.results:
            refs = control_by_id[r.control].refs
            for key in FRAMEWORKS:
                for ref in getattr(refs, key):
                    summary[key][ref][outcome(r)] += 1
        return {key: dict(sorted(refs.items())) for key, refs in summary.items()}

    # --- renderings ---------------------------------------------------------------------

    def to_dict(self) -> dict:
        control_by_id = {c.id: c for c in self.controls}
        return {
            "site": self.site,
            "profile": self.profile,
            "generated_at": self.generated_at,
            "citadel_version": self.citadel_version,
            "exit_code": self.exit_code(),
            "summary": {host: dict(counts) for host, counts in self.by_host().items()},
            "results": [
                {
                    **asdict(r),
                    "outcome": outcome(r),
                    "title": control_by_id[r.control].title,
                    "severity": control_by_id[r.control].severity,
                }
                for r in self.results
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_junit(self) -> str:
        """One test suite per host, one test case per control; waived failures are skipped."""
        root = ET.Element("testsuites", name=f"citadel audit {self.site}")
        control_by_id = {c.id: c for c in self.controls}
        for host in self.hosts:
            mine = [r for r in self.results if r.host == host]
            counts = Counter(outcome(r) for r in mine)
            suite = ET.SubElement(
                root, "testsuite", name=host, tests=str(len(mine)), failures=str(counts["fail"]),
                errors=str(counts["error"]), skipped=str(counts["notapplicable"] + counts["waived"]),
            )
            properties = ET.SubElement(suite, "properties")
            ET.SubElement(properties, "property", name="citadel_version", value=self.citadel_version)
            for r in mine:
                case = ET.SubElement(suite, "testcase", classname=f"citadel.{host}", name=f"{r.control}: {control_by_id[r.control].title}")
                kind = outcome(r)
                if kind == "fail":
                    ET.SubElement(case, "failure", message=r.evidence[:500]).text = r.evidence
                elif kind == "error":
                    ET.SubElement(case, "error", message=r.evidence[:500]).text = r.evidence
                elif kind in ("notapplicable", "waived"):
                    reason = r.evidence if kind == "notapplicable" else f"waived by {r.waiver['approver']}: {r.waiver['justification']}"
                    ET.SubElement(case, "skipped", message=reason[:500])
                ET.SubElement(case, "system-out").text = r.evidence
        return ET.tostring(root, encoding="unicode", xml_declaration=True)

    def to_html(self) -> str:
        e = html.escape
        host_rows = "".join(
            f"<tr><td>{e(h)}</td>" + "".join(f"<td class='{k}'>{c[k]}</td>" for k in _KINDS) + "</tr>"
            for h, c in self.by_host().items()
        )
        framework_sections = []
        for key, refs in self.by_framework().items():
            if not refs:
                continue
            rows = "".join(
                f"<tr><td>{e(ref)}</td>" + "".join(f"<td class='{k}'>{c[k]}</td>" for k in _KINDS) + "</tr>"
                for ref, c in refs.items()
            )
            framework_sections.append(f"<h3>{e(FRAMEWORKS[key])}</h3><table>{_HEAD}{rows}</table>")
        results_by_control = defaultdict(list)
        for r in self.results:
            results_by_control[r.control].append(r)
        control_sections = []
        for c in self.controls:
            mine = results_by_control.get(c.id, [])
            refs = "; ".join(
                f"{FRAMEWORKS[k]}: {', '.join(getattr(c.refs, k))}" for k in FRAMEWORKS if getattr(c.refs, k)
            )
            rows = "".join(
                f"<tr><td>{e(r.host)}</td><td class='{outcome(r)}'>{outcome(r)}</td><td><code>{e(r.evidence)}</code>"
                + (f"<br><em>waiver: {e(r.waiver['justification'])} (approved by {e(r.waiver['approver'])}, "
                   f"expires {e(r.waiver['expires'])}{', EXPIRED' if r.waiver['expired'] else ''})</em>" if r.waiver else "")
                + "</td></tr>"
                for r in mine
            )
            control_sections.append(
                f"<section id='{e(c.id)}'><h3>{e(c.id)}: {e(c.title)} <span class='sev {c.severity}'>{c.severity}</span></h3>"
                f"<p>{e(c.rationale)}</p><p class='refs'>{e(refs)}</p><p class='refs'>Remediated by role: {e(c.remediation)}</p>"
                f"<table><tr><th>host</th><th>result</th><th>evidence</th></tr>{rows}</table></section>"
            )
        return _PAGE.format(
            site=e(self.site), profile=e(self.profile), generated=e(self.generated_at), version=e(self.citadel_version),
            verdict={0: "PASS", 1: "FAIL", 2: "ERROR"}[self.exit_code()],
            host_table=f"<table><tr><th>host</th>{''.join(f'<th>{k}</th>' for k in _KINDS)}</tr>{host_rows}</table>",
            frameworks="".join(framework_sections), controls="".join(control_sections), count=len(self.controls),
        )


_KINDS = ("pass", "fail", "waived", "notapplicable", "error")
_HEAD = "<tr><th>reference</th>" + "".join(f"<th>{k}</th>" for k in _KINDS) + "</tr>"
_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Citadel audit: {site}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }}
.pass {{ color: #17672b; }} .fail {{ color: #b00020; font-weight: bold; }} .error {{ color: #8a4b00; font-weight: bold; }}
.waived {{ color: #5b4a9b; }} .notapplicable {{ color: #666; }}
.sev {{ font-size: 0.7em; padding: 0.1em 0.4em; border-radius: 3px; background: #eee; }}
.refs {{ font-size: 0.85em; color: #555; }} code {{ white-space: pre-wrap; }}
</style></head><body>
<h1>Citadel compliance audit: {site}</h1>
<p>Profile <b>{profile}</b>, {count} controls, generated {generated} by Citadel {version}. Overall result: <b>{verdict}</b>.</p>
<h2>Summary per host</h2>{host_table}
<h2>Summary per framework</h2>{frameworks}
<h2>Controls</h2>{controls}
</body></html>
"""
