"""`knobs:` (what the search proposer may move, and within which bounds) and `search:` (how
it chooses: strategy, Optuna storage). A knob's declaration (`Knob`) checks itself; the
proposer that reads and writes knob lines is loop/proposers/search.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.settings.paths import EditableSets, is_editable
from loop.settings.reader import Reader

KNOB_KINDS = ("env", "const")
KNOB_TYPES = ("float", "int")
KNOB_SCALES = ("log", "linear")
# Where a knob lives when its entry does not say (DESIGN.md, "The benchmark harness").
KNOB_DEFAULT_FILES = {"env": "autoresearch.sh", "const": "benchmark/train_gpt_mlx.py"}
# Seed hacking: changing the seed is the cheapest fake improvement. Frozen.
FROZEN_KNOBS = ("SEED",)
# name: (kind, type, low, high, scale[, step]); all live in autoresearch.sh's knob block.
DEFAULT_KNOBS: dict[str, tuple] = {
    "MATRIX_LR": ("env", "float", 0.005, 0.2, "log"),
    "SCALAR_LR": ("env", "float", 0.005, 0.2, "log"),
    "TIED_EMBED_LR": ("env", "float", 0.005, 0.3, "log"),
    "WARMDOWN_FRAC": ("env", "float", 0.05, 0.6, "linear"),
    "QK_GAIN_INIT": ("env", "float", 0.5, 6.0, "log"),  # the records used about 5
    "LOGIT_SOFTCAP": ("env", "float", 10.0, 100.0, "log"),
    "MUON_MOMENTUM": ("env", "float", 0.85, 0.99, "linear"),
    "BETA2": ("env", "float", 0.9, 0.999, "linear"),
    "TIED_EMBED_INIT_STD": ("env", "float", 0.001, 0.05, "log"),
    # Model shape: the search predicts a proposal's artifact size and never runs one over the
    # cap (loop/proposers/shape.py). MODEL_DIM stays a multiple of NUM_HEADS (8) x 2 x 4.
    "NUM_LAYERS": ("env", "int", 4, 14, "linear"),
    "MODEL_DIM": ("env", "int", 256, 768, "linear", 64),
    "MLP_MULT": ("env", "int", 1, 4, "linear"),
    "NUM_KV_HEADS": ("env", "int", 1, 8, "log"),
    # Record techniques (trainer switches, off at the low end) that move neither the
    # parameter count nor the bytes per parameter upward, so the size prediction still holds.
    "MLP_LEAKY_SLOPE": ("env", "float", 0.0, 0.9, "linear"),
    "ROPE_DIMS": ("env", "int", 0, 64, "linear", 8),
    "LN_SCALE": ("env", "int", 0, 1, "linear"),
    "SMEAR_GATE": ("env", "int", 0, 1, "linear"),
    "ORTHO_INIT": ("env", "int", 0, 1, "linear"),
    "PARALLEL_RESID": ("env", "int", 0, 1, "linear"),
    "MUON_WD": ("env", "float", 0.0, 0.1, "linear"),
    "LR_FLOOR": ("env", "float", 0.0, 0.3, "linear"),
    "SWA_START_LR": ("env", "float", 0.0, 1.0, "linear"),
    "BLOCK_QUANT_BITS": ("env", "int", 5, 8, "linear"),
    "CLIP_SEARCH": ("env", "int", 0, 1, "linear"),
    "EXPORT_LZMA": ("env", "int", 0, 1, "linear"),
}
# How the `search` proposer chooses (loop/proposers/optuna_search.py; bench/search_efficiency.py).
SEARCH_STRATEGIES = ("local", "random", "tpe")
DEFAULT_SEARCH_STRATEGY = "random"  # the best of bench/search_efficiency.py (docs/BENCHMARKS.md)
# Optuna storage URL schemes (SQLAlchemy dialects, optionally `+driver`).
_STORAGE_URL = re.compile(r"(sqlite|postgresql|mysql|mariadb|oracle|mssql)(\+[a-z0-9_]+)?://.*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RANGE_ALLOWED = ("an identifier; low < high; low > 0 for log; whole bounds for int; steps "
                  "dividing high - low")


class KnobError(ValueError):
    """A knob declaration or a knob's line in its file is unusable; the message names both.
    `problem` is the message without the knob's name (None when not a declaration's)."""

    def __init__(self, message: str, problem: str | None = None) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class Knob:
    name: str
    file: str          # relative to the worktree root
    kind: str          # "env": NAME=value in a shell file; "const": NAME = value in Python
    type: str          # "float" | "int"
    low: float
    high: float
    scale: str = "linear"  # "log": steps multiply; "linear": steps add a fraction of the range
    step: float | None = None  # values lie on low + k * step (MODEL_DIM in multiples of 64)

    def __post_init__(self) -> None:
        problem = _knob_problem(self)
        if problem:
            raise KnobError(f"knob {self.name!r}: {problem}", problem)

    def coerce(self, value: float) -> float | int:
        """The value as this knob's type; a non-finite value or a fractional int is refused."""
        if isinstance(value, bool) or not math.isfinite(float(value)):
            raise KnobError(f"knob {self.name}: value {value!r} is not a finite number")
        if self.step is not None and not on_grid(self, float(value)):
            raise KnobError(f"knob {self.name}: value {value!r} is not low + a multiple of "
                            f"step {self.step:g}")
        if self.type == "int":
            if float(value) != int(float(value)):
                raise KnobError(f"knob {self.name}: value {value!r} is not an integer")
            return int(float(value))
        return float(value)


def default_knobs() -> tuple[Knob, ...]:
    return tuple(Knob(name, KNOB_DEFAULT_FILES[spec[0]], *spec)
                 for name, spec in DEFAULT_KNOBS.items())


def on_grid(k: Knob, value: float) -> bool:
    """True when `value` is low + a whole number of the knob's steps."""
    steps = (value - k.low) / k.step  # type: ignore[operator]
    return abs(steps - round(steps)) < 1e-6


def _knob_problem(k: Knob) -> str | None:
    """What is wrong with a declaration, or None."""
    if not isinstance(k.name, str) or not _NAME.fullmatch(k.name):
        return "name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)"
    path = Path(k.file or "")
    if not k.file or path.is_absolute() or ".." in path.parts:
        return f"file {k.file!r} must be a path inside the worktree"
    for attr, allowed in (("kind", KNOB_KINDS), ("type", KNOB_TYPES), ("scale", KNOB_SCALES)):
        if getattr(k, attr) not in allowed:
            return f"{attr} {getattr(k, attr)!r} is not one of {', '.join(allowed)}"
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (k.low, k.high)):
        return f"low and high must be finite numbers, got {k.low!r}, {k.high!r}"
    if not k.low < k.high:
        return f"low {k.low!r} >= high {k.high!r} (low must be below high)"
    if k.scale == "log" and k.low <= 0:
        return f"low {k.low!r} with scale: log (a log-scale knob needs low > 0)"
    if k.type == "int" and (k.low != int(k.low) or k.high != int(k.high)):
        return (f"type: int with fractional bounds {k.low!r}, {k.high!r} (an int knob needs "
                "whole bounds)")
    return _step_problem(k) if k.step is not None else None


def _step_problem(k: Knob) -> str | None:
    step = k.step
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not (
            math.isfinite(step) and step > 0):
        return f"step must be a positive number, got {step!r}"
    if k.scale != "linear":
        return "a step needs scale: linear (a grid of equal steps)"
    if k.type == "int" and step != int(step):
        return f"an int knob needs a whole step, got {step}"
    if not on_grid(k, k.high):
        return f"high - low ({k.high - k.low:g}) must be a whole number of steps ({step:g})"
    return None


def read_knobs(reader: Reader, top: dict, globs: EditableSets) -> tuple[Knob, ...] | None:
    """`knobs:` replaces the default knobs (empty: none); each in an editable file."""
    if "knobs" not in top:
        return None
    if top["knobs"] is None:
        return ()
    section = reader.mapping(top["knobs"], "knobs", None)
    knobs = (_knob(reader, name, spec, globs) for name, spec in section.items())
    return tuple(k for k in knobs if k is not None)


def _knob(reader: Reader, name: Any, spec: Any, globs: EditableSets) -> Knob | None:
    where = f"knobs.{name}"
    if isinstance(name, str) and name.upper() in FROZEN_KNOBS:
        reader.fail(where, "the seed is frozen (a new seed is noise, not progress)", "no SEED")
        return None
    entry = reader.mapping(spec, where, ("file", "kind", "type", "low", "high", "scale", "step"))
    before = len(reader.problems)
    kind = reader.choice(entry, "kind", f"{where}.kind", KNOB_KINDS) or "env"
    type_ = reader.choice(entry, "type", f"{where}.type", KNOB_TYPES) or "float"
    scale = reader.choice(entry, "scale", f"{where}.scale", KNOB_SCALES) or "linear"
    file = entry.get("file", KNOB_DEFAULT_FILES[kind])
    low = reader.number(entry, "low", where=where, required=True)
    high = reader.number(entry, "high", where=where, required=True)
    step = reader.number(entry, "step", where=where, positive=True)
    if len(reader.problems) > before or low is None or high is None:
        return None
    if not isinstance(file, str) or not is_editable(globs, file):
        reader.fail(f"{where}.file", f"{file!r} is not an editable file", "a path in `editable`")
        return None
    try:
        return Knob(name, file, kind, type_, low, high, scale, step)
    except KnobError as exc:  # the declaration's own checks
        reader.fail(where, exc.problem or str(exc), _RANGE_ALLOWED)
        return None


def read_search(reader: Reader, top: dict) -> dict[str, Any]:
    """`search: {strategy, storage}` as Config fields."""
    section = reader.mapping(top.get("search", {}), "search", ("strategy", "storage"))
    kw: dict[str, Any] = {}
    reader.put(kw, "search_strategy",
               reader.choice(section, "strategy", "search.strategy", SEARCH_STRATEGIES))
    storage = section.get("storage")
    if storage is not None and not (isinstance(storage, str)
                                    and _STORAGE_URL.fullmatch(storage.strip())):
        reader.fail("search.storage", f"got {storage!r}",
                    "an Optuna storage URL, e.g. sqlite:///.autogolf/optuna.db or "
                    "postgresql://user:password@host/db; leave it out for the default")
    elif storage is not None:
        kw["search_storage"] = storage.strip()
    return kw
