"""The judge outside the judged, through the real loop (issue 15): one `autogolf run` session
on a committed copy of this project at the smoke profile, with the judge on (the default).

The incumbent is made deliberately weak (MATRIX_LR and TIED_EMBED_LR far too low) so that a
real improvement wins by far more than the noise. The scripted proposer then tries, in turn,
each way the judged code could lie - and each is not kept, with its own status and reason -
and finally two real improvements, one that changes the architecture and one that changes
the export, which are kept: the judge is not simply refusing everything.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from scheduler_helpers import Scripted
from test_e2e_real import committed_copy, git
from test_judge_score import PEEK  # a model that reads the next input token

from loop.config import load_config
from loop.daemon import scheduler
from loop.proposers import Proposal
from loop.store.ledger import Ledger

TRAINER = Path("benchmark/train_gpt_mlx.py")
CAP = 600_000  # the smoke model (~170 kB with the trainer) fits; a 256-wide one does not


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} no longer has {old!r}"
    path.write_text(text.replace(old, new))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def fake_score_lines(tree: Path) -> Proposal:
    append(tree / "autoresearch.sh", 'echo "final_int8_zlib_roundtrip_exact val_loss:0.34657359 '
           'val_bpb:0.50000000"\necho "METRIC val_bpb=0.5"\n')
    return Proposal("the benchmark script prints a score of 0.5", None)


def extra_byte_per_token(tree: Path) -> Proposal:
    edit(tree / TRAINER, "    return int(nbytes.sum())\n",
         "    return int(nbytes.sum()) + int(y.size)\n")
    return Proposal("the trainer counts one more byte per token", None)


def faked_size(tree: Path) -> Proposal:
    edit(tree / "autoresearch.sh", "        MODEL_DIM=64\n", "        MODEL_DIM=256\n")
    append(tree / "autoresearch.sh", 'echo "Total submission size int8+zlib: 170000 bytes"\n'
           'echo "METRIC total_bytes=170000"\n')
    return Proposal("a bigger model that prints the old size", None)


def honest_bigger_model(tree: Path) -> Proposal:
    edit(tree / "autoresearch.sh", "        MODEL_DIM=64\n", "        MODEL_DIM=256\n")
    return Proposal("a bigger model", None)


def train_on_validation(tree: Path) -> Proposal:
    edit(tree / TRAINER, 'train_files = shard_files(args.data_path, "train")',
         'train_files = shard_files(args.data_path, "val")')
    return Proposal("the trainer trains on its validation shard", None)


def looks_ahead(tree: Path) -> Proposal:
    append(tree / TRAINER, PEEK)
    return Proposal("a model that reads the next token", None)


def better_architecture(tree: Path) -> Proposal:
    """A learned gain on the final features (a new layer type), and a better MATRIX_LR
    (0.0001 -> 0.004: about 0.03 at smoke, within 0.002 from seed to seed)."""
    edit(tree / TRAINER, "        if not args.tie_embeddings:\n            self.lm_head = Linear(",
         "        self.out_gain = mx.ones((args.model_dim,))\n"
         "        if not args.tie_embeddings:\n            self.lm_head = Linear(")
    edit(tree / TRAINER, '        x = rms_norm(x)\n        if "lm_head" in self:',
         '        x = rms_norm(x) * self.out_gain.astype(x.dtype)\n        if "lm_head" in self:')
    edit(tree / "autoresearch.sh", "MATRIX_LR=0.0001\n", "MATRIX_LR=0.004\n")
    return Proposal("an output gain layer and MATRIX_LR 0.004", None)


def other_export(tree: Path) -> Proposal:
    """The artifact compressed with lzma instead of zlib (a new export the judge must load
    through the trainer's contract), and MATRIX_LR 0.004 -> 0.04 (about 0.15 at smoke, the
    same at every seed; TIED_EMBED_LR's gain is as large but varies with the seed by 0.03,
    more than smoke's 6 pairs resolve)."""
    # The trainer's reader tells lzma from zlib by its magic bytes: the writer is the edit.
    edit(tree / TRAINER, "    blob = zlib.compress(raw, ZLIB_LEVEL)",
         "    blob = __import__('lzma').compress(raw)")
    edit(tree / "autoresearch.sh", "MATRIX_LR=0.004\n", "MATRIX_LR=0.04\n")
    return Proposal("lzma export and MATRIX_LR 0.04", None)


STEPS = (fake_score_lines, extra_byte_per_token, faked_size, honest_bigger_model,
         train_on_validation, looks_ahead, better_architecture, other_export)


@pytest.fixture(scope="module")
def session(tmp_path_factory, repo_root: Path, sample_dataset) -> list[dict]:
    """One real session: the weak baseline, then each step of STEPS."""
    repo = tmp_path_factory.mktemp("judged") / "repo"
    repo.mkdir()
    script = (repo_root / "autoresearch.sh").read_text()
    weak = script.replace("MATRIX_LR=0.04\n", "MATRIX_LR=0.0001\n", 1).replace(
        "TIED_EMBED_LR=0.05\n", "TIED_EMBED_LR=0.0005\n", 1)
    # The default keep rule (sequential, 6 pairs at smoke): the real improvements here win
    # by 0.03 and more at every seed.
    # The compute cap is tests/test_sealed_judge.py's subject: here a loose one, so that a
    # busy machine cannot turn this file's keeps into over_budget.
    committed_copy(repo_root, repo, ladder=["smoke"], artifact_cap_bytes=CAP,
                   judge={"enabled": True, "compute_allowance": 3.0})
    (repo / "autoresearch.sh").write_text(weak)
    git(repo, "commit", "-q", "-am", "a weak incumbent")
    old = os.environ.get("AUTOGOLF_CACHE_ROOT")
    os.environ["AUTOGOLF_CACHE_ROOT"] = str(repo_root)  # the sample data, never copied
    try:
        cfg = load_config(repo / "autogolf.yaml")
        rules = scheduler.StopRules(max_experiments=len(STEPS), max_consecutive_failures=0)
        scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(*STEPS),
                            out=lambda s: None).run()
    finally:
        if old is None:
            os.environ.pop("AUTOGOLF_CACHE_ROOT", None)
        else:
            os.environ["AUTOGOLF_CACHE_ROOT"] = old
    return [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment"]


def row_of(rows: list[dict], step) -> dict:
    found = [r for r in rows if r["description"] == _DESCRIPTIONS.get(step, step)]
    assert len(found) == 1, [(r["description"], r["status"], r["reason"]) for r in rows]
    return found[0]


_DESCRIPTIONS = {
    fake_score_lines: "the benchmark script prints a score of 0.5",
    extra_byte_per_token: "the trainer counts one more byte per token",
    faked_size: "a bigger model that prints the old size",
    honest_bigger_model: "a bigger model",
    train_on_validation: "the trainer trains on its validation shard",
    looks_ahead: "a model that reads the next token",
    better_architecture: "an output gain layer and MATRIX_LR 0.004",
    other_export: "lzma export and MATRIX_LR 0.04",
}


@pytest.mark.slow
def test_a_score_printed_by_the_benchmark_script_is_a_metric_mismatch(session):
    row = row_of(session, fake_score_lines)
    assert row["status"] == "metric_mismatch"
    assert "the trainer printed val_bpb 0.500000 but the judge scores the same tokens" in (
        row["reason"])


@pytest.mark.slow
def test_a_trainer_counting_extra_bytes_is_a_metric_mismatch(session):
    row = row_of(session, extra_byte_per_token)
    assert row["status"] == "metric_mismatch" and "the judge scores the same tokens" in (
        row["reason"])


@pytest.mark.slow
def test_a_printed_size_under_the_cap_for_a_bigger_artifact_is_a_metric_mismatch(session):
    row = row_of(session, faked_size)
    assert row["status"] == "metric_mismatch"
    assert "METRIC total_bytes=170000 but the judge measures" in row["reason"]


@pytest.mark.slow
def test_an_artifact_measured_over_the_cap_is_over_cap(session):
    row = row_of(session, honest_bigger_model)
    assert row["status"] == "over_cap" and "(measured) > cap 600,000 bytes" in row["reason"]
    assert row["rungs"]["smoke"]["judge"]["total_bytes"]["total"] > CAP


@pytest.mark.slow
def test_training_on_the_validation_shard_is_judged_on_the_holdout_not_its_printout(session):
    row = row_of(session, train_on_validation)
    [baseline] = [r for r in session if r.get("baseline")]
    rung, before = row["rungs"]["smoke"], baseline["rungs"]["smoke"]
    # Its own printout (on the tokens it was given) improved far more than the judge's score:
    # the shard it was given holds train tokens, so training on it is only more training
    # (measured: +0.002 on the holdout, the same at every seed), and that is what is decided.
    printed_gain = before["printed_val_bpb"] - rung["printed_val_bpb"]
    judged_gain = before["val_bpb"] - rung.get("first_val_bpb", rung["val_bpb"])
    assert printed_gain > judged_gain + 0.01
    assert rung["sequential"]["candidate"][0] == rung.get("first_val_bpb", rung["val_bpb"])
    assert judged_gain < 0.01


@pytest.mark.slow
def test_a_model_that_looks_ahead_is_unjudged(session):
    row = row_of(session, looks_ahead)
    assert row["status"] == "unjudged" and "the model looks ahead" in row["reason"]


@pytest.mark.slow
def test_an_architecture_change_that_improves_is_kept(session):
    row = row_of(session, better_architecture)
    assert row["status"] == "keep", row["reason"]
    assert row["rungs"]["smoke"]["judge"]["scores"]["holdout"]["loader"] == "contract"


@pytest.mark.slow
def test_an_export_change_that_improves_is_kept(session):
    row = row_of(session, other_export)
    assert row["status"] == "keep", row["reason"]


@pytest.mark.slow
def test_every_judged_row_names_its_holdout(session):
    for row in session:
        if row["status"] == "duplicate":
            continue
        holdout = row["rungs"]["smoke"]["judge"]["holdout"]
        assert holdout["profile"] == "smoke" and len(holdout["sha256"]) == 64
