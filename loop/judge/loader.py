"""The built-in loader: an upstream-shaped trainer's export, built through the trainer's own code.

A trainer without the `load_for_eval` contract (upstream's `train_gpt_mlx.py` at any version,
and a researcher's edits of it) is loaded the way its own roundtrip evaluation loads it, in
the model server (a separate, sealed process that already imports the trainer file):

1. **Settings.** The server runs with the run's trainer settings in its environment (the
   `NAME=value` settings the benchmark gave the trainer; `settings_env` below), so the
   trainer's `Hyperparameters` read the same values they read in training.
2. **The model.** The trainer's own construction line, found in its source: the first call
   of its model class (`GPT`, upstream's name) - in upstream, `model = GPT(vocab_size=
   args.vocab_size, ...)` inside `main()`. The assignments that line depends on (upstream:
   `args = Hyperparameters()`) are replayed first, nothing else of `main`. When the line
   cannot be replayed, the class is called with its constructor's parameters looked up on a
   `Hyperparameters()` instance by name.
3. **The weights.** The artifact is read as upstream writes it (a zlib-compressed pickle,
   opened with loop/judge/verify.py's restricted unpickler, which accepts numpy arrays and
   plain containers only; lzma is accepted too), dequantized by the trainer's own function
   (`dequantize_state_dict_int8`, upstream's name), and must fit the model's parameters
   name for name and shape for shape.
4. **The logits**, the way upstream's loss gets them: the model's call returns hidden
   states; they go through the tied head (`tok_emb.weight`, or `lm_head` when the model has
   one) and the model's own `softcap` (else `LOGIT_SOFTCAP`'s tanh cap), then float32. A
   model whose call already returns vocabulary-wide logits is taken as it is.

The judge still computes the log-softmax, the cross entropy and the bytes itself. Anything
that cannot be found or does not fit raises `CannotLoad`, whose message names what was
missing and the fix (a `load_for_eval` in the trainer). Every run checks the loader besides:
the judge's score of the trainer's own validation slice must agree with the trainer's
printed roundtrip score (loop/judge/artifact_judge.py).
"""

from __future__ import annotations

import ast
import inspect
import io
import lzma
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

HYPERPARAMETERS = "Hyperparameters"
MODEL_CLASS = "GPT"
DEQUANTIZERS = ("dequantize_state_dict_int8", "dequantize_state")  # upstream's, then ours
HEAD_NAMES = ("lm_head",)
EMBEDDING = "tok_emb"
# Constructor parameters whose name is not a Hyperparameters field (upstream: dim, layers).
PARAMETER_ALIASES = {"dim": "model_dim", "layers": "num_layers", "heads": "num_heads",
                     "kv_heads": "num_kv_heads"}
ARGS_NAMES = ("args", "hparams", "config", "cfg", "hp")
FIX = ("add `load_for_eval(artifact_path) -> forward(tokens) -> logits` to the trainer "
       "(docs/BRING_YOUR_OWN_TRAINER.md; `autogolf adopt` writes one where it can)")
# Settings the run may pass to the server: upper-case names, short numeric values (a
# hyperparameter, never a payload: the settings are not counted in the artifact's bytes).
SETTING_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
SETTING_VALUE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
MAX_SETTINGS = 128
MAX_VALUE_CHARS = 32
# The server's own environment, never a trainer setting.
RESERVED_PREFIXES = ("PYTHON", "LD_", "DYLD_", "MLX_", "OMP_", "OPENBLAS_", "MKL_", "AUTOGOLF_",
                     "LC_")
RESERVED_NAMES = {"PATH", "HOME", "LANG", "TMPDIR", "SHELL", "USER"}


class CannotLoad(Exception):
    """The built-in loader cannot build this trainer's model; the message says what was
    missing and how to fix it."""


def settings_env(settings: dict[str, str]) -> dict[str, str]:
    """The run's trainer settings that may reach the model server's environment.

    Only `NAME=number` settings pass (at most MAX_SETTINGS, MAX_VALUE_CHARS each), and never
    one that configures the server itself (paths, Python, BLAS, MLX, the daemon's keys).
    """
    out = {}
    for name, value in settings.items():
        if len(out) >= MAX_SETTINGS:
            break
        if (SETTING_NAME.fullmatch(name) and len(value) <= MAX_VALUE_CHARS
                and SETTING_VALUE.fullmatch(value) and name not in RESERVED_NAMES
                and not name.startswith(RESERVED_PREFIXES)):
            out[name] = value
    return out


# ------------------------------------------------------------------------------ the artifact


def read_artifact(path: Path) -> dict:
    """The export object of an int8 artifact: a pickle compressed with zlib (or lzma)."""
    from loop.judge import verify

    blob = Path(path).read_bytes()
    raw = None
    for decompress in (zlib.decompress, lzma.decompress):
        try:
            raw = decompress(blob)
            break
        except (zlib.error, lzma.LZMAError):
            continue
    if raw is None:
        raise CannotLoad(f"{path} is neither zlib- nor lzma-compressed: the built-in loader "
                         "reads upstream's export (a zlib-compressed pickle); for another "
                         f"format, {FIX}")
    try:
        obj = verify._SafeUnpickler(io.BytesIO(raw)).load()
    except verify.Unsupported as exc:
        raise CannotLoad(f"{path}: {exc} (the built-in loader unpickles numpy arrays and plain "
                         f"containers only); {FIX}") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same answer
        raise CannotLoad(f"{path} is not a pickle the built-in loader can read "
                         f"({type(exc).__name__}: {exc}); {FIX}") from None
    if not isinstance(obj, dict):
        raise CannotLoad(f"{path} holds a {type(obj).__name__}, not the export's dict; {FIX}")
    return obj


# ------------------------------------------------------------------------------ the model


def _find(module: ModuleType, names: tuple[str, ...], what: str, trainer: Path) -> Any:
    for name in names:
        found = getattr(module, name, None)
        if found is not None:
            return found
    raise CannotLoad(f"{trainer.name} has no {what} ({' or '.join(names)}), which the "
                     f"built-in loader needs to build its model; {FIX}")


def _model_call(tree: ast.Module, cls: str) -> tuple[ast.Call, list[ast.stmt]] | None:
    """The first `cls(...)` call outside the class itself, and the statements of the function
    that makes it (its body, in order), or None."""
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for sub in ast.walk(node):
            if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
                    and sub.func.id == cls):
                return sub, node.body
    return None


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _assigned(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, ast.Assign):
        return {n.id for t in stmt.targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        return {stmt.target.id} if isinstance(stmt.target, ast.Name) else set()
    return set()


def _replay(call: ast.Call, body: list[ast.stmt], namespace: dict) -> list[ast.stmt]:
    """The assignments before `call` in `body` that its arguments depend on, in order."""
    before = [s for s in body if s.lineno < call.lineno and _assigned(s)]
    needed, chosen = _names(call) - set(namespace), []
    for stmt in reversed(before):
        if _assigned(stmt) & needed:
            chosen.append(stmt)
            needed |= _names(stmt.value) - set(namespace)
    return list(reversed(chosen))


def _construct_by_replay(module: ModuleType, trainer: Path, cls: str) -> Any:
    tree = ast.parse(trainer.read_text(encoding="utf-8"), str(trainer))
    found = _model_call(tree, cls)
    if found is None:
        raise LookupError(f"no call of {cls}(...) in {trainer.name}")
    call, body = found
    namespace = dict(vars(module))
    namespace.setdefault("args", getattr(module, HYPERPARAMETERS)())
    steps = _replay(call, body, namespace)
    exec(compile(ast.Module(body=steps, type_ignores=[]), str(trainer), "exec"), namespace)
    return eval(compile(ast.Expression(body=call), str(trainer), "eval"), namespace)


def _construct_by_signature(model_cls: type, hyper: Any) -> Any:
    kwargs, missing = {}, []
    for name, param in inspect.signature(model_cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in ARGS_NAMES:
            kwargs[name] = hyper
        elif hasattr(hyper, PARAMETER_ALIASES.get(name, name)):
            kwargs[name] = getattr(hyper, PARAMETER_ALIASES.get(name, name))
        elif param.default is param.empty:
            missing.append(name)
    if missing:
        raise LookupError(f"its parameters {', '.join(missing)} are not {HYPERPARAMETERS} "
                          "fields")
    return model_cls(**kwargs)


def build_model(module: ModuleType, trainer: Path) -> tuple[Any, Any]:
    """(model, hyperparameters) built by the trainer's own code under this environment."""
    hyper_cls = _find(module, (HYPERPARAMETERS,), "hyperparameters class", trainer)
    model_cls = _find(module, (MODEL_CLASS,), "model class", trainer)
    try:
        hyper = hyper_cls()
    except Exception as exc:  # noqa: BLE001 - the trainer's code
        raise CannotLoad(f"{trainer.name}: {HYPERPARAMETERS}() raised {type(exc).__name__}: "
                         f"{exc} under the run's settings") from None
    try:
        return _construct_by_replay(module, trainer, MODEL_CLASS), hyper
    except Exception as replay_exc:  # noqa: BLE001 - the trainer's code; try the signature
        try:
            return _construct_by_signature(model_cls, hyper), hyper
        except Exception as exc:  # noqa: BLE001
            raise CannotLoad(
                f"cannot build {trainer.name}'s {MODEL_CLASS}: replaying its construction "
                f"line failed ({type(replay_exc).__name__}: {replay_exc}) and calling it with "
                f"{HYPERPARAMETERS} fields failed ({type(exc).__name__}: {exc}); {FIX}"
            ) from None


def _shape_summary(hyper: Any) -> str:
    fields = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult")
    return ", ".join(f"{f.upper()}={getattr(hyper, f)}" for f in fields if hasattr(hyper, f))


def load_weights(model: Any, flat: dict[str, Any], hyper: Any, trainer: Path) -> None:
    """Put the dequantized tensors into the model; CannotLoad when they do not fit it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    want = dict(tree_flatten(model.parameters()))
    have = {k: v if isinstance(v, mx.array) else mx.array(np.asarray(v)) for k, v in flat.items()}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [f"{k} {tuple(have[k].shape)} vs {tuple(want[k].shape)}"
             for k in sorted(set(want) & set(have)) if tuple(have[k].shape) != tuple(want[k].shape)]
    if missing or extra or wrong:
        parts = [f"{label} {items[:3]}" for label, items in
                 (("missing", missing), ("extra", extra), ("shapes differ:", wrong)) if items]
        raise CannotLoad(
            f"the artifact's tensors do not fit the model {trainer.name} builds under the "
            f"run's settings ({_shape_summary(hyper)}): {'; '.join(parts)}. The settings the "
            f"benchmark printed are not those it trained with, or the model is built "
            f"differently at load time; {FIX}")
    model.update(tree_unflatten(list(have.items())))
    if callable(getattr(model, "eval", None)):
        model.eval()


def _head(model: Any) -> Any:
    """The head weight (vocab, dim): the model's own `lm_head`, else the tied embedding."""
    for name in (*HEAD_NAMES, EMBEDDING):
        found = getattr(model, name, None)
        if found is not None:
            return getattr(found, "weight", found)
    raise CannotLoad(f"the model has neither {' nor '.join(HEAD_NAMES)} nor a {EMBEDDING} "
                     f"embedding to use as its head; {FIX}")


def logits_fn(model: Any, hyper: Any) -> Callable[[np.ndarray], np.ndarray]:
    """forward(tokens) -> float32 logits, the way an upstream-shaped trainer's loss makes them."""
    import mlx.core as mx

    head = _head(model)
    vocab, width = int(head.shape[0]), int(head.shape[1])
    softcap = getattr(model, "softcap", None)
    cap = float(getattr(model, "logit_softcap", getattr(hyper, "logit_softcap", 0.0)) or 0.0)

    def cap_logits(logits: Any) -> Any:
        if callable(softcap):
            return softcap(logits)
        return cap * mx.tanh(logits / cap) if cap > 0 else logits

    def forward(tokens: np.ndarray) -> np.ndarray:
        out = model(mx.array(np.asarray(tokens, dtype=np.int32)))
        if out.shape[-1] == width:  # hidden states: the tied (or own) head, the softcap
            logits = cap_logits(out @ head.astype(out.dtype).T)
        elif out.shape[-1] == vocab:  # the model's call already makes logits
            logits = out
        else:
            raise CannotLoad(f"the model's call returns width {out.shape[-1]}, neither its "
                             f"hidden width {width} nor its vocabulary {vocab}; {FIX}")
        return np.array(logits.astype(mx.float32), dtype=np.float32)

    return forward


def builtin_forward(module: ModuleType, trainer: Path, artifact: Path
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """forward(tokens) -> logits for the artifact, built through the trainer's own code."""
    dequantize = _find(module, DEQUANTIZERS, "dequantize function", trainer)
    obj = read_artifact(artifact)
    try:
        flat = dequantize(obj)
    except Exception as exc:  # noqa: BLE001 - the trainer's code on the file
        raise CannotLoad(f"{trainer.name}'s {dequantize.__name__} cannot read {artifact.name} "
                         f"({type(exc).__name__}: {exc}); {FIX}") from None
    if not isinstance(flat, dict):
        raise CannotLoad(f"{dequantize.__name__} returned a {type(flat).__name__}, not a dict of "
                         f"tensors; {FIX}")
    model, hyper = build_model(module, trainer)
    load_weights(model, flat, hyper, trainer)
    return logits_fn(model, hyper)
