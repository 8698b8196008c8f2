"""The baseline network's shape, in one place: its settings, its tensors, its size.

The network itself is the trainer's (benchmark/train_gpt_mlx.py: `GPT`, `Block`, `Attention`,
`MLP`): tied embeddings, per block a grouped-query attention (c_q, c_k, c_v, proj, a q_gain
per head), a relu-squared MLP (fc, proj), two control scales and a residual mix, and U-Net
skip weights between the halves. This module names those tensors and their shapes for the
two parts of the daemon that must know them without running the trainer's (editable) code:
the trusted re-evaluation checks an artifact against them (loop.judge.verify), and the search
predicts an artifact's size from them (loop.proposers.shape). A trainer whose network
differs is judged all the same (the model server builds it through its own code,
loop.judge.loader); only those two need this table, and a change of the baseline network is
one edit here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# The trainer's shape settings and their defaults (its environment variables).
DEFAULT_SETTINGS = {"NUM_LAYERS": 9, "MODEL_DIM": 512, "NUM_HEADS": 8, "NUM_KV_HEADS": 4,
                    "MLP_MULT": 2, "VOCAB_SIZE": 1024}


@dataclass(frozen=True)
class Shape:
    vocab: int
    dim: int
    layers: int
    heads: int
    kv_heads: int
    mlp_hidden: int
    tied: bool = True

    @classmethod
    def from_settings(cls, settings: Mapping[str, int]) -> Shape:
        """The shape the trainer builds from its settings (NUM_LAYERS, MODEL_DIM, ...)."""
        s = dict(DEFAULT_SETTINGS) | dict(settings)
        return cls(int(s["VOCAB_SIZE"]), int(s["MODEL_DIM"]), int(s["NUM_LAYERS"]),
                   int(s["NUM_HEADS"]), int(s["NUM_KV_HEADS"]),
                   int(s["MODEL_DIM"]) * int(s["MLP_MULT"]))

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def skips(self) -> int:
        """Skip connections between the first half of the blocks and the second."""
        encoder = self.layers // 2
        return min(encoder, self.layers - encoder)


def block_tensors(shape: Shape) -> dict[str, tuple[int, ...]]:
    """Each block's tensors (names after `blocks.<i>.`) and their shapes."""
    d, kv = shape.dim, shape.kv_heads * shape.head_dim
    return {"attn.c_q.weight": (d, d), "attn.c_k.weight": (kv, d),
            "attn.c_v.weight": (kv, d), "attn.proj.weight": (d, d),
            "attn.q_gain": (shape.heads,), "mlp.fc.weight": (shape.mlp_hidden, d),
            "mlp.proj.weight": (d, shape.mlp_hidden), "attn_scale": (d,), "mlp_scale": (d,),
            "resid_mix": (2, d)}


BLOCK_TENSORS = tuple(block_tensors(Shape.from_settings({})))


def tensors(shape: Shape) -> dict[str, tuple[int, ...]]:
    """Every tensor of the network, by the name the trainer exports it under, and its shape."""
    want = {"tok_emb": (shape.vocab, shape.dim), "skip_weights": (shape.skips, shape.dim)}
    if not shape.tied:
        want["lm_head.weight"] = (shape.vocab, shape.dim)
    block = block_tensors(shape)
    for i in range(shape.layers):
        want.update({f"blocks.{i}.{name}": dims for name, dims in block.items()})
    return want


def parameter_count(shape: Shape) -> int:
    """The number of parameters (the trainer prints it as `model_params:`)."""
    return sum(math.prod(dims) for dims in tensors(shape).values())
