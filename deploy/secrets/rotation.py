"""The state machine every multi-step rotation follows, and what a rotation reports.

States, kept in KV at ``admin/rotation/<kind>/<name>``::

    (none|done) --rotate--> rotating --steps done--> overlap --finish--> done
                                 \\--(no old secret)----------------------> done

``rotating`` records the intent (the target version) before any step changes anything, so
a re-run after a failure resumes the same rotation: each step checks whether it is already
done and skips it. ``overlap`` means old and new both work; ``finish`` (``rotate
--finish``) retires the old one. Each transition appends a record to the trail.

Example::

    >>> run = Rotation(store, "transit-key", "model-data")        # doctest: +SKIP
    >>> if not run.resuming:                                       # doctest: +SKIP
    ...     run.begin(target=4)
    >>> run.step("rotated the key to version 4")                   # doctest: +SKIP
    >>> run.reach("overlap", versions={"from": 3, "to": 4})        # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deploy.secrets.store import Store, stamp
from deploy.vault import VaultError


@dataclass
class Result:
    """What one `rotate`, `issue` or `revoke` did; never holds a secret value."""

    kind: str
    name: str
    action: str
    phase: str
    version: int | None = None
    previous_version: int | None = None
    overlap_until: str | None = None
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class Rotation:
    """One rotation of one secret: its recorded state, steps and trail records."""

    def __init__(self, store: Store, kind: str, name: str, action: str = "rotate", progress=None):
        self.store = store
        self.kind = kind
        self.name = name
        self.state, self._version = store.state(kind, name)
        self.progress = progress or (lambda text: None)
        self.result = Result(kind, name, action, self.phase)

    @property
    def phase(self) -> str:
        return self.state.get("phase", "none")

    @property
    def resuming(self) -> bool:
        return self.phase == "rotating"

    def _save(self, **changes) -> None:
        self.state.update(changes)
        self._version = self.store.save_state(self.kind, self.name, self.state, self._version)
        self.result.phase = self.phase

    def begin(self, **intent) -> None:
        """Record the intent (before anything changes): who starts what, aiming at what."""
        by = self.store.actor()["display_name"]
        self._save(phase="rotating", started_at=stamp(), started_by=by, **intent)
        self.step(f"recorded the intent: {', '.join(f'{k} {v}' for k, v in intent.items()) or 'rotate'}")

    def remember(self, **details) -> None:
        """Keep what a re-run needs in the state, without a step (accessors, serials)."""
        self._save(**details)

    def step(self, text: str) -> None:
        self.result.steps.append(text)
        self.progress(text)

    def reach(self, phase: str, **details) -> None:
        """Record the new phase and append a trail record of this transition."""
        self._save(phase=phase, **({"finished_at": stamp()} if phase == "done" else {}), **details)
        self.store.record(self.kind, self.name, self.result.action, phase=phase, **details)

    def refuse_overlap(self, what: str, finish_command: str) -> None:
        """Stop a new rotation while the previous one still has two secrets live."""
        if self.phase == "overlap":
            raise VaultError(
                f"{what}: the previous rotation is in overlap (old and new both work); run `{finish_command}` first",
                exit_code=2,
            )

    def refuse_unfinished(self, command: str) -> None:
        """Stop a `--finish` while the rotation itself is incomplete."""
        if self.resuming:
            raise VaultError(
                f"{self.kind} {self.name}: its rotation is unfinished (started {self.state.get('started_at')}); "
                f"re-run `{command}` first",
                exit_code=2,
            )
