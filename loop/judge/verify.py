"""Trusted re-evaluation of an exported artifact (issue 7: the judge outside the judged).

The trainer is editable, so the val_bpb it prints is a claim. This module loads the int8+zlib
artifact the trainer wrote (SPEC section 3 export: a zlib-compressed pickle of
{"quantized": {name: int8[rows, cols]}, "scales": {name: float16[rows]}, "passthrough":
{name: float}}), dequantizes it, runs the *baseline* architecture's forward pass written here
(MLX, independent of the trainer's code) over the same validation window, and counts target
bytes with loop.data.tokenbytes. A candidate whose tensors do not fit the baseline architecture
(their names and shapes: loop.network, the one table of them) cannot be verified: that is
reported as unsupported, never as agreement.

The forward pass is a second implementation on purpose: it re-derives the score without the
editable trainer's code. Scoring through the trainer's own classes (loop.judge.loader) is
what the artifact judge already does in its sealed model server, claim check included
(loop.judge.artifact_judge); this check is the one that does not trust that code.

Unpickling runs code, and the artifact comes from an editable program: only numpy arrays,
dtypes and plain containers are accepted by the unpickler.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loop.data import shards, tokenbytes
from loop.network import BLOCK_TENSORS, Shape, tensors

RMS_EPS = 1e-6
EVAL_TOKENS_PER_BATCH = 16384
_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("builtins", "list"),
    ("collections", "OrderedDict"), ("codecs", "encode"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class Unsupported(Exception):
    """The artifact is not the baseline architecture (or not our export format)."""


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's protocol
        if (module, name) not in _SAFE_GLOBALS:
            raise Unsupported(f"artifact pickle refers to {module}.{name}")
        return super().find_class(module, name)


def read_export(path: Path) -> dict:
    """The unpickled int8+zlib export object (safe unpickler), checked for its three parts."""
    obj = _SafeUnpickler(io.BytesIO(zlib.decompress(Path(path).read_bytes()))).load()
    if not isinstance(obj, dict) or not {"quantized", "scales", "passthrough"} <= set(obj):
        raise Unsupported("not an int8 per-row export (quantized/scales/passthrough)")
    return obj


def dequantize(obj: dict) -> dict[str, np.ndarray]:
    """{name: float32 array}: int8 rows times their scale (one per row, or one per tensor)."""
    params = {}
    for name, q in obj["quantized"].items():
        scale = np.asarray(obj["scales"][name], dtype=np.float32)
        q = np.asarray(q, dtype=np.float32)
        params[name] = q * (scale if scale.ndim == 0 else scale.reshape(-1, *[1] * (q.ndim - 1)))
    for name, w in obj["passthrough"].items():
        params[name] = np.asarray(w, dtype=np.float32)
    # Upstream's MLX model names its embedding `tok_emb.weight` (an nn.Embedding); ours does
    # not: one name for the forward pass below.
    if "tok_emb.weight" in params and "tok_emb" not in params:
        params["tok_emb"] = params.pop("tok_emb.weight")
    return params


def load_artifact(path: Path) -> dict[str, np.ndarray]:
    """{name: float32 array} from an int8+zlib artifact (dequantized per row)."""
    return dequantize(read_export(path))


def infer_shape(params: dict[str, np.ndarray]) -> Shape:
    """The baseline model's sizes from the tensors; Unsupported when anything else is there."""
    if "tok_emb" not in params or params["tok_emb"].ndim != 2:
        raise Unsupported("no tok_emb embedding matrix")
    vocab, dim = params["tok_emb"].shape
    layers = len({int(m.group(1)) for n in params if (m := re.match(r"blocks\.(\d+)\.", n))})
    if layers == 0:
        raise Unsupported("no blocks")
    missing = [f"blocks.0.{k}" for k in BLOCK_TENSORS if f"blocks.0.{k}" not in params]
    if missing:
        raise Unsupported(f"block 0 lacks {', '.join(missing[:3])}")
    heads = params["blocks.0.attn.q_gain"].shape[0]
    if heads == 0 or dim % heads:
        raise Unsupported("attention heads cannot be read from blocks.0.attn.q_gain")
    kv_heads = params["blocks.0.attn.c_k.weight"].shape[0] // (dim // heads)
    shape = Shape(vocab, dim, layers, heads, kv_heads,
                  params["blocks.0.mlp.fc.weight"].shape[0], "lm_head.weight" not in params)
    _check_names_and_shapes(params, shape)
    return shape


def _check_names_and_shapes(params: dict[str, np.ndarray], shape: Shape) -> None:
    want = tensors(shape)
    extra, missing = sorted(set(params) - set(want)), sorted(set(want) - set(params))
    if extra or missing:
        raise Unsupported(f"tensors differ from the baseline model (extra {extra[:3]}, "
                          f"missing {missing[:3]})")
    wrong = [n for n, s in want.items() if tuple(params[n].shape) != s]
    if wrong:
        raise Unsupported(f"tensor shapes differ from the baseline model: {wrong[:3]}")


def val_window(data_path: Path, seq_len: int, max_tokens: int) -> np.ndarray:
    """The validation tokens the trainer scores: whole windows of seq_len, +1 target."""
    files = sorted(Path(data_path).glob("fineweb_val_*.bin"))
    if not files:
        raise FileNotFoundError(f"no fineweb_val_*.bin in {data_path}")
    tokens = np.concatenate([shards.load_tokens(f) for f in files])
    usable = ((tokens.size - 1) // seq_len) * seq_len
    if max_tokens > 0:
        usable = min(usable, max(seq_len, (max_tokens // seq_len) * seq_len))
    return tokens[:usable + 1]


class BaselineModel:
    """The baseline forward pass (SPEC section 3), float32, on flat dequantized tensors."""

    def __init__(self, params: dict[str, np.ndarray], shape: Shape, softcap: float,
                 rope_base: float, dtype: str = "float32") -> None:
        import mlx.core as mx

        self.mx, self.shape = mx, shape
        # The trainer's compute dtype (bf16 on a GPU): weights and activations in it, logits
        # and the loss in float32, as SPEC section 3's model does.
        self.dtype = mx.bfloat16 if dtype == "bfloat16" else mx.float32
        self.p = {k: mx.array(v).astype(self.dtype) for k, v in params.items()}
        self.softcap, self.rope_base = softcap, rope_base

    def _norm(self, x):
        return self.mx.fast.rms_norm(x, None, RMS_EPS)

    def _rotary(self, x):
        mx = self.mx
        t, d = x.shape[-2], x.shape[-1]
        half = d // 2
        inv = self.rope_base ** (-np.arange(half, dtype=np.float64) / half)
        ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
        cos = mx.array(np.cos(ang).astype(np.float32)).astype(x.dtype)
        sin = mx.array(np.sin(ang).astype(np.float32)).astype(x.dtype)
        a, b = x[..., :half], x[..., half:]
        return mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def _attention(self, i: int, x):
        mx, s, p = self.mx, self.shape, self.p
        b, t, d = x.shape
        hd = d // s.heads

        def heads(name: str, n: int):
            w = p[f"blocks.{i}.attn.{name}.weight"]
            return (x @ w.T).reshape(b, t, n, hd).transpose(0, 2, 1, 3)

        q, k, v = heads("c_q", s.heads), heads("c_k", s.kv_heads), heads("c_v", s.kv_heads)
        q = self._rotary(self._norm(q)) * p[f"blocks.{i}.attn.q_gain"][:, None, None]
        k = self._rotary(self._norm(k))
        group = s.heads // s.kv_heads
        k, v = mx.repeat(k, group, axis=1), mx.repeat(v, group, axis=1)
        scores = (q @ k.swapaxes(-1, -2)) * hd ** -0.5
        mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), 1)
        y = mx.softmax(scores + mx.array(mask).astype(scores.dtype), axis=-1,
                       precise=True) @ v
        return y.transpose(0, 2, 1, 3).reshape(b, t, d) @ p[f"blocks.{i}.attn.proj.weight"].T

    def _block(self, i: int, x, x0):
        p = self.p
        mix = p[f"blocks.{i}.resid_mix"]
        x = mix[0] * x + mix[1] * x0
        x = x + p[f"blocks.{i}.attn_scale"] * self._attention(i, self._norm(x))
        h = self.mx.maximum(self._norm(x) @ p[f"blocks.{i}.mlp.fc.weight"].T, 0)
        return x + p[f"blocks.{i}.mlp_scale"] * ((h * h) @ p[f"blocks.{i}.mlp.proj.weight"].T)

    def logits(self, x: np.ndarray):  # noqa: ANN201 - an mx.array, float32 (batch, seq, vocab)
        """Softcapped float32 logits for input tokens x of shape (batch, seq)."""
        mx, p = self.mx, self.p
        h = self._norm(p["tok_emb"][mx.array(x)])
        h0, skips = h, []
        enc = self.shape.layers // 2
        for i in range(enc):
            h = self._block(i, h, h0)
            skips.append(h)
        for j, i in enumerate(range(enc, self.shape.layers)):
            if skips:
                h = h + p["skip_weights"][j] * skips.pop()
            h = self._block(i, h, h0)
        head = p["tok_emb"] if self.shape.tied else p["lm_head.weight"]
        logits = (self._norm(h) @ head.T).astype(mx.float32)
        return self.softcap * mx.tanh(logits / self.softcap)

    def nats(self, x: np.ndarray, y: np.ndarray) -> float:
        """Summed cross entropy (nats) of targets y after inputs x, both (batch, seq)."""
        mx = self.mx
        logits = self.logits(x)
        target = mx.take_along_axis(logits, mx.array(y)[..., None], axis=-1)[..., 0]
        return float((mx.logsumexp(logits, axis=-1) - target).sum().item())


@dataclass(frozen=True)
class Settings:
    """What the trusted evaluation needs besides the artifact (from the run's protocol)."""

    data_path: Path
    tokenizer_path: Path
    seq_len: int
    val_max_tokens: int
    logit_softcap: float = 30.0
    rope_base: float = 10000.0
    compute_dtype: str = "float32"  # the trainer's `compute_dtype:` line


def trusted_val_bpb(artifact: Path, settings: Settings) -> float:
    """val_bpb of the artifact by the daemon's own code; Unsupported for another model."""
    params = load_artifact(artifact)
    shape = infer_shape(params)
    model = BaselineModel(params, shape, settings.logit_softcap, settings.rope_base,
                   settings.compute_dtype)
    tokens = val_window(settings.data_path, settings.seq_len, settings.val_max_tokens)
    tables = tokenbytes.build_byte_tables(settings.tokenizer_path, shape.vocab)
    n = settings.seq_len
    seqs = (tokens.size - 1) // n
    per_batch = max(1, EVAL_TOKENS_PER_BATCH // n)
    nats, nbytes = 0.0, 0
    for first in range(0, seqs, per_batch):
        last = min(first + per_batch, seqs)
        x = tokens[first * n:last * n].astype(np.int64).reshape(-1, n)
        y = tokens[first * n + 1:last * n + 1].astype(np.int64).reshape(-1, n)
        nats += model.nats(x, y)
        nbytes += tokenbytes.count_target_bytes(x, y, tables)
    return nats / math.log(2) / nbytes


@dataclass(frozen=True)
class Check:
    status: str  # "agree" | "disagree" | "unsupported" | "error"
    reason: str
    claimed: float | None
    trusted: float | None

    def record(self) -> dict:
        return {"status": self.status, "reason": self.reason, "claimed_val_bpb": self.claimed,
                "trusted_val_bpb": self.trusted}


def verify(artifact: Path, claimed: float, settings: Settings, tolerance: float) -> Check:
    """Compare the trainer's claimed val_bpb with the trusted one."""
    try:
        trusted = trusted_val_bpb(artifact, settings)
    except Unsupported as exc:
        return Check("unsupported", f"verify: unsupported architecture ({exc})", claimed, None)
    except (OSError, ValueError, zlib.error, pickle.UnpicklingError, KeyError,
            ImportError, EOFError) as exc:
        return Check("error", f"verify: could not evaluate {artifact}: {exc}", claimed, None)
    diff = abs(trusted - claimed)
    if diff > tolerance:
        return Check("disagree", f"verify: the trainer says val_bpb {claimed:.6f}, the trusted "
                     f"evaluation of its artifact {trusted:.6f} (differs by {diff:.6f} > "
                     f"tolerance {tolerance})", claimed, trusted)
    return Check("agree", f"verify: trusted val_bpb {trusted:.6f} agrees with {claimed:.6f} "
                 f"(within {tolerance})", claimed, trusted)
