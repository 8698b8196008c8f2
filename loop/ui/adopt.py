"""`autogolf adopt PATH`: bring your own trainer (issue 25).

One smoke run of the trainer at PATH in a scratch copy of the checkout, judged exactly as
the loop judges (loop.measure.pipeline + loop.judge.artifact_judge.ArtifactJudge), then a report in
plain words - METRIC lines found, the artifact found, the judge's score against the
trainer's own, the causality probe, the seed, the time per step - and:

- judged: the file is installed at benchmark/train_gpt_mlx.py in the checkout (not
  committed: `git diff` shows it; the previous file is backed up under .autogolf/adopt/);
- not judged because the built-in loader cannot build its model, and the file has no
  `load_for_eval`: a `load_for_eval` written from the names found in the file (its model
  class, its hyperparameters, its dequantizer: the built-in loader's steps spelled out, for
  the researcher to edit) is shown as a diff; with `--yes` it is added, checked by a second
  smoke run, and installed only if that run is judged;
- anything else: what is missing, and nothing is installed.

A file that is not a trainer (no Python, no hyperparameters or evaluation contract, no entry
point) is refused before anything runs.
"""

from __future__ import annotations

import ast
import difflib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loop.config import Config
from loop.data import datasets
from loop.errors import UserError
from loop.judge import loader
from loop.judge.artifact_judge import ArtifactJudge
from loop.judge.judge import BASE_SEED
from loop.judge.validity import Measurement, assess
from loop.measure import seal
from loop.measure.pipeline import TRAINER, Pipeline, Run

ADOPT_SEED = BASE_SEED + 1  # not the trainer's default: a trainer that ignores SEED shows it
BACKUP_DIR = Path(".autogolf/adopt")


@dataclass
class Trial:
    """One smoke run of a candidate trainer, judged."""

    run: Run
    measured: Measurement

    @property
    def judged(self) -> bool:
        return self.measured.verdict is None

    @property
    def reason(self) -> str:
        return "" if self.measured.verdict is None else (
            f"{self.measured.verdict.status}: {self.measured.verdict.reason}")


# ------------------------------------------------------------------------------ the file


def check_is_trainer(path: Path) -> str:
    """The file's text; UserError naming what is missing when it is not a trainer."""
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the path of a trainer such as "
                        "upstream's train_gpt_mlx.py")
    try:
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, str(path))
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path} is not a trainer: not Python source ({exc}); nothing "
                        "installed") from None
    names = {n.name for n in ast.walk(tree)
             if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))}
    has_main = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)
                   for n in tree.body)
    missing = []
    if loader.HYPERPARAMETERS not in names and "load_for_eval" not in names:
        missing.append(f"{loader.HYPERPARAMETERS} class (upstream's env-var settings) and no "
                       "load_for_eval function")
    if not has_main:
        missing.append("`if __name__ == \"__main__\":` entry point (the benchmark runs the "
                       "file as a script)")
    if missing:
        raise UserError(f"{path} is not a trainer: it has no {'; no '.join(missing)}; "
                        "nothing installed")
    return text


# ------------------------------------------------------------------------------ one run


def scratch_copy(repo: Path, dest: Path) -> None:
    """The checkout's tracked and untracked (not ignored) files, copied to dest."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        source = repo / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def trial(repo: Path, cfg: Config, trainer_text: str, profile: str, name: str,
          on_line: Callable[[str], None] | None = None) -> Trial:
    """One run of `trainer_text` as the benchmark's trainer in a scratch copy, judged."""
    cache = datasets.cache_root(repo)
    dataset = datasets.resolve(cfg.dataset, cache)
    with tempfile.TemporaryDirectory(prefix="autogolf-adopt-") as tmp:
        work = Path(tmp) / "repo"
        scratch_copy(repo, work)
        (work / TRAINER).parent.mkdir(parents=True, exist_ok=True)
        (work / TRAINER).write_text(trainer_text, encoding="utf-8")
        scorer = ArtifactJudge(cfg, work, work, dataset)
        env = scorer.trainer_env(profile)
        scorer.seal = seal.for_checkout(cfg.judge_sealed, work, dataset.data_path,
                                        worktree=work, data=[Path(v) for v in env.values()],
                                        trainer=work / TRAINER)
        env |= {"AUTOGOLF_JUDGE_SEED": str(ADOPT_SEED)}
        log = repo / BACKUP_DIR / f"{name}-{profile}.log"
        run = Pipeline(cfg, cache, dataset, f"adopt-{os.getpid()}", on_line=on_line,
                       seal=scorer.seal).benchmark(work, profile, name, log, env)
        try:
            measured = scorer.judge(assess(run, cfg.artifact_cap_bytes), run, profile,
                                    f"{name}-{profile}")
        finally:
            shutil.rmtree(run.outputs, ignore_errors=True)
    return Trial(run, measured)


# ------------------------------------------------------------------------------ the report


def report(t: Trial, tolerance: float) -> list[str]:
    """The run in plain words, one finding a line."""
    rung, log = t.measured.rung, t.run.log
    judge = rung.get("judge") or {}
    scores = judge.get("scores") or {}
    held, claim = scores.get("holdout") or {}, scores.get("claim") or {}
    metrics = sorted(t.run.metrics)
    lines = [
        f"exit status: {t.run.exit_code} after {t.run.wall_s:.0f} s"
        + (" (timed out)" if t.run.timed_out else ""),
        ("METRIC lines found: " + ", ".join(metrics)) if metrics else
        "METRIC lines found: none (autoresearch.sh prints them from the trainer's log)",
        "artifact: " + (judge.get("artifact") or _artifact_problem(t)),
    ]
    printed = log.exact_val_bpb
    if claim.get("val_bpb") is not None and printed is not None:
        diff = abs(claim["val_bpb"] - printed)
        lines.append(f"judge vs trainer on the trainer's own slice: {claim['val_bpb']:.6f} vs "
                     f"{printed:.6f} printed (differs by {diff:.6f}; "
                     f"{'agrees' if diff <= tolerance else 'DISAGREES'} within {tolerance:g}; "
                     f"{claim.get('loader')} loader)")
    else:
        lines.append("judge vs trainer: no comparison (" + (
            "the trainer printed no final_int8_zlib_roundtrip_exact line" if printed is None
            else "the judge could not score the artifact") + ")")
    if held.get("val_bpb") is not None:
        lines.append(f"judge's score on the holdout: {held['val_bpb']:.6f} "
                     f"({held.get('tokens', 0):,} tokens)")
    lines.append("causality probe: " + _probe(held, t))
    lines.append("seed: " + _seed(rung))
    lines.append("time per step: " + (f"{log.step_ms:.1f} ms ({log.last_step} steps)"
                                      if log.step_ms is not None else "unknown (no step lines)"))
    return lines


def _artifact_problem(t: Trial) -> str:
    reason = t.reason
    return reason.split(": ", 1)[-1] if "no artifact" in reason else (
        "not looked for (the run did not finish with a score)" if not t.judged else "found")


def _probe(held: dict, t: Trial) -> str:
    if held.get("status") == "scored":
        return "passed (changing later input tokens left earlier logits unchanged)"
    if "looks ahead" in t.reason:
        return "FAILED: " + t.reason
    return "not run (the model was not loaded)"


def _seed(rung: dict) -> str:
    printed = (rung.get("protocol") or {}).get("seed")
    if printed is not None:
        ok = printed == str(ADOPT_SEED)
        return (f"{'honoured' if ok else 'NOT honoured'}: asked for {ADOPT_SEED}, the trainer "
                f"prints seed:{printed}")
    passed = (rung.get("run_settings") or {}).get("SEED")
    if passed == str(ADOPT_SEED):
        return (f"passed: autoresearch.sh gave SEED={ADOPT_SEED}; the trainer prints no "
                "`seed:` line, so the loop takes the script's word for it")
    return f"NOT honoured: asked for {ADOPT_SEED}, nothing in the run says it was used"


# ------------------------------------------------------------------------------ load_for_eval


def _loader_failed(t: Trial) -> bool:
    verdict = t.measured.verdict
    return (verdict is not None and verdict.status == "unjudged"
            and "load_for_eval" in verdict.reason and "no artifact" not in verdict.reason)


def _model_class(tree: ast.Module) -> str | None:
    """The trainer's model class: the one class with a `loss` method (upstream's GPT)."""
    found = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
             and any(isinstance(f, ast.FunctionDef) and f.name == "loss" for f in n.body)]
    return found[0] if len(found) == 1 else None


def _dequantizer(tree: ast.Module) -> str | None:
    found = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
             and n.name.startswith("dequantize")]
    return found[0] if len(found) == 1 else None


def _construction(tree: ast.Module, cls: str) -> str | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == cls:
            return ast.unparse(node)
    return None


def write_load_for_eval(text: str) -> tuple[str | None, str]:
    """(the file with a load_for_eval added, what it used) or (None, what is missing)."""
    tree = ast.parse(text)
    cls, deq = _model_class(tree), _dequantizer(tree)
    hyper = any(isinstance(n, ast.ClassDef) and n.name == loader.HYPERPARAMETERS
                for n in tree.body)
    call = _construction(tree, cls) if cls else None
    missing = [what for what, ok in (
        ("one model class with a `loss` method", cls),
        (f"a {loader.HYPERPARAMETERS} class", hyper),
        ("one `dequantize...` function", deq),
        (f"a call that builds the model ({cls}(...))", call)) if not ok]
    if missing:
        return None, "the file has no " + ", no ".join(missing)
    code = LOAD_FOR_EVAL.format(call=call, dequantize=deq)
    return text.rstrip("\n") + "\n\n" + code, f"model {call}, dequantizer {deq}"


LOAD_FOR_EVAL = '''
def load_for_eval(artifact_path):
    """autogolf's evaluation contract (written by `autogolf adopt`; edit it freely): load the
    int8 export and return forward(int32 tokens (batch, seq)) -> float32 logits (batch, seq,
    vocab), made the way this file's loss makes them. The judge computes the loss itself."""
    import pickle as _pickle
    import zlib as _zlib

    import mlx.core as _mx
    import numpy as _np
    from mlx.utils import tree_unflatten as _unflatten

    args = Hyperparameters()
    model = {call}
    with open(artifact_path, "rb") as f:
        flat = {dequantize}(_pickle.loads(_zlib.decompress(f.read())))
    model.update(_unflatten([(k, _mx.array(v)) for k, v in flat.items()]))

    def forward(tokens):
        hidden = model(_mx.array(_np.asarray(tokens, dtype=_np.int32)))
        logits = hidden @ model.tok_emb.weight.astype(hidden.dtype).T
        logits = model.softcap(logits) if hasattr(model, "softcap") else logits
        return _np.array(logits.astype(_mx.float32), dtype=_np.float32)

    return forward
'''


# ------------------------------------------------------------------------------ the verb


def adopt(repo: Path, cfg: Config, path: Path, *, yes: bool = False, profile: str = "smoke",
          out: Callable[[str], None] = print) -> int:
    """The whole verb; 0 when a trainer was installed, 1 when not."""
    text = check_is_trainer(path)
    if profile not in cfg.profiles:
        raise UserError(f"profile {profile!r} is not under `profiles:` in autogolf.yaml")
    out(f"adopt: one {profile} run of {path} in a scratch copy of {repo}, judged as the loop "
        "judges...")
    first = trial(repo, cfg, text, profile, "adopt")
    for line in report(first, cfg.judge_claim_tolerance):
        out(f"  {line}")
    if first.judged:
        return install(repo, text, path, out)
    out(f"not judged: {first.reason}")
    if not _loader_failed(first) or "def load_for_eval" in text:
        out("nothing installed: fix what is named above, then run `autogolf adopt` again")
        return 1
    amended, used = write_load_for_eval(text)
    if amended is None:
        out(f"the built-in loader cannot serve this trainer, and adopt cannot write a "
            f"load_for_eval for it: {used}. Write one by hand (docs/BRING_YOUR_OWN_TRAINER.md)"
            "; nothing installed")
        return 1
    out(f"the built-in loader cannot serve this trainer; adopt can add this load_for_eval "
        f"({used}):")
    for line in difflib.unified_diff(text.splitlines(), amended.splitlines(), str(path),
                                     f"{path} (with load_for_eval)", lineterm="", n=1):
        out(line)
    if not yes:
        out("nothing installed: run `autogolf adopt PATH --yes` to add it, check it with a "
            "second run and install")
        return 1
    second = trial(repo, cfg, amended, profile, "adopt-contract")
    for line in report(second, cfg.judge_claim_tolerance):
        out(f"  {line}")
    if not second.judged:
        out(f"with the written load_for_eval the run is still not judged: {second.reason}. "
            "Edit its forward() to make logits as your loss does; nothing installed")
        return 1
    return install(repo, amended, path, out)


def install(repo: Path, text: str, source: Path, out: Callable[[str], None]) -> int:
    target = repo / TRAINER
    if target.is_file():
        backup = repo / BACKUP_DIR / f"train_gpt_mlx.py.{time.strftime('%Y%m%dT%H%M%S')}"
        backup.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, backup)
        out(f"the previous trainer is saved as {backup.relative_to(repo)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    out(f"installed {source} at {TRAINER} (not committed: review it with `git diff`, then "
        "commit it before `autogolf run`, which works on committed code)")
    return 0
