"""The frozen evaluation protocol (issue 7): what must be equal for two scores to be compared.

A candidate can "improve" val_bpb by changing the measurement instead of the model: a new
seed, fewer validation tokens, another tokenizer, more training steps. The protocol of a run
is read from what the trainer says it actually used (its one-per-line `key:value` settings,
collected by loop.measure.logparse) - not from what the editable scripts were asked to do. Hashes of
the tokenizer and of the validation shards are printed by the trainer from the bytes it
loaded; the dataset itself is fixed by the daemon (rows of different datasets are never
compared). A field missing from the log is recorded as None, and None differs from a value.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from loop.measure.logparse import TrainerLog
from loop.settings.judge import PROTOCOL_OVERRIDE_ENV

# Protocol field -> the trainer's log key. Order = the order in reasons.
FIELDS: dict[str, str] = {
    "seed": "seed",
    "tokenizer": "tokenizer_sha256",
    "val_data": "val_sha256",
    "val_tokens": "val_tokens",  # validation tokens actually scored
    "val_max_tokens": "val_max_tokens",
    "iterations": "iterations",
    "train_batch_tokens": "train_batch_tokens",
    "train_seq_len": "train_seq_len",
    "max_wallclock_seconds": "max_wallclock_seconds",
}
# Fields `protocol.allow_change` may name, and the environment variable of each (the
# setting's vocabulary: loop/settings/judge.py says why the seed and the data are not among them).
OVERRIDE_ENV: dict[str, str] = PROTOCOL_OVERRIDE_ENV
ALLOWABLE: tuple[str, ...] = tuple(OVERRIDE_ENV)
# Derived fields: they change whenever an allowed field does (fewer val tokens when the window
# shrinks), so they are judged together with the field they follow.
DERIVED: dict[str, tuple[str, ...]] = {"val_tokens": ("val_max_tokens", "train_seq_len")}


def read_protocol(log: TrainerLog) -> dict[str, str | None]:
    """The protocol a run used, from the trainer's settings lines (None = not printed)."""
    return {name: log.settings.get(key) for name, key in FIELDS.items()}


def differences(incumbent: Mapping[str, str | None], candidate: Mapping[str, str | None]
                ) -> dict[str, tuple[str | None, str | None]]:
    """{field: (incumbent value, candidate value)} for every field that differs."""
    return {name: (incumbent.get(name), candidate.get(name)) for name in FIELDS
            if incumbent.get(name) != candidate.get(name)}


def split_changes(changed: Mapping[str, tuple], allow: Collection[str]
                  ) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(forbidden, allowed) changes. A derived field is allowed when a field it follows is."""
    allowed_now = {name for name in changed if name in allow}
    forbidden, allowed = {}, {}
    for name, pair in changed.items():
        follows = DERIVED.get(name, ())
        ok = name in allowed_now or any(f in allowed_now for f in follows)
        (allowed if ok else forbidden)[name] = pair
    return forbidden, allowed


def describe(changed: Mapping[str, tuple]) -> str:
    """`seed 1337 -> 42, val_tokens 16384 -> 8192` (hashes shortened)."""
    return ", ".join(f"{name} {_show(a)} -> {_show(b)}" for name, (a, b) in changed.items())


def overrides(candidate: Mapping[str, str | None], allowed: Collection[str]) -> dict[str, str]:
    """Environment settings that make the incumbent run under the candidate's protocol."""
    return {OVERRIDE_ENV[name]: str(candidate[name]) for name in allowed
            if name in OVERRIDE_ENV and candidate.get(name) is not None}


def override_text(env: Mapping[str, str]) -> str:
    """AUTOGOLF_PROTOCOL_OVERRIDES: `NAME=value` pairs separated by spaces."""
    return " ".join(f"{k}={v}" for k, v in sorted(env.items()))


def _show(value: str | None) -> str:
    if value is None:
        return "(not printed)"
    return value[:12] if len(value) == 64 else value  # a sha256
