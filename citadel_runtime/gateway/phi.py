"""The protected health information guard: find identifiers in prompts; count, redact or refuse.

Written here on purpose, with the standard library's regular expressions. The maintained
PII libraries either download language models at run time (Presidio needs a spaCy model;
so do spaCy-based name finders), which an air-gapped host cannot and should not do, or are
unmaintained (scrubadub's last release is 2023) - and the gateway installs nothing beyond
Debian's python3. What it finds: medical record numbers (with an MRN label), phone numbers,
e-mail addresses, social security numbers, insurance identifiers (Medicare MBI, or a
member/policy number with its label), dates, street addresses, and names where a title or
label marks them ("Dr. Smith", "patient: Jane Doe"). Free-standing names are not detected
(no offline library does that well): the record says the guard is pattern-based.

Modes per client: ``off``, ``detect`` (counts go into the record), ``redact`` (each finding
becomes ``[KIND]`` before the prompt is forwarded), ``block`` (the request is refused, 422).

Example::

    >>> found = scan("Call 555-123-4567 about MRN 00123456, DOB 03/04/1950.")
    >>> sorted(found)
    ['date', 'mrn', 'phone']
    >>> redact("SSN 123-45-6789")
    'SSN [SSN]'
"""

from __future__ import annotations

import re

MONTHS = "Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
STREET = "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy"

# Order matters: the more specific patterns (SSN, MBI, MRN) claim their text before phone/date.
PATTERNS: list[tuple[str, re.Pattern]] = [
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    ("ssn", re.compile(r"\b(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}\b")),
    ("insurance", re.compile(
        r"\b[1-9][AC-HJKMNP-RT-Yac-hjkmnp-rt-y][AC-HJKMNP-RT-Yac-hjkmnp-rt-y0-9]\d-?[AC-HJKMNP-RT-Yac-hjkmnp-rt-y]"
        r"[AC-HJKMNP-RT-Yac-hjkmnp-rt-y0-9]\d-?[AC-HJKMNP-RT-Yac-hjkmnp-rt-y]{2}\d{2}\b"
        r"|\b(?:member|policy|insurance|subscriber|medicaid|medicare)\s*(?:id|no\.?|number|#)?\s*[:#]?\s*[A-Z0-9-]{6,20}\b",
        re.IGNORECASE)),
    ("mrn", re.compile(r"\b(?:MRN|medical record(?: number)?|record no\.?|chart)\s*[:#]?\s*[A-Z]{0,3}\d{5,12}\b", re.IGNORECASE)),
    ("phone", re.compile(r"(?<![\w-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b|\+\d{2,3}(?:[ .-]?\d{2,4}){3,5}\b")),
    ("date", re.compile(
        r"\b\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)?\d{2}\b|\b(?:19|20)\d{2}-\d{2}-\d{2}\b"
        rf"|\b(?:{MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d{{2}}\b|\b\d{{1,2}} (?:{MONTHS})\.? (?:19|20)\d{{2}}\b")),
    ("address", re.compile(rf"\b\d{{1,6}} (?:[A-Z][a-z]+ ){{1,3}}(?:{STREET})\b\.?")),
    ("name", re.compile(
        r"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.? [A-Z][a-z]+(?: [A-Z][a-z]+)?"
        r"|\b(?:patient|name|pt)\s*:\s*[A-Z][a-z]+(?: [A-Z][a-z]+){0,2}")),
]
MODES = ("off", "detect", "redact", "block")


def scan(text: str) -> dict[str, int]:
    """Counts of each kind of identifier found in `text` (kinds with none are left out)."""
    counts: dict[str, int] = {}
    for kind, pattern in PATTERNS:
        hits = pattern.findall(text)
        if hits:
            counts[kind] = counts.get(kind, 0) + len(hits)
            text = pattern.sub(" ", text)  # claimed: a later pattern does not count it again
    return counts


def redact(text: str) -> str:
    for kind, pattern in PATTERNS:
        text = pattern.sub(f"[{kind.upper()}]", text)
    return text


def texts(body: dict) -> list[tuple[object, object]]:
    """(container, key) of every prompt text in an OpenAI-style request body."""
    found: list[tuple[object, object]] = []
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        found.append((body, "prompt"))
    elif isinstance(prompt, list):
        found += [(prompt, i) for i, p in enumerate(prompt) if isinstance(p, str)]
    inputs = body.get("input")
    if isinstance(inputs, str):
        found.append((body, "input"))
    elif isinstance(inputs, list):
        found += [(inputs, i) for i, p in enumerate(inputs) if isinstance(p, str)]
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            found.append((message, "content"))
        elif isinstance(content, list):
            found += [(part, "text") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)]
    return found


def guard(body: dict, mode: str) -> tuple[dict[str, int], bool]:
    """Scan (and, in redact mode, rewrite in place) a request body: (counts, changed)."""
    if mode == "off":
        return {}, False
    counts: dict[str, int] = {}
    changed = False
    for container, key in texts(body):
        text = container[key]
        for kind, n in scan(text).items():
            counts[kind] = counts.get(kind, 0) + n
        if mode == "redact":
            new = redact(text)
            if new != text:
                container[key] = new
                changed = True
    return counts, changed
