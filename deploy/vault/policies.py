"""Citadel's ACL policies: kept as HCL files in ``deploy/vault/policies/``, checked, rendered.

Each host group has one policy, ``citadel-<group>.hcl``. Mount names are placeholders
(``{{kv_mount}}`` ...) so a site can rename its mounts; :func:`render` fills them in.
:func:`check` enforces least privilege on the text itself, so a careless edit fails the
unit tests before it reaches a server: no ``sudo``/``root`` capability, no glob (``*`` or
``+``) anywhere except at the end of the group's own KV prefix
(``{{kv_mount}}/data/<group>/*``).

Example::

    >>> text = policy_text("gpu")
    >>> check("gpu", text)
    []
    >>> render(text, kv_mount="citadel", transit_mount="citadel-transit", pki_mount="citadel-pki").count("{{")
    0
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

POLICY_DIR = Path(__file__).parent / "policies"
GROUPS = ("gpu", "gateway")  # inventory.schema.GroupName
PLACEHOLDERS = ("kv_mount", "transit_mount", "pki_mount")
FORBIDDEN_CAPABILITIES = {"sudo", "root"}

# A small parser for the subset of HCL policies use: path "X" { capabilities = [...] }.
_RULE = re.compile(r'path\s+"(?P<path>[^"]*)"\s*\{(?P<body>[^{}]*)\}', re.S)
_CAPS = re.compile(r"capabilities\s*=\s*\[(?P<list>[^\]]*)\]")


@dataclass(frozen=True)
class Rule:
    path: str
    capabilities: tuple[str, ...]


def policy_name(group: str) -> str:
    return f"citadel-{group}"


def policy_file(group: str) -> Path:
    return POLICY_DIR / f"{policy_name(group)}.hcl"


def policy_text(group: str) -> str:
    return policy_file(group).read_text()


def _strip_comments(text: str) -> str:
    return "\n".join(re.sub(r"\s*#.*$", "", line) for line in text.splitlines())


def parse(text: str) -> list[Rule]:
    """The path rules of a policy; anything else in the text is an error."""
    body = _strip_comments(text)
    rules = []
    for match in _RULE.finditer(body):
        caps = _CAPS.search(match["body"])
        if caps is None:
            raise ValueError(f"path {match['path']!r} has no capabilities list")
        rules.append(Rule(match["path"], tuple(c.strip().strip('"') for c in caps["list"].split(",") if c.strip())))
    leftover = _RULE.sub("", body).strip()
    if leftover:
        raise ValueError(f"unexpected text outside path blocks: {leftover[:60]!r}")
    return rules


def check(group: str, text: str) -> list[str]:
    """Least-privilege problems of `group`'s policy text (empty when it is fine)."""
    problems = []
    own_prefix = f"{{{{kv_mount}}}}/data/{group}/"
    try:
        rules = parse(text)
    except ValueError as exc:
        return [str(exc)]
    if not rules:
        problems.append("no path rules")
    for rule in rules:
        globbed = "*" in rule.path or "+" in rule.path
        if globbed and rule.path != own_prefix + "*":
            problems.append(f"path {rule.path!r}: globs are only allowed as {own_prefix}*")
        if rule.path.strip("/*+") == "" or not rule.path.startswith("{{"):
            problems.append(f"path {rule.path!r}: must be under one of Citadel's mounts")
        bad = FORBIDDEN_CAPABILITIES.intersection(rule.capabilities)
        if bad:
            problems.append(f"path {rule.path!r}: grants {', '.join(sorted(bad))}")
        if not rule.capabilities:
            problems.append(f"path {rule.path!r}: empty capabilities")
    for name in set(re.findall(r"\{\{(\w+)\}\}", text)) - set(PLACEHOLDERS):
        problems.append(f"unknown placeholder {{{{{name}}}}}")
    return problems


def render(text: str, **mounts: str) -> str:
    """`text` with every mount placeholder replaced (all must be given)."""
    missing = set(PLACEHOLDERS) - set(mounts)
    if missing:
        raise ValueError(f"missing mount names: {', '.join(sorted(missing))}")
    for name in PLACEHOLDERS:
        text = text.replace(f"{{{{{name}}}}}", mounts[name])
    return text
