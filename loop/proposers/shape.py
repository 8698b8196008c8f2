"""Model-shape knobs: is a shape valid for the trainer, and how big will its artifact be?

The search may move NUM_LAYERS, MODEL_DIM, MLP_MULT and NUM_KV_HEADS, which change the
artifact size. Before a proposal runs, its size is predicted as

    parameters(shape) x bytes per parameter + code bytes

where the bytes per parameter (int8 + fp16 scales, then zlib) come from rows the ledger
already measured (the trainer prints `model_params:N`, the daemon records the model bytes),
and a safe default covers a ledger with none. The parameter count is the baseline network's
(loop.network: the trainer's tensors, one table shared with the trusted re-evaluation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from loop import network

SHAPE_KNOBS = ("NUM_LAYERS", "MODEL_DIM", "MLP_MULT", "NUM_KV_HEADS", "NUM_HEADS")
# The trainer's defaults, used for a shape setting that is neither a knob nor readable.
SHAPE_DEFAULTS = network.DEFAULT_SETTINGS
# int8 weights (1 byte) + an fp16 scale per row, before zlib: an upper bound on what zlib
# leaves, used until the ledger has measured a ratio.
DEFAULT_BYTES_PER_PARAM = 1.05
DEFAULT_CODE_BYTES = 60_000     # the trainer is ~48 kB; room for an agent's additions
SAFETY = 1.02                   # predicted bytes are inflated by this before the cap check


def shape_of(config: Mapping[str, float | int], fixed: Mapping[str, int]) -> dict[str, int]:
    """The full shape: the configuration's shape knobs over `fixed` over the defaults."""
    shape = dict(SHAPE_DEFAULTS) | {k: int(v) for k, v in fixed.items()}
    shape.update({k: int(config[k]) for k in SHAPE_DEFAULTS if k in config})
    return shape


def shape_problem(shape: Mapping[str, int]) -> str | None:
    """Why the trainer would refuse this shape (its ConfigError rules), or None."""
    dim, heads, kv = shape["MODEL_DIM"], shape["NUM_HEADS"], shape["NUM_KV_HEADS"]
    if min(dim, heads, kv, shape["NUM_LAYERS"], shape["MLP_MULT"]) < 1:
        return "every shape setting must be at least 1"
    if dim % heads:
        return f"MODEL_DIM={dim} is not a multiple of NUM_HEADS={heads}"
    if heads % kv:
        return f"NUM_HEADS={heads} is not a multiple of NUM_KV_HEADS={kv}"
    if (dim // heads) % 2:
        return f"MODEL_DIM/NUM_HEADS={dim // heads} must be even (rotary embedding)"
    return None


def parameter_count(shape: Mapping[str, int]) -> int:
    """The trainer's parameter count for these settings (loop.network's tensors)."""
    return network.parameter_count(network.Shape.from_settings(shape))


def shape_refusal(config: Mapping[str, float | int], fixed: Mapping[str, int],
                  sizes: SizeModel, cap_bytes: int) -> str | None:
    """Why a configuration must not run (an invalid shape, a predicted artifact over the
    cap), or None. A configuration without shape settings is never refused."""
    if not any(k in config for k in SHAPE_DEFAULTS):
        return None
    shape = shape_of(config, fixed)
    problem = shape_problem(shape)
    if problem:
        return f"invalid model shape: {problem}"
    predicted = sizes.predict(shape)
    if predicted > cap_bytes:
        return f"predicted artifact {predicted} bytes > cap {cap_bytes}"
    return None


@dataclass(frozen=True)
class SizeModel:
    """Bytes per parameter and code bytes, as measured (or the safe defaults)."""

    bytes_per_param: float = DEFAULT_BYTES_PER_PARAM
    code_bytes: int = DEFAULT_CODE_BYTES
    measured_rows: int = 0

    def predict(self, shape: Mapping[str, int]) -> int:
        return int(parameter_count(shape) * self.bytes_per_param * SAFETY) + self.code_bytes


def size_model(history: Sequence[dict]) -> SizeModel:
    """Learn the compression ratio from rungs that recorded `model_params` and `model_bytes`.

    The largest measured model decides the ratio (small models carry relatively more scale
    bytes; the cap matters for large ones); code bytes are the largest measured."""
    best: tuple[int, float] | None = None
    code = None
    count = 0
    for row in history:
        for rung in (row.get("rungs") or {}).values():
            if not isinstance(rung, dict):
                continue
            params, model = rung.get("model_params"), rung.get("model_bytes")
            if _positive(params) and _positive(model):
                count += 1
                if best is None or params > best[0]:
                    best = (int(params), float(model) / float(params))
            if _positive(rung.get("code_bytes")):
                code = max(code or 0, int(rung["code_bytes"]))
    if best is None:
        return SizeModel(code_bytes=code or DEFAULT_CODE_BYTES)
    return SizeModel(best[1], code or DEFAULT_CODE_BYTES, count)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
