"""Precision and recall of the PHI guard per identifier kind, on the labelled corpus beside it.

A finding counts as right when it overlaps an expected identifier of the same kind (the
guard's findings may include a label, "MRN: 00123456", where the corpus marks the number).
Precision: right findings / findings. Recall: identifiers some finding overlaps / identifiers.
tests/unit/test_phi.py asserts floors on these; docs/phi-guard.md publishes the table.

Run:  .venv/bin/python tests/phi_corpus/evaluate.py

Example::

    >>> locate("Call 555-123-4567 or mail a@example.org")
    [('email', 26, 39), ('phone', 5, 17)]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from citadel_runtime.gateway.phi import KINDS, PATTERNS, normalise  # noqa: E402

CORPUS = Path(__file__).with_name("corpus.jsonl")


def locate(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each finding in ``normalise(text)``, as ``phi.scan`` counts them.

    Same patterns, same order; each claimed finding is masked with ``[XX..]`` of its own
    length (as the guard puts ``[KIND]``: brackets around capitals, which no later pattern
    matches), so the offsets stay those of the normalised text.
    tests/unit/test_phi.py checks the counts agree with ``scan`` on the whole corpus.
    """
    masked = normalise(text)
    found = []
    for kind, pattern in PATTERNS:
        spans = [match.span() for match in pattern.finditer(masked)]
        for start, end in spans:
            found.append((kind, start, end))
            masked = masked[:start] + "[" + "X" * (end - start - 2) + "]" + masked[end:]
    return found


def load(path: Path = CORPUS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Score:
    findings: int = 0
    right: int = 0  # findings that overlap an expected identifier of their kind
    expected: int = 0
    recalled: int = 0  # expected identifiers some finding of their kind overlaps

    @property
    def precision(self) -> float:
        return self.right / self.findings if self.findings else 1.0

    @property
    def recall(self) -> float:
        return self.recalled / self.expected if self.expected else 1.0


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(rows: list[dict]) -> dict[str, Score]:
    scores = {kind: Score() for kind in KINDS}
    for row in rows:
        found = locate(row["text"])
        for kind, start, end in found:
            scores[kind].findings += 1
            scores[kind].right += any(k == kind and overlaps((start, end), (s, e)) for k, s, e in row["spans"])
        for kind, start, end in row["spans"]:
            scores[kind].expected += 1
            scores[kind].recalled += any(k == kind and overlaps((start, end), (s, e)) for k, s, e in found)
    return scores


def table(scores: dict[str, Score]) -> str:
    lines = ["| kind | identifiers | findings | precision | recall |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {s.expected} | {s.findings} | {s.precision:.3f} | {s.recall:.3f} |"
              for kind, s in scores.items()]
    return "\n".join(lines)


def main() -> None:
    rows = load()
    print(f"{len(rows)} sentences, {sum(not r['spans'] for r in rows)} without any identifier\n")
    print(table(score(rows)))


if __name__ == "__main__":
    main()
