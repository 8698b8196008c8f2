"""The judge's settings: `judge:` (scoring every artifact, the seal, the compute allowance),
`protocol:` (which measurement fields a candidate may change, loop/judge/protocol.py) and
`verify:` (re-evaluating a kept artifact, loop/judge/verify.py).
"""

from __future__ import annotations

from typing import Any

from loop.settings.reader import Reader

# Fields `protocol.allow_change` may name: the ones a re-measurement of the incumbent can
# reproduce through the environment (AUTOGOLF_PROTOCOL_OVERRIDES, read by autoresearch.sh).
# The seed is never among them (seed hacking), nor the data or tokenizer (the dataset is the
# daemon's choice, never the candidate's). val_tokens follows from val_max_tokens.
PROTOCOL_OVERRIDE_ENV: dict[str, str] = {
    "val_max_tokens": "VAL_MAX_TOKENS",
    "iterations": "ITERATIONS",
    "train_batch_tokens": "TRAIN_BATCH_TOKENS",
    "train_seq_len": "TRAIN_SEQ_LEN",
    "max_wallclock_seconds": "MAX_WALLCLOCK_SECONDS",
}
PROTOCOL_ALLOWABLE: tuple[str, ...] = tuple(PROTOCOL_OVERRIDE_ENV)


def read_judge(reader: Reader, top: dict) -> dict[str, Any]:
    """The Config fields of `judge:`, `protocol:` and `verify:`."""
    section = reader.mapping(top.get("judge", {}), "judge",
                             ("enabled", "claim_tolerance", "sealed", "compute_allowance"))
    kw: dict[str, Any] = {}
    for key in ("enabled", "sealed"):
        reader.put(kw, f"judge_{key}", reader.flag(section, key, f"judge.{key}"))
    reader.put(kw, "judge_claim_tolerance",
               reader.number(section, "claim_tolerance", where="judge", positive=True))
    reader.put(kw, "judge_compute_allowance",
               reader.number(section, "compute_allowance", where="judge", minimum=1))
    kw.update(_protocol(reader, top))
    kw.update(_verify(reader, top))
    return kw


def _protocol(reader: Reader, top: dict) -> dict[str, Any]:
    section = reader.mapping(top.get("protocol", {}), "protocol", ("allow_change",))
    if "allow_change" not in section:
        return {}
    fields = section["allow_change"] or []
    allowed = (f"a list of: {', '.join(PROTOCOL_ALLOWABLE)} (never the seed, data or "
               "tokenizer)")
    if not isinstance(fields, list):
        reader.fail("protocol.allow_change", f"got {fields!r}", allowed)
        return {}
    for i, name in enumerate(fields):
        if name not in PROTOCOL_ALLOWABLE:
            reader.fail(f"protocol.allow_change[{i}]", f"got {name!r}", allowed)
    return {"protocol_allow_change": tuple(f for f in fields if f in PROTOCOL_ALLOWABLE)}


def _verify(reader: Reader, top: dict) -> dict[str, Any]:
    section = reader.mapping(top.get("verify", {}), "verify", ("enabled", "tolerance"))
    kw: dict[str, Any] = {}
    reader.put(kw, "verify_enabled", reader.flag(section, "enabled", "verify.enabled"))
    reader.put(kw, "verify_tolerance",
               reader.number(section, "tolerance", where="verify", positive=True))
    return kw
