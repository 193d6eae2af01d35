r"""The protected health information guard: find identifiers in requests; count, redact or refuse.

Written here on purpose, with the standard library's regular expressions. The maintained
PII libraries either download language models at run time (Presidio needs a spaCy model;
so do spaCy-based name finders), which an air-gapped host cannot and should not do, or are
unmaintained (scrubadub's last release is 2023) - and the gateway installs nothing beyond
Debian's python3. What it finds: medical record numbers (with an MRN label), phone numbers,
e-mail addresses, social security numbers, insurance identifiers (Medicare MBI, or a
member/policy number with its label), dates, ages over 89, street addresses, and names
where a title or label marks them ("Dr. Smith", "patient: Jane Doe"). Free-standing names
are not detected (no offline library does that well): the record says the guard is
pattern-based. docs/phi-guard.md has its measured precision and recall per kind.

Where it looks: every string in the request body that can reach the model or its chat
template (prompts, messages and their names, content parts, documents, tools, tool-call
arguments, chat_template_kwargs, stop strings, ...; dict keys too), all but the top-level
``model`` (the routing key, already checked against the client's allowlist).

How it reads a string: invisible format characters (Unicode category Cf: zero-width
spaces and joiners, soft hyphens, BOMs, ...) and the other default-ignorable characters
are removed, and the text is put in NFKC form (full-width digits, ligatures and other
compatibility forms become their plain letters), so "5\u200b55-12-3456" or "５５５-１２３-４５６７"
count as what they are. Every pattern runs in time linear in the text's length (bounded
repetitions, no quantifiers that can trade characters); the normalisation is bounded too.

Modes per client: ``off``, ``detect`` (counts go into the record), ``redact`` (each finding
becomes ``[KIND]`` before the request is forwarded), ``block`` (the request is refused, 422).
A string in which redact mode finds something is forwarded in its normalised form with the
findings replaced; a string with no finding is forwarded exactly as it came.

Example::

    >>> found = scan("Call 555-123-4567 about MRN 00123456, DOB 03/04/1950.")
    >>> sorted(found)
    ['date', 'mrn', 'phone']
    >>> redact("SSN 123-45-6789")
    'SSN [SSN]'
    >>> scan("SSN 123\u200b-45-6789, phone ５５５-１２３-４５６７")
    {'ssn': 1, 'phone': 1}
    >>> body = {"model": "m", "documents": [{"text": "patient: Jane Doe"}]}
    >>> guard(body, "redact"), body["documents"][0]["text"]
    (({'name': 1}, True), '[NAME]')
"""

from __future__ import annotations

import re
import unicodedata

MODES = ("off", "detect", "redact", "block")

# Bounds of the body walk, whoever calls it: past them ``guard`` raises BodyTooComplex (a
# ValueError; the gateway refuses the request with 400). Real requests stay far below.
MAX_DEPTH = 32
MAX_STRINGS = 100_000

# --- normalisation ---------------------------------------------------------------------

# Cf characters and non-starters live in planes 0, 1 and 14 only (the others hold CJK
# ideographs, private use and unassigned code points); tests/unit/test_phi.py checks that
# against the whole range. Walking 135k code points at import takes ~30 ms, not ~110 ms.
_PLANES = (*range(0x20000), *range(0xE0000, 0xE1000))
# Default-ignorable characters that are not Cf (DerivedCoreProperties.txt): a text renders
# the same without them, so they could split an identifier as well as a zero-width space.
_IGNORABLE_NOT_CF = ("\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u3164\ufe00-\ufe0f\uffa0"
                     "\U000e0100-\U000e01ef")


def _char_class(codes: list[int]) -> str:
    """A regex character class body of these code points, as ranges."""
    parts, start = [], None
    for index, code in enumerate(codes):
        if start is None:
            start = code
        if index + 1 == len(codes) or codes[index + 1] != code + 1:
            parts.append(re.escape(chr(start)) if start == code else f"{re.escape(chr(start))}-{re.escape(chr(code))}")
            start = None
    return "".join(parts)


def _starts_with_non_starter(char: str) -> bool:
    """Whether the character's NFKD form begins with a combining (non-starter) character."""
    if unicodedata.combining(char):
        return True
    return bool(unicodedata.decomposition(char)) and bool(unicodedata.combining(unicodedata.normalize("NFKD", char)[0]))


_INVISIBLE = re.compile(
    "[" + _char_class([c for c in _PLANES if unicodedata.category(chr(c)) == "Cf"]) + _IGNORABLE_NOT_CF + "]+")
_NON_STARTER = "[" + _char_class([c for c in _PLANES if _starts_with_non_starter(chr(c))]) + "]"
# CPython's NFKC sorts each run of combining marks with an insertion sort: quadratic in the
# run's length (80k marks: minutes). As Unicode's Stream-Safe Text Format (UAX #15) does, a
# combining grapheme joiner (U+034F, a starter that renders as nothing) goes after every 30
# non-starters, so no run is longer; real text never has 30 marks on one letter.
_LONG_MARK_RUN = re.compile(f"({_NON_STARTER}{{30}})(?={_NON_STARTER})")


def normalise(text: str) -> str:
    r"""The text as the patterns read it: invisible characters removed, then NFKC.

    >>> normalise("5\u200b5\u200b5-1\u00ad2-３４５６")
    '555-12-3456'
    """
    if text.isascii():  # nothing to remove, and ASCII is already NFKC
        return text
    text = _INVISIBLE.sub("", text)
    text = _LONG_MARK_RUN.sub("\\1\u034f", text)
    return unicodedata.normalize("NFKC", text)


# --- patterns --------------------------------------------------------------------------
# Every pattern runs in linear time: each repetition is bounded (and possessive, ``{m,n}+``,
# where giving characters back cannot help), and no two adjacent repetitions can match the
# same characters, so a failed attempt at one position costs a bounded number of steps.
# Where it reads as well, a pattern starts with a character class rather than an assertion
# such as \b: the engine then skips to candidate characters instead of trying a match at
# every position (four times faster on prose).

MONTHS = "Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?"
STREET = "Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Parkway|Pkwy"
DAY = r"(?:0?[1-9]|[12]\d|3[01])"
MONTH = r"(?:0?[1-9]|1[0-2])"
YEAR = r"(?:19|20)\d{2}"
MBI = "[AC-HJKMNP-RT-Yac-hjkmnp-rt-y]"  # the letters a Medicare Beneficiary Identifier uses
NAME = r"(?:[A-Z]')?[A-Z][a-z]{1,30}+(?:-?[A-Z][a-z]{1,30}+)?"  # Smith, O'Brien, McDonald, Smith-Jones
SPACE = r"\s{0,3}+"
WORD_DIGIT = r"\d(?<!\w\d)"  # \b\d, written class-first
NOT_IN_NUMBER = r"(?<![\w./-])"  # a date or number starts here, not inside a longer one
NUMBER_ENDS = r"(?![-/.]?\d)"  # ... and ends here
NOT_A_DOSE = r"(?!\s?(?:mg|mcg|g|kg|mL|ml|L|units?|mmHg|%)\b)"  # "titrate 5-10-20 mg" (from philter's negative contexts)


def starting_with(first: str, pattern: str, flags: int = 0) -> re.Pattern:
    """The pattern behind a lookahead on the characters a match can start with (`first`, a
    character class's inside): where none can start, one test fails instead of every
    alternative being tried (three times faster on prose). tests/unit/test_phi.py checks
    each pattern finds the same with and without it."""
    return re.compile(f"(?=[{first}])(?:{pattern})", flags)


# Order matters: the more specific patterns (SSN, MBI, MRN) claim their text before phone/date.
PATTERNS: list[tuple[str, re.Pattern]] = [
    ("email", re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}+@(?:[A-Za-z0-9-]{1,63}+\.){1,8}[A-Za-z]{2,24}+\b")),
    # area (not 000, 666 or 9xx), group (not 00), serial (not 0000), one separator throughout
    ("ssn", re.compile(rf"{WORD_DIGIT}\d\d(?<!000|666|9\d\d)([- ])\d\d(?<!00)\1\d{{4}}(?<!0000)\b")),
    ("insurance", starting_with(
        r"\dmpisg", rf"\b[1-9]{MBI}[{MBI[1:-1]}0-9]\d-?{MBI}[{MBI[1:-1]}0-9]\d-?{MBI}{{2}}\d{{2}}\b"
        rf"|\b(?:member|policy|insurance|subscriber|medicaid|medicare){SPACE}(?:id|no\.?|number|#)?{SPACE}[:#]?"
        rf"{SPACE}(?=[A-Z-]{{0,19}}\d)[A-Z0-9-]{{6,20}}\b",
        re.IGNORECASE)),
    ("mrn", starting_with(
        "mrcph", rf"\b(?:MRN|MR#|medical record(?: number| no\.?)?|record no\.?|chart(?: no\.?| number)?|patient id|hospital no\.?)"
        rf"{SPACE}[:#]?{SPACE}[A-Z]{{0,3}}\d{{5,12}}\b",
        re.IGNORECASE)),
    ("phone", starting_with(r"\d(+", r"(?<![\w-])(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b|\+\d{1,3}(?:[ .-]?\d){6,14}\b")),
    ("date", starting_with(
        r"\dADFJMNOS", rf"{NOT_IN_NUMBER}(?:{DAY}/{DAY}/(?:19|20)?\d{{2}}|{DAY}-{DAY}-(?:19|20)?\d{{2}}|{DAY}\.{DAY}\.{YEAR}"
        rf"|{YEAR}([-/]){MONTH}\1{DAY}|{YEAR}\.(?:0[1-9]|1[0-2])\.(?:0[1-9]|[12]\d|3[01])){NUMBER_ENDS}{NOT_A_DOSE}"
        rf"|\b(?:{MONTHS})\.?\s{{1,2}}+{DAY}(?:st|nd|rd|th)?\b(?:,?\s{{1,2}}+{YEAR}\b)?"
        rf"|\b{DAY}(?:st|nd|rd|th)?\s{{1,2}}+(?:of\s{{1,2}}+)?(?:{MONTHS})\b\.?(?:,?\s{{1,2}}+{YEAR}\b)?")),
    ("age", re.compile(  # HIPAA's Safe Harbor names ages over 89; younger ones are not identifiers
        r"\b(?:9\d|1[01]\d)(?:[- ]?(?:years?|yrs?)[- ]old|\s?(?:yo|y/o|y\.o\.))(?!\w)"
        rf"|\b(?:age|aged){SPACE}:?{SPACE}(?:9\d|1[01]\d)\b",
        re.IGNORECASE)),
    ("address", re.compile(rf"{WORD_DIGIT}\d{{0,5}}+ (?:[NSEW]\.? )?(?:[A-Z][a-z]{{1,30}}+ ){{1,3}}(?:{STREET})\b\.?")),
    ("name", starting_with(
        "MDPpnNgG", rf"\b(?:Mr|Mrs|Ms|Miss|Dr|Prof)\.? (?:[A-Z]\. )?{NAME}(?: {NAME})?"
        rf"|\b(?i:patient|pt|name|next of kin|guardian){SPACE}:{SPACE}{NAME}(?: (?:[A-Z]\. )?{NAME}){{1,2}}")),
]
KINDS = tuple(kind for kind, _ in PATTERNS)
# A text none of whose characters could start a finding is skipped after one cheap search:
# every pattern needs a digit, an '@', a ':' (labelled names) or a title (titled names).
_MAYBE = re.compile(r"[\d@:]|Mr|Ms|Dr|Prof|Miss")


def _replace(normal: str) -> tuple[str, dict[str, int]]:
    """(normalised text with each finding replaced by ``[KIND]``, counts per kind)."""
    counts: dict[str, int] = {}
    if not _MAYBE.search(normal):
        return normal, counts
    for kind, pattern in PATTERNS:
        if kind == "email" and "@" not in normal:
            continue  # the one pattern that would try a match at every letter of prose
        normal, n = pattern.subn(f"[{kind.upper()}]", normal)
        if n:
            counts[kind] = n
    return normal, counts


def findings(text: str) -> tuple[str, dict[str, int]]:
    """(the text with each finding replaced by ``[KIND]``, counts per kind), or (text, {}).

    When something is found the text returned is the normalised one (see ``normalise``).
    Each finding is claimed by the first pattern that matches it, so none counts twice.
    """
    replaced, counts = _replace(normalise(text))
    return (replaced, counts) if counts else (text, counts)


def scan(text: str) -> dict[str, int]:
    """Counts of each kind of identifier found in `text` (kinds with none are left out)."""
    return findings(text)[1]


def redact(text: str) -> str:
    """The text with each finding replaced by ``[KIND]`` (normalised first, if anything is found)."""
    return findings(text)[0]


# --- where to look ---------------------------------------------------------------------

class BodyTooComplex(ValueError):
    """The body is nested deeper than MAX_DEPTH or holds more than MAX_STRINGS strings."""


def _walk(body: dict) -> tuple[list[tuple[object, object]], list[dict]]:
    """(container, key) of every string value in the body, and every dict in it (for their keys).

    Iterative, with bounds: a hostile body cannot make it recurse or run without end.
    """
    values: list[tuple[object, object]] = []
    mappings: list[dict] = []
    strings = 0
    stack: list[tuple[object, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BodyTooComplex(f"the body is nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict):
            items = node.items()
            mappings.append(node)
            strings += len(node)  # its keys
        else:
            items = enumerate(node)
        for key, value in items:
            if isinstance(value, str):
                if node is body and key == "model":
                    continue  # the routing key, matched against the allowlist; never templated
                values.append((node, key))
                strings += 1
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
        if strings > MAX_STRINGS:
            raise BodyTooComplex(f"the body holds more than {MAX_STRINGS} strings")
    return values, mappings


def texts(body: dict) -> list[tuple[object, object]]:
    """(container, key) of every string value in a request body that can reach the model.

    That is every string anywhere in the body but the top-level ``model``; numbers, booleans
    and nulls are settings. (``guard`` scans the dicts' keys as well.) Raises BodyTooComplex
    past MAX_DEPTH or MAX_STRINGS.

    >>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1}
    >>> sorted(container[key] for container, key in texts(body))
    ['hi', 'user']
    """
    return _walk(body)[0]


# Every string of a body is scanned in one pass over their concatenation: no pattern can
# match this separator, and it reads to every pattern like the end of a text, so the
# findings are exactly those of the strings one by one, at a fraction of the calls.
SEPARATOR = "\x00"


def _rename(mapping: dict, names: dict[str, str]) -> None:
    """Rename keys of a dict in place, keeping its order; two keys redacted alike stay two."""
    renamed: dict = {}
    for key, value in mapping.items():
        new = names.get(key, key)
        while new in renamed:
            new += "'"
        renamed[new] = value
    mapping.clear()
    mapping.update(renamed)


def _rewrite(values: list, keys: list, strings: list[str]) -> bool:
    """Redact each string with a finding in place (values, then keys); whether any changed."""
    renames: dict[int, tuple[dict, dict[str, str]]] = {}
    changed = False
    for index, text in enumerate(strings):
        new, found = findings(text)
        if not found:
            continue
        changed = True
        if index < len(values):
            container, key = values[index]
            container[key] = new
        else:
            mapping, key = keys[index - len(values)]
            renames.setdefault(id(mapping), (mapping, {}))[1][key] = new
    for mapping, names in renames.values():  # after the values: a rename would break their (container, key)
        _rename(mapping, names)
    return changed


def guard(body: dict, mode: str) -> tuple[dict[str, int], bool]:
    """Scan (and, in redact mode, rewrite in place) a request body: (counts, changed).

    Pure apart from that rewrite, and its input is plain JSON data, so it can run in a
    worker process (see ``guarded`` for one that returns the rewritten body). Raises
    BodyTooComplex past MAX_DEPTH or MAX_STRINGS.
    """
    if mode not in MODES:
        raise ValueError(f"unknown PHI mode {mode!r}")
    if mode == "off":
        return {}, False
    values, mappings = _walk(body)
    keys = [(mapping, key) for mapping in mappings for key in mapping if isinstance(key, str)]
    strings = [container[key] for container, key in values] + [key for _, key in keys]
    _, counts = _replace(normalise(SEPARATOR.join(strings)))
    if mode != "redact" or not counts:
        return counts, False
    return counts, _rewrite(values, keys, strings)


def guarded(body: dict, mode: str) -> tuple[dict[str, int], dict | None]:
    """(counts, the rewritten body, or None when unchanged): ``guard`` for a worker process,
    whose in-place rewrite the caller would not see.

    >>> guarded({"prompt": "call 555-123-4567"}, "redact")
    ({'phone': 1}, {'prompt': 'call [PHONE]'})
    """
    counts, changed = guard(body, mode)
    return counts, body if changed else None
