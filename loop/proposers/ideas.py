"""The `ideas` proposer: applies queued backlog ideas that carry knob settings or a patch.

One idea per experiment, in file order: the first valid untried idea that has `knobs:` or
`patch:` and that no ledger row has tested yet. Knobs are written with the search proposer's
`write_knob` (the rest of each file byte-for-byte); a knob not declared in autogolf.yaml is
looked up as `NAME=value` in autoresearch.sh, then as a module-level constant in the trainer.
A patch (relative to the backlog's folder) is applied with `git apply` in the worktree.

Everything is checked before anything is written, so an idea that cannot be applied (an
unknown knob, a patch that does not apply) leaves the worktree untouched; it is skipped and
its reason kept in `skipped` for the scheduler to report (e.g. mark the idea invalid).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from loop.backlog.ideas import Idea, IdeasFile, tested_ideas
from loop.proposers.base import Proposal, Proposer
from loop.proposers.search import Knob, KnobError, format_value, read_knobs, write_knob
from loop.store.gitsession import GitError, git

# Where an undeclared knob is looked for, in order: (file, kind) as in search.Knob.
FALLBACK_FILES = (("autoresearch.sh", "env"), ("benchmark/train_gpt_mlx.py", "const"))
# Bounds for an undeclared knob: an idea's value is a person's explicit choice, not a search
# step, so only finiteness is checked (search.Knob needs some whole-number bounds).
_WIDE = 1e15
MAX_DESCRIPTION = 160


class IdeaNotApplicable(Exception):
    """This idea cannot be applied to the worktree; the message says why."""


class IdeasProposer(Proposer):
    name = "ideas"

    def __init__(self, ideas: Path | str | Callable[[], IdeasFile],
                 knobs: Sequence[Knob] = (), *,
                 fallback_files: Sequence[tuple[str, str]] = FALLBACK_FILES):
        """`ideas`: the backlog's path, or a callable returning a loaded IdeasFile.
        `knobs`: the knobs declared in autogolf.yaml (their file and kind are used)."""
        if callable(ideas):
            self._load = ideas
        else:
            path = Path(ideas)
            self._load = lambda: IdeasFile.load(path, missing_ok=True)
        self.knobs = list(knobs)
        self.fallback_files = tuple(fallback_files)
        self.skipped: dict[str, str] = {}  # idea id -> why it could not be applied

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        """Apply the next applicable idea to `worktree`; None when none is left."""
        backlog = self._load()
        tested = tested_ideas(history)
        for idea in backlog.untried():
            if not idea.applicable or idea.id in tested or idea.id in self.skipped:
                continue
            try:
                return self._apply(Path(worktree), idea, backlog.path.parent)
            except IdeaNotApplicable as e:
                self.skipped[idea.id] = str(e)
        return None

    def skipped_ideas(self) -> dict[str, str]:
        return dict(self.skipped)

    def _apply(self, worktree: Path, idea: Idea, base: Path) -> Proposal:
        settings = [(self._knob(worktree, name, value), value)
                    for name, value in idea.knobs.items()]
        old = {knob.name: read_knobs(worktree, [knob])[knob.name] for knob, _ in settings}
        patch = _patch_path(idea, base) if idea.patch else None
        if patch is not None:
            _git_apply(worktree, patch, check=True)
            _git_apply(worktree, patch, check=False)
        for knob, value in settings:
            write_knob(worktree, knob, value)
        changes = [f"{knob.name} {format_value(knob, old[knob.name])} -> "
                   f"{format_value(knob, value)}" for knob, value in settings]
        if patch is not None:
            changes.append(f"patch {idea.patch}")
        return Proposal(description=_describe(idea, changes),
                        knobs=self._configuration(worktree, idea), idea=idea.id)

    def _knob(self, worktree: Path, name: str, value: float | int) -> Knob:
        """The declared knob of that name, else one found in a fallback file; the value must
        suit its type. Raises IdeaNotApplicable before anything is written."""
        declared = next((k for k in self.knobs if k.name == name), None)
        # A whole number may set a float line too (`QK_GAIN_INIT=5` where the line says 1.5).
        types = ("int", "float") if isinstance(value, int) else ("float",)
        candidates = [declared] if declared else [
            Knob(name, file, kind, kind_type, -_WIDE, _WIDE)
            for file, kind in self.fallback_files for kind_type in types]
        problems = []
        for knob in candidates:
            try:
                read_knobs(worktree, [knob])  # the line exists exactly once and is numeric
                knob.coerce(value)
                return knob
            except KnobError as e:
                problems.append(str(e))
        raise IdeaNotApplicable(f"knob {name}: " + "; ".join(problems))

    def _configuration(self, worktree: Path, idea: Idea) -> dict[str, float | int] | None:
        """The full declared-knob configuration after the change, when that describes it
        completely (only declared knobs, no patch); None otherwise, so the search proposer
        treats a kept idea like any code change."""
        declared = {k.name for k in self.knobs}
        if not self.knobs or idea.patch or not set(idea.knobs) <= declared:
            return None
        try:
            return read_knobs(worktree, self.knobs)
        except KnobError:
            return None


def _patch_path(idea: Idea, base: Path) -> Path:
    path = Path(idea.patch)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise IdeaNotApplicable(f"patch file {idea.patch} not found (looked at {path})")
    return path


def _git_apply(worktree: Path, patch: Path, check: bool) -> None:
    args = ["apply", "--whitespace=nowarn", *(["--check"] if check else []), str(patch)]
    try:
        git(worktree, *args)
    except GitError as exc:
        detail = str(exc).split(": ", 1)[-1].strip().splitlines()
        raise IdeaNotApplicable(f"patch {patch.name} does not apply: "
                                f"{detail[0] if detail else 'git apply failed'}") from None


def _describe(idea: Idea, changes: list[str]) -> str:
    text = f"{idea.id} {', '.join(changes)}: {idea.text}"
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."
