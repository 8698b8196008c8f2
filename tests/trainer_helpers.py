"""Independent reference pieces for the trainer tests: run the trainer, parse its log, and
recompute val_bpb in numpy (float64) from the exported int8 artifact.

Nothing here imports the trainer: the forward pass, dequantisation and byte tables are
written again from the SPEC so that a mistake in the trainer cannot hide in a shared helper.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRAINER_REL = Path("benchmark/train_gpt_mlx.py")

# Tiny settings: a 4-layer 64-wide model (2 encoder + 2 decoder blocks, so the U-Net skips
# pair up in reverse) that trains 20 steps in seconds on 2 CPU cores.
TINY_ENV = {
    "NUM_LAYERS": "4",
    "MODEL_DIM": "64",
    "NUM_HEADS": "2",
    "NUM_KV_HEADS": "1",
    "MLP_MULT": "2",
    "TRAIN_SEQ_LEN": "128",
    "TRAIN_BATCH_TOKENS": "4096",
    "GRAD_ACCUM_STEPS": "2",
    "ITERATIONS": "20",
    "WARMUP_STEPS": "2",
    "WARMDOWN_ITERS": "5",
    "MAX_WALLCLOCK_SECONDS": "0",
    "VAL_MAX_TOKENS": "2048",
    "VAL_BATCH_SIZE": "1024",
    "VAL_LOSS_EVERY": "10",
    "TRAIN_LOG_EVERY": "1",
    "SEED": "1337",
}

# SPEC section 3 log lines, one regex each, anchored at both ends.
NUM = r"(?:-?\d+(?:\.\d+)?|nan|inf|-inf)"
SPEC_LINE_PATTERNS = {
    "train": re.compile(
        rf"^step:\d+/\d+ train_loss:{NUM} train_time:\d+ms step_avg:\d+\.\d{{2}}ms tok_s:\d+$"
    ),
    "val": re.compile(
        rf"^step:\d+/\d+ val_loss:{NUM} val_bpb:{NUM} train_time:\d+ms step_avg:\d+\.\d{{2}}ms$"
    ),
    "serialized": re.compile(r"^serialized_model_int8_zlib:\d+ bytes \(.*\)$"),
    "roundtrip": re.compile(
        r"^final_int8_zlib_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$"
    ),
    "roundtrip_exact": re.compile(
        r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$"
    ),
    "code_size": re.compile(r"^Code size: \d+ bytes$"),
    "total_size": re.compile(r"^Total submission size int8\+zlib: \d+ bytes$"),
}
# Which SPEC pattern a line claims to be, by its start; such a line must then match in full.
SPEC_LINE_PREFIXES = {
    "train": re.compile(r"^step:\d+/\d+ train_loss:"),
    "val": re.compile(r"^step:\d+/\d+ val_loss:"),
    "serialized": re.compile(r"^serialized_model_int8_zlib:"),
    "roundtrip": re.compile(r"^final_int8_zlib_roundtrip "),
    "roundtrip_exact": re.compile(r"^final_int8_zlib_roundtrip_exact "),
    "code_size": re.compile(r"^Code size:"),
    "total_size": re.compile(r"^Total submission size"),
}


@dataclass
class TrainerRun:
    returncode: int
    stdout: str
    out_dir: Path
    run_id: str
    env: dict[str, str] = field(repr=False)

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()

    def field(self, prefix: str, key: str) -> str:
        """Value of `key:` on the last line that starts with prefix."""
        for line in reversed(self.lines):
            if line.startswith(prefix):
                m = re.search(rf"(?:^|\s){re.escape(key)}:(\S+)", line)
                if m:
                    return m.group(1)
        raise AssertionError(f"no line starting {prefix!r} with {key}: in the log")

    def train_losses(self) -> list[tuple[int, float]]:
        out = []
        for line in self.lines:
            m = re.match(r"^step:(\d+)/\d+ train_loss:(\S+) ", line)
            if m:
                out.append((int(m.group(1)), float(m.group(2))))
        return out

    def size_line(self, prefix: str) -> int:
        for line in self.lines:
            if line.startswith(prefix):
                return int(re.search(r"(\d+) bytes", line).group(1))
        raise AssertionError(f"no {prefix!r} line in the log")


def run_trainer(repo_root: Path, base_env: dict[str, str], out_dir: Path, run_id: str,
                timeout: float = 120.0, **overrides: str) -> TrainerRun:
    """Run the trainer as a child with TINY_ENV + overrides; out_dir receives its files."""
    env = dict(base_env)
    env.update(TINY_ENV)
    env.update({"OUT_DIR": str(out_dir), "RUN_ID": run_id})
    env.update(overrides)
    proc = subprocess.run(
        [sys.executable, str(repo_root / TRAINER_REL)], cwd=out_dir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )
    return TrainerRun(proc.returncode, proc.stdout, out_dir, run_id, env)


# -------------------------------------------------------------------------------------------
# Reference evaluation in numpy, float64.


def byte_tables(model_path: str | os.PathLike, vocab_size: int):
    """(base bytes, has leading word mark, is boundary) per id, per SPEC section 3."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    base = np.zeros(vocab_size, dtype=np.int64)
    space = np.zeros(vocab_size, dtype=bool)
    boundary = np.ones(vocab_size, dtype=bool)
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue  # zero bytes, and the next token's word mark is not a space
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        text = sp.id_to_piece(i)
        if text[:1] == "\u2581":
            space[i] = True
            text = text[1:]
        base[i] = len(text.encode("utf-8"))
    return base, space, boundary


def load_artifact(path: Path) -> dict[str, np.ndarray]:
    """Dequantised float64 weights of the trainer's int8+zlib export."""
    obj = pickle.loads(zlib.decompress(path.read_bytes()))
    weights = {}
    for name, q in obj["quantized"].items():
        weights[name] = q.astype(np.float64) * obj["scales"][name].astype(np.float64)[:, None]
    for name, w in obj["passthrough"].items():
        weights[name] = w.astype(np.float64)
    return weights


def _rms(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def _rotary(x: np.ndarray, base: float) -> np.ndarray:
    t, d = x.shape[-2], x.shape[-1]
    half = d // 2
    angles = np.arange(t)[:, None] * base ** (-np.arange(half) / half)[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def reference_token_losses(w: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, *,
                           num_layers: int, num_heads: int, num_kv_heads: int,
                           softcap: float, rope_base: float) -> np.ndarray:
    """Cross entropy (nats) of each target in y for inputs x (batch, seq), in float64."""
    emb = w["tok_emb"]
    h = _rms(emb[x])
    h0 = h
    bsz, t, dim = h.shape
    hd = dim // num_heads
    group = num_heads // num_kv_heads
    causal = np.triu(np.ones((t, t), dtype=bool), k=1)

    def block(i: int, h: np.ndarray) -> np.ndarray:
        p = f"blocks.{i}."
        mix = w[p + "resid_mix"]
        h = mix[0] * h + mix[1] * h0
        a = _rms(h)
        q = (a @ w[p + "attn.c_q.weight"].T).reshape(bsz, t, num_heads, hd).transpose(0, 2, 1, 3)
        k = (a @ w[p + "attn.c_k.weight"].T).reshape(bsz, t, num_kv_heads, hd)
        v = (a @ w[p + "attn.c_v.weight"].T).reshape(bsz, t, num_kv_heads, hd)
        k = np.repeat(k.transpose(0, 2, 1, 3), group, axis=1)  # query head j -> kv head j//g
        v = np.repeat(v.transpose(0, 2, 1, 3), group, axis=1)
        q = _rotary(_rms(q), rope_base) * w[p + "attn.q_gain"][None, :, None, None]
        k = _rotary(_rms(k), rope_base)
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        s = np.where(causal, -np.inf, s)
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        att = (s / s.sum(axis=-1, keepdims=True)) @ v
        att = att.transpose(0, 2, 1, 3).reshape(bsz, t, dim)
        h = h + w[p + "attn_scale"] * (att @ w[p + "attn.proj.weight"].T)
        m = np.maximum(_rms(h) @ w[p + "mlp.fc.weight"].T, 0.0)
        return h + w[p + "mlp_scale"] * ((m * m) @ w[p + "mlp.proj.weight"].T)

    n_enc = num_layers // 2
    skips = []
    for i in range(n_enc):
        h = block(i, h)
        skips.append(h)
    for j in range(num_layers - n_enc):
        if skips:
            h = h + w["skip_weights"][j] * skips.pop()
        h = block(n_enc + j, h)
    logits = _rms(h) @ (w["lm_head.weight"] if "lm_head.weight" in w else emb).T
    logits = softcap * np.tanh(logits / softcap)
    top = logits.max(axis=-1, keepdims=True)
    lse = top[..., 0] + np.log(np.exp(logits - top).sum(axis=-1))
    return lse - np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]


def read_val_tokens(data_path: Path) -> np.ndarray:
    """All val tokens, from the shard format of SPEC section 2."""
    parts = []
    for f in sorted(Path(data_path).glob("fineweb_val_*.bin")):
        count = int(np.fromfile(f, dtype="<i4", count=256)[2])
        parts.append(np.fromfile(f, dtype="<u2", count=count, offset=1024))
    return np.concatenate(parts).astype(np.int64)
