"""The built-in `search` proposer: small moves of declared knobs around the incumbent.

A knob is a number in one file of the worktree: an env default `NAME=value` at column 0 of a
shell script (autoresearch.sh) or a module-level constant `NAME = value` in a Python file (the
trainer). The proposer reads the incumbent's values, moves one knob (sometimes two) by one
small step, and writes the file. It learns from the ledger which directions helped and never
proposes a configuration that any ledger row already measured. Works offline, no model.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loop.proposers.base import Proposal, Proposer
from loop.proposers.shape import SHAPE_DEFAULTS, shape_refusal, size_model
from loop.settings.knobs import Knob as Knob  # a knob's declaration: the `knobs:` setting
from loop.settings.knobs import KnobError as KnobError
from loop.store.files import atomic_write
from loop.store.statuses import names_where

# Step ladders, smallest first: a direction moves by the smallest step whose result is not
# measured yet, so a neighbourhood is explored from close to far before it is exhausted.
LOG_FACTORS = (1.25, 1.5, 2.0)        # multiply (up) or divide (down)
LINEAR_FRACTIONS = (0.05, 0.1, 0.2)   # of the knob's range [low, high]
PAIR_PROBABILITY = 0.15               # how often two knobs move together
PROPOSAL_DIGITS = 3                   # significant digits of a proposed float (readable files)
CANONICAL_DIGITS = 6                  # significant digits when comparing configurations

# Ledger statuses that say something about a direction. A failed check, a duplicate or an
# interrupted run measured nothing; a crash, timeout or oversized artifact did (e.g. LR up ->
# divergence), so they count as losses.
_WIN = names_where(search="win")
_LOSS = names_where(search="loss")

_NUMBER = r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"


def snap(knob: Knob, value: float) -> float:
    """The nearest value on the knob's step grid (itself when the knob has no step)."""
    if knob.step is None:
        return value
    snapped = knob.low + round((value - knob.low) / knob.step) * knob.step
    return float(snapped) if knob.type == "int" else _round_float(snapped)


# ---------------------------------------------------------------------------------------------
# Reading and writing knob lines


def _line_regex(knob: Knob) -> re.Pattern[str]:
    """Lines that assign the knob; group 1 is everything after the `=`."""
    name = re.escape(knob.name)
    if knob.kind == "env":
        return re.compile(rf"^{name}=(.*)$", re.MULTILINE)
    # Module level = column 0; an optional annotation (`NAME: float = 0.04`); not `==`.
    return re.compile(rf"^{name}[ \t]*(?::[^=\n]*)?=(?!=)(.*)$", re.MULTILINE)


def _value_regex(knob: Knob) -> re.Pattern[str]:
    """The assigned text: a numeric literal, optionally quoted / `${NAME:-...}` (env), and an
    optional trailing comment. Groups pre, val, post, rest let a write keep the line's form."""
    if knob.kind == "env":
        pre = rf"\$\{{{re.escape(knob.name)}:-|\"|'|"
        post = r"\}|\"|'|"
    else:
        pre, post = r"[ \t]*", ""
    return re.compile(rf"(?P<pre>{pre})(?P<val>{_NUMBER})(?P<post>{post})(?P<rest>\s*(?:#.*)?)")


_CLOSERS = {"": "", '"': '"', "'": "'"}


def _locate(text: str, knob: Knob, path: Path) -> tuple[re.Match[str], re.Match[str]]:
    """The knob's only assignment line and its parsed value; KnobError naming file and knob."""
    lines = list(_line_regex(knob).finditer(text))
    form = f"`{knob.name}=<value>` at column 0" if knob.kind == "env" else \
        f"module-level `{knob.name} = <value>`"
    if not lines:
        raise KnobError(f"{path}: knob {knob.name}: no line {form}")
    if len(lines) > 1:
        numbers = ", ".join(str(text.count("\n", 0, m.start()) + 1) for m in lines)
        raise KnobError(f"{path}: knob {knob.name}: assigned on lines {numbers}; "
                        "exactly one line is required")
    line = lines[0]
    value = _value_regex(knob).fullmatch(line.group(1))
    closer = _CLOSERS.get(value.group("pre"), "}") if value else None
    if value is None or (knob.kind == "env" and value.group("post") != closer):
        lineno = text.count("\n", 0, line.start()) + 1
        raise KnobError(f"{path}:{lineno}: knob {knob.name}: `{line.group(0).strip()}` does "
                        "not assign a plain numeric literal")
    return line, value


def _parse(knob: Knob, literal: str, where: Path) -> float | int:
    try:
        return knob.coerce(float(literal.replace("_", "")))
    except (ValueError, KnobError) as e:
        raise KnobError(f"{where}: knob {knob.name}: bad value {literal!r} ({e})") from None


def _read_text(path: Path, knob: Knob) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:  # keep \r\n as it is
            return f.read()
    except OSError as e:
        raise KnobError(f"{path}: knob {knob.name}: cannot read the file ({e})") from None


def read_knobs(worktree: Path, knobs: Sequence[Knob]) -> dict[str, float | int]:
    """Current value of every knob in the worktree, in declaration order."""
    texts: dict[str, str] = {}
    values: dict[str, float | int] = {}
    for knob in knobs:
        path = Path(worktree) / knob.file
        if knob.file not in texts:
            texts[knob.file] = _read_text(path, knob)
        _, value = _locate(texts[knob.file], knob, path)
        values[knob.name] = _parse(knob, value.group("val"), path)
    return values


def format_value(knob: Knob, value: float | int) -> str:
    """How a value is written: ints plainly, floats as Python's shortest repr (0.05, 1e-08)."""
    coerced = knob.coerce(value)
    return str(coerced) if knob.type == "int" else repr(coerced)


def write_knob(worktree: Path, knob: Knob, value: float | int) -> None:
    """Set the knob's literal in its file, keeping the rest of the line and file byte-for-byte."""
    path = Path(worktree) / knob.file
    text = _read_text(path, knob)
    line, parsed = _locate(text, knob, path)
    start = line.start(1) + parsed.start("val")
    end = line.start(1) + parsed.end("val")
    atomic_write(path, text[:start] + format_value(knob, value) + text[end:])


def fixed_shape_of(worktree: Path, knobs: Sequence[Knob]) -> dict[str, int]:
    """Shape settings that are not knobs (NUM_HEADS, ...), read from autoresearch.sh's knob
    block; one it does not assign takes the trainer's default (loop/proposers/shape.py)."""
    declared = {k.name for k in knobs}
    found = {}
    for name in SHAPE_DEFAULTS:
        if name in declared:
            continue
        probe = Knob(name, "autoresearch.sh", "env", "int", 1, 1 << 20)
        try:
            found[name] = int(read_knobs(worktree, [probe])[name])
        except KnobError:
            continue
    return found


def profile_overrides(worktree: Path, profile: str | None,
                      script: str = "autoresearch.sh") -> frozenset[str]:
    """The settings `profile`'s block in autoresearch.sh assigns (`smoke)` ... `;;`): knobs of
    the knob block that this profile overrides, so a move of them alone changes nothing the
    profile measures (issue 26: the search never proposes one; the run would be wasted)."""
    if profile is None:
        return frozenset()
    try:
        text = (Path(worktree) / script).read_text(errors="replace")
    except OSError:
        return frozenset()
    names, inside = set(), False
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].strip()
        if not inside:
            labels = stripped[:-1].split("|") if stripped.endswith(")") else []
            inside = profile in (label.strip() for label in labels)
            continue
        if stripped.startswith(";;"):
            break
        if m := re.match(r"([A-Za-z_][A-Za-z0-9_]*)=", stripped):
            names.add(m.group(1))
    return frozenset(names)


def visible_knobs(worktree: Path, knobs: Sequence[Knob], profile: str | None) -> tuple[Knob, ...]:
    """The knobs a move of which the profile can see: env knobs of autoresearch.sh that its
    block does not override, and every const knob (the trainer's own constants)."""
    hidden = profile_overrides(worktree, profile)
    return tuple(k for k in knobs if not (k.kind == "env" and k.file == "autoresearch.sh"
                                          and k.name in hidden))


# ---------------------------------------------------------------------------------------------
# Configurations and steps


def checked_knobs(knobs: Sequence[Knob]) -> tuple[Knob, ...]:
    """The knobs a search proposer moves: at least one, each name once (KnobError else)."""
    if not knobs:
        raise KnobError("the search proposer needs at least one knob")
    names = [k.name for k in knobs]
    if len(set(names)) != len(names):
        raise KnobError(f"knob names must be unique, got {', '.join(names)}")
    return tuple(knobs)


def canonical(value: float | int) -> float:
    """The form two values are compared in: 0.05 and 0.05000000000000001 are one value."""
    return float(f"{float(value):.{CANONICAL_DIGITS}g}")


def config_key(config: dict | None, knobs: Sequence[Knob]) -> tuple[float, ...] | None:
    """A hashable canonical configuration over `knobs`; None when `config` lacks one of them
    (a row measured before that knob was declared says nothing about its value)."""
    if not isinstance(config, dict):
        return None
    try:
        return tuple(canonical(config[k.name]) for k in knobs)
    except (KeyError, TypeError, ValueError):
        return None


def _round_float(value: float) -> float:
    return float(f"{value:.{PROPOSAL_DIGITS}g}")


def step_value(knob: Knob, value: float | int, direction: int, size: int) -> float | int | None:
    """The value one step of ladder index `size` up (+1) or down (-1), clamped to [low, high];
    None when the knob cannot move that way (already at the bound)."""
    base = min(max(float(value), knob.low), knob.high)
    if knob.scale == "log":
        raw = base * LOG_FACTORS[size] ** direction
    else:
        raw = base + direction * LINEAR_FRACTIONS[size] * (knob.high - knob.low)
    if knob.step is not None:
        new: float = snap(knob, raw)
        if canonical(new) == canonical(value):  # the smallest move is one grid step
            new = float(value) + direction * knob.step
        new = new if knob.type == "int" else _round_float(new)
    elif knob.type == "int":
        new = round(raw)
        if new == value:  # a small int must still move: one unit is the smallest step
            new = value + direction
    else:
        new = _round_float(raw)
    new = min(max(new, knob.low), knob.high)
    if knob.type == "int":
        new = int(round(new))
    if canonical(new) == canonical(value):
        return None
    return knob.coerce(new)


# ---------------------------------------------------------------------------------------------
# Learning from the ledger


Direction = tuple[str, int]  # (knob name, +1 up / -1 down)


@dataclass
class DirectionStats:
    """What the history says about moving each knob each way."""

    wins: dict[Direction, int] = field(default_factory=dict)
    losses: dict[Direction, int] = field(default_factory=dict)
    losses_here: dict[Direction, int] = field(default_factory=dict)  # from the current incumbent
    last_keep: frozenset[Direction] = frozenset()  # the moves that made the current incumbent

    def weight(self, d: Direction) -> float:
        w = (1 + self.wins.get(d, 0)) / (1 + self.losses.get(d, 0))
        if d in self.last_keep:
            w *= 4.0  # continue a direction that just produced a keep
        if self.losses_here.get(d, 0) >= 2:
            w *= 0.1  # lost twice from this very incumbent: try it last
        return w


def _moves(base: tuple[float, ...], key: tuple[float, ...],
           knobs: Sequence[Knob]) -> list[Direction]:
    return [(k.name, 1 if new > old else -1)
            for k, old, new in zip(knobs, base, key, strict=True) if new != old]


def _experiment_rows(history: list[dict]) -> list[dict]:
    """Experiment rows measured on the current code: a kept change with no knob configuration
    (an agent's edit of the trainer) makes every earlier knob measurement a different
    experiment, so only the rows after the last such keep count."""
    rows = [r for r in history
            if isinstance(r, dict) and r.get("type", "experiment") == "experiment"]
    for i in range(len(rows) - 1, -1, -1):
        if rows[i].get("status") in _WIN and rows[i].get("knobs") is None:
            return rows[i + 1:]
    return rows


def learn(history: list[dict], knobs: Sequence[Knob],
          current: tuple[float, ...]) -> DirectionStats:
    """Replay the ledger: each row's move is its knobs minus the incumbent's at the time (the
    last keep or baseline before it). Manual runs measured the user's tree, not a move."""
    rows = _experiment_rows(history)
    anchored = any(r.get("baseline") or r.get("status") in _WIN for r in rows)
    base = None if anchored else current  # no keep yet: every row moved from the start point
    stats = DirectionStats()
    for row in rows:
        key = config_key(row.get("knobs"), knobs)
        if key is None or row.get("manual"):
            continue
        if row.get("baseline"):
            base = key
            continue
        moves = _moves(base, key, knobs) if base is not None else []
        _tally(stats, row.get("status"), moves, here=base == current)
        if row.get("status") in _WIN:  # the keep is the incumbent the next rows moved from
            base, stats.last_keep = key, frozenset(moves)
    return stats


def _tally(stats: DirectionStats, status: str | None, moves: list[Direction], here: bool) -> None:
    if status in _WIN:
        table = stats.wins
    elif status in _LOSS:
        table = stats.losses
    else:
        return
    for d in moves:
        table[d] = table.get(d, 0) + 1
        if here and status in _LOSS:
            stats.losses_here[d] = stats.losses_here.get(d, 0) + 1


def measured_keys(history: list[dict], knobs: Sequence[Knob]) -> set[tuple[float, ...]]:
    """Every configuration any row measured or refused, whatever its status (duplicates too)."""
    keys = {config_key(r.get("knobs"), knobs) for r in _experiment_rows(history)}
    keys.discard(None)
    return keys  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# The proposer


@dataclass(frozen=True)
class _Move:
    changes: tuple[tuple[Knob, float | int, float | int], ...]  # (knob, old, new)
    weight: float


class SearchProposer(Proposer):
    """Moves one knob (sometimes two) one small step from the incumbent in the worktree."""

    name = "search"

    def __init__(self, knobs: Sequence[Knob], seed: int = 0,
                 cap_bytes: int | None = None, profile: str | None = None) -> None:
        self.knobs = checked_knobs(knobs)
        self.seed = seed
        self.cap_bytes = cap_bytes  # given: never move the model shape over the cap
        self.profile = profile  # the first rung: knobs it overrides are never moved
        self._movable: tuple[Knob, ...] = self.knobs
        self._fits = lambda config: True

    def propose(self, worktree: Path, history: list[dict]) -> Proposal | None:
        current = read_knobs(worktree, self.knobs)
        here = config_key(current, self.knobs)
        assert here is not None  # read_knobs returns every knob
        stats = learn(history, self.knobs, here)
        self._fits = self._fit_check(worktree, history, current)
        self._movable = visible_knobs(worktree, self.knobs, self.profile)
        move = self._choose(current, measured_keys(history, self.knobs), stats, history)
        if move is None:
            return None
        config = dict(current)
        for knob, _old, new in move.changes:
            write_knob(worktree, knob, new)
            config[knob.name] = new
        return Proposal(self._describe(move), config)

    def _choose(self, current: dict[str, float | int], measured: set, stats: DirectionStats,
                history: list[dict]) -> _Move | None:
        # Seeded by the state it decides from, so the same seed + history = the same proposal.
        rng = random.Random(f"{self.seed}:{len(history)}:{config_key(current, self.knobs)}")
        singles = self._singles(current, measured, stats)
        want_pair = len(self._movable) > 1 and rng.random() < PAIR_PROBABILITY
        if singles and not want_pair:
            return _pick(singles, rng)
        pairs = self._pairs(current, measured, stats)
        return _pick(pairs, rng) if pairs else (_pick(singles, rng) if singles else None)

    def _fit_check(self, worktree: Path, history: list[dict],
                   current: dict) -> Callable[[dict], bool]:
        """Shape knobs under a cap: valid shapes predicted to fit (loop/proposers/shape.py);
        the incumbent's own shape always passes (a move of other knobs changes no size)."""
        if self.cap_bytes is None or not any(k.name in SHAPE_DEFAULTS for k in self.knobs):
            return lambda config: True
        fixed, sizes, cap = fixed_shape_of(worktree, self.knobs), size_model(history), \
            self.cap_bytes

        def fits(config: dict) -> bool:
            if all(config.get(n) == current.get(n) for n in SHAPE_DEFAULTS):
                return True
            return shape_refusal(config, fixed, sizes, cap) is None
        return fits

    def _is_new(self, current: dict, changes: tuple, measured: set) -> bool:
        config = dict(current)
        config.update({knob.name: new for knob, _old, new in changes})
        return config_key(config, self.knobs) not in measured and self._fits(config)

    def _singles(self, current: dict, measured: set, stats: DirectionStats) -> list[_Move]:
        """Per knob and direction, the smallest step whose configuration is unmeasured."""
        moves = []
        for knob in self._movable:
            for direction in (-1, 1):
                for size in range(len(LOG_FACTORS if knob.scale == "log" else LINEAR_FRACTIONS)):
                    new = step_value(knob, current[knob.name], direction, size)
                    changes = ((knob, current[knob.name], new),)
                    if new is not None and self._is_new(current, changes, measured):
                        moves.append(_Move(changes, stats.weight((knob.name, direction))))
                        break
        return moves

    def _pairs(self, current: dict, measured: set, stats: DirectionStats) -> list[_Move]:
        """Two knobs, each moved by its smallest step, every combination of directions."""
        steps = [(knob, d, step_value(knob, current[knob.name], d, 0))
                 for knob in self._movable for d in (-1, 1)]
        steps = [s for s in steps if s[2] is not None]
        moves = []
        for i, (ka, da, va) in enumerate(steps):
            for kb, db, vb in steps[i + 1:]:
                changes = ((ka, current[ka.name], va), (kb, current[kb.name], vb))
                if ka.name != kb.name and self._is_new(current, changes, measured):
                    w = stats.weight((ka.name, da)) * stats.weight((kb.name, db))
                    moves.append(_Move(changes, w))
        return moves

    @staticmethod
    def _describe(move: _Move) -> str:
        return ", ".join(f"{knob.name} {format_value(knob, old)} -> {format_value(knob, new)}"
                         for knob, old, new in move.changes)


def _pick(moves: list[_Move], rng: random.Random) -> _Move:
    return rng.choices(moves, weights=[m.weight for m in moves], k=1)[0]
