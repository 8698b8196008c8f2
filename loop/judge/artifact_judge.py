"""The artifact judge: the score that decides is the daemon's, not the trainer's.

`ArtifactJudge` measures a valid run's artifact itself - its size with the counted code
files, and its score on held-out tokens the trainer never saw, in a separate model-server
process (loop.judge.score) - and compares what the run printed with that
(`claim_disagreement`). It does not decide keep or discard (the ladder, loop.judge.judge)
and does not check the run's own lines (loop.judge.validity, which runs first).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from loop import platform
from loop.config import Config
from loop.data import datasets, tokenbytes
from loop.errors import UserError
from loop.judge import artifact as artifacts
from loop.judge import holdout, loader, score
from loop.judge.validity import Measurement
from loop.judge.verdict import Verdict
from loop.measure.pipeline import ARTIFACT_NAME, TRAINER, Run
from loop.measure.seal import Seal
from loop.store.files import file_hash
from loop.store.rows import Experiment


def run_name(exp: Experiment, profile: str, tag: str = "") -> str:
    """The RUN_ID a benchmark of `exp` is given: the loop passes `exp.id + tag` as the run id
    and the pipeline appends the profile (loop.measure.pipeline.bench_env)."""
    return f"{exp.id}{tag}-{profile}"


class ArtifactJudge:
    """The score that decides, measured by the daemon, not printed by the trainer.

    For each benchmark run the daemon gives the trainer a data folder without the holdout
    (loop.judge.holdout) and a path to write its artifact to; afterwards it measures the
    artifact and the counted code files itself (the size), and scores the artifact on the
    held-out tokens in a separate model-server process that sees input tokens only, computing
    log-softmax, cross-entropy and the target bytes itself (loop.judge.score). What the
    trainer and the benchmark script printed are claims compared with that: a size or score
    that disagrees is `metric_mismatch`; an artifact that cannot be scored is `unjudged`.
    """

    def __init__(self, cfg: Config, repo: Path, worktree: Path, dataset: datasets.DatasetInfo,
                 seal: Seal | None = None):
        self.cfg = cfg
        self.repo = repo
        self.worktree = worktree
        self.dataset = dataset
        self.seal = seal or Seal(None)
        self._prepared: dict[str, holdout.Prepared] = {}
        self._tables: tokenbytes.ByteTables | None = None

    def device(self) -> str:
        """The device class the model servers run on (MLX's default device, as the trainer's:
        `device:` in autogolf.yaml, else what MLX says)."""
        if self.cfg.device != "auto":
            return self.cfg.device
        return self.cfg.device_class or platform.device_class()

    def prepared(self, profile: str) -> holdout.Prepared:
        if profile not in self._prepared:
            try:
                self._prepared[profile] = holdout.prepare(self.dataset, profile, self.repo)
            except holdout.HoldoutError as exc:
                raise UserError(f"judge: {exc}") from None
        return self._prepared[profile]

    def trainer_env(self, profile: str) -> dict[str, str]:
        """The data folder (no holdout) the trainer is given (the pipeline names the
        artifact path: the run's own output folder)."""
        prep = self.prepared(profile)
        return {"DATA_PATH": str(prep.data_path), "TOKENIZER_PATH": str(prep.tokenizer_path)}

    def judge(self, measured: Measurement, run: Run, profile: str,
              run_id: str = "", stop: Callable[[], bool] | None = None) -> Measurement:
        """The judge's figures for a run whose printed lines were consistent; `stop` ends
        the scoring early (the deadline or a signal: the caller records `interrupted`).

        The artifact is the one the trainer was asked to write (AUTOGOLF_ARTIFACT_PATH, in
        the run's output folder) or, with `run_id`, upstream's export where the run's `logs/`
        went (loop.judge.artifact). An unsealed upstream export is deleted afterwards unless
        KEEP_MODEL=1 (the output folder itself is the loop's to delete).
        """
        prep = self.prepared(profile)
        rung = measured.rung
        rung["judge"] = {"holdout": prep.holdout.identity()}
        found, where = None, "no output folder was set for this run"
        if run.outputs is not None:
            found, where = artifacts.find_artifact(run.outputs / ARTIFACT_NAME,
                                                   run.logs_dir or run.outputs, run_id)
        try:
            if measured.verdict is not None and measured.verdict.status != "over_cap":
                return measured  # a crash, a timeout, no score printed: nothing to judge
            if found is None:
                rung["printed_val_bpb"] = rung.pop("val_bpb", None)
                return self._fail(measured, "unjudged", f"judge: {where}")
            rung["judge"]["artifact"] = where
            return self._judge(measured, run, prep, found, stop)
        finally:
            if found is not None and os.environ.get("KEEP_MODEL") != "1":
                found.unlink(missing_ok=True)

    def _judge(self, measured: Measurement, run: Run, prep: holdout.Prepared,
               artifact: Path, stop: Callable[[], bool] | None = None) -> Measurement:
        rung = measured.rung
        claimed_bpb = rung.pop("val_bpb", None)
        rung["printed_val_bpb"] = claimed_bpb
        try:
            size = score.measure_total_bytes(artifact, self.worktree)
        except score.Unscorable as exc:
            return self._fail(measured, "unjudged", f"judge: {exc}")
        rung["judge"]["total_bytes"] = {"artifact": size.artifact_bytes,
                                        "code": size.code_files, "total": size.total}
        rung["judge"]["artifact_sha256"] = file_hash(artifact)
        printed = run.metrics.get("total_bytes")
        if printed is not None and abs(printed - size.total) >= 0.5:
            return self._fail(measured, "metric_mismatch", f"METRIC total_bytes={printed:.0f} "
                              f"but the judge measures {size.total:,} bytes (artifact "
                              f"{size.artifact_bytes:,} + code {size.code_bytes:,})")
        rung["total_bytes"] = size.total
        cap = self.cfg.artifact_cap_bytes
        if size.total > cap:
            return self._fail(measured, "over_cap", f"artifact {size.total:,} bytes (measured) > "
                              f"cap {cap:,} bytes (over by {size.total - cap:,})")
        settings = loader.settings_env(run.log.run_settings)
        rung["judge"]["settings"] = settings
        scores = score.score_sets(
            self.worktree / TRAINER, artifact,
            {"holdout": prep.holdout.tokens, "claim": prep.trainer_slice()},
            prep.holdout.seq_len, self.tables(), cwd=self.worktree,
            env=score.server_env() | settings, seal=self.seal, stop=stop,
            batch_tokens=score.batch_tokens_for(self.device()))
        rung["judge"]["scores"] = {name: s.record() for name, s in scores.items()}
        held, claim = scores["holdout"], scores["claim"]
        if not held.ok:
            return self._fail(measured, "unjudged", held.reason)
        disagreement = claim_disagreement(run.log.exact_val_bpb, claim,
                                          self.cfg.judge_claim_tolerance)
        if disagreement is not None:
            return self._fail(measured, *disagreement)
        rung["val_bpb"] = held.val_bpb
        return Measurement(rung, None, held.val_bpb)

    @staticmethod
    def _fail(measured: Measurement, status: str, reason: str) -> Measurement:
        measured.rung.pop("val_bpb", None)
        return Measurement(measured.rung, Verdict(status, reason), None)

    def tables(self) -> tokenbytes.ByteTables:
        if self._tables is None:
            self._tables = tokenbytes.build_byte_tables(self.dataset.tokenizer_path,
                                                         self.dataset.vocab_size)
        return self._tables


def claim_disagreement(printed: float | None, claim: score.Score, tolerance: float
                       ) -> tuple[str, str] | None:
    """(status, reason) when the judge's score of the trainer's own slice and the trainer's
    printed roundtrip score differ by more than `tolerance`, else None.

    Under the trainer's `load_for_eval` the trainer itself says how its model is loaded, so a
    difference is the trainer's: `metric_mismatch`. Under the built-in loader the judge
    built the model (through the trainer's code), so a difference means the loader did not
    load it as the trainer does: `unjudged`, with both numbers and the fix. A lying trainer
    gains nothing by the softer word: both statuses are never kept.
    """
    if not claim.ok or printed is None or abs(printed - claim.val_bpb) <= tolerance:
        return None
    numbers = (f"the trainer printed val_bpb {printed:.6f} but the judge scores the same "
               f"tokens at {claim.val_bpb:.6f} (differs by {abs(printed - claim.val_bpb):.6f} > "
               f"{tolerance:g})")
    if claim.loader == "builtin":
        return "unjudged", (
            f"judge: the built-in loader did not load the model as the trainer does: "
            f"{numbers}. It builds the trainer's model class under the settings autoresearch.sh "
            f"printed and makes logits as upstream's loss does (hidden states, tied head, "
            f"softcap); this trainer differs somewhere. Fix: {loader.FIX}")
    return "metric_mismatch", numbers
