"""The record techniques: the backlog's ideas with a `source:` line, each a set of switches of
benchmark/train_gpt_mlx.py (README: "Record techniques"). Each applies to the current trainer
through the `ideas` proposer, trains and exports at smoke and is judged as the loop judges;
two applied one after the other compose; a technique that breaks the export is `unjudged`
with a reason, and the daemon goes on."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_e2e_real import SHORT_SMOKE, committed_copy, git
from test_own_trainer import judged_smoke

from loop.backlog.ideas import IdeasFile
from loop.config import load_config
from loop.platform import blas_env
from loop.proposers.ideas import IdeasProposer
from loop.store.ledger import Ledger

REPO = Path(__file__).resolve().parents[1]
TRAINER = Path("benchmark/train_gpt_mlx.py")
SCRIPT = Path("autoresearch.sh")
IDEAS = "autoresearch.ideas.md"
TECHNIQUES = [i for i in IdeasFile.load(REPO / IDEAS).ideas if i.source]
AGREE = 2e-4  # autogolf.yaml's judge.claim_tolerance
JUDGED = {"keep", "discard", "inconclusive", "pruned"}  # a decision on the merits


def trainer_module():
    spec = importlib.util.spec_from_file_location("train_gpt_mlx_techniques", REPO / TRAINER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def knob_block(text: str) -> dict[str, str]:
    block = text.split("# autogolf:knobs:start\n", 1)[1].split("# autogolf:knobs:end", 1)[0]
    return dict(re.findall(r"^([A-Z_0-9]+)=(\S+)$", block, flags=re.M))


def backlog_of(tree: Path, *ideas_text: str) -> Path:
    path = tree / IDEAS
    path.write_text("# Ideas backlog\n\n" + "\n".join(ideas_text) + "\n")
    return path


def apply_idea(tree: Path, idea) -> str:
    """Apply one idea with the `ideas` proposer (knobs undeclared: found in autoresearch.sh);
    the proposal's description."""
    text = f"- [{idea.id}] (untried) {idea.text}\n  knobs: " + " ".join(
        f"{k}={v}" for k, v in idea.knobs.items())
    folder = tree / ".autogolf" / "test-ideas"  # outside the measured files
    folder.mkdir(parents=True, exist_ok=True)
    declared = load_config(REPO / "autogolf.yaml").knobs
    proposer = IdeasProposer(backlog_of(folder, text), declared)
    proposal = proposer.propose(tree, [])
    assert proposal is not None, proposer.skipped_ideas()
    return proposal.description


# ------------------------------------------------------------------------ the backlog


def test_the_backlog_holds_at_least_twelve_record_techniques_each_with_source_and_score():
    assert len(TECHNIQUES) >= 12
    for idea in TECHNIQUES:
        assert idea.knobs, idea.id
        assert re.search(r"(20\d\d-\d\d-\d\d_\S+|PR #\d+) \(val_bpb \d\.\d{4}", idea.source), \
            idea.source


def test_every_switch_is_off_in_the_knob_block_so_the_default_trainer_is_the_baseline():
    knobs = knob_block((REPO / SCRIPT).read_text())
    off = trainer_module().TECHNIQUE_OFF
    assert {name: float(knobs[name]) for name in off} == {k: float(v) for k, v in off.items()}


def test_every_switch_reaches_the_trainer_from_autoresearch_sh():
    text = (REPO / SCRIPT).read_text()
    exported = set(text.split("TRAINER_SETTINGS=(", 1)[1].split(")", 1)[0].split())
    assert set(trainer_module().TECHNIQUE_OFF) <= exported


def test_the_switches_reach_the_model_server_among_the_runs_settings():
    from loop.judge.loader import settings_env

    switched = {name: "1" if off == 0 else "6" for name, off in
                trainer_module().TECHNIQUE_OFF.items()}
    assert settings_env(switched) == switched


@pytest.mark.parametrize("idea", TECHNIQUES, ids=[i.id for i in TECHNIQUES])
def test_a_technique_applies_to_the_current_trainer_as_knob_lines(tmp_path, idea):
    for rel in (SCRIPT, TRAINER):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    apply_idea(tmp_path, idea)
    knobs = knob_block((tmp_path / SCRIPT).read_text())
    assert {k: float(knobs[k]) for k in idea.knobs} == {k: float(v) for k, v in
                                                          idea.knobs.items()}
    assert (tmp_path / TRAINER).read_text() == (REPO / TRAINER).read_text()


def test_the_ideas_review_and_the_agents_prompt_show_a_techniques_source_and_evidence():
    from loop.proposers.agentprompt import idea_section
    from loop.ui.ideas_cli import format_idea

    backlog = IdeasFile(Path("ideas.md"), "- [I001] (untried) SmearGate.\n  knobs: SMEAR_GATE=1\n"
                        "  source: 2026-03-19_smeargate_orthoinit_muonwd (val_bpb 1.1556)\n"
                        "  evidence: E0004 smoke delta=-0.0031 keep\n")
    idea = backlog.get("I001")
    for shown in (format_idea(idea), idea_section(idea, set())):
        assert "2026-03-19_smeargate_orthoinit_muonwd (val_bpb 1.1556)" in shown
        assert "E0004 smoke delta=-0.0031 keep" in shown


# ------------------------------------------------------------------------ the export


def tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"tok_emb": rng.normal(size=(1024, 96)).astype(np.float32),
            "blocks.0.mlp.fc.weight": rng.normal(size=(768, 96)).astype(np.float32),
            "blocks.0.attn_scale": np.ones(96, dtype=np.float32)}


def test_an_lzma_artifact_reads_back_like_a_zlib_one(tmp_path, monkeypatch):
    tg = trainer_module()
    params = tensors(np.random.default_rng(0))
    read = {}
    for codec in ("0", "1"):
        monkeypatch.setenv("EXPORT_LZMA", codec)
        args = tg.Hyperparameters()
        obj, _ = tg.quantize_state(params, tg.model_config(args), args)
        path = tmp_path / f"model-{codec}.ptz"
        path.write_bytes(tg.compress(tg.pickle.dumps(obj), args))
        read[codec] = tg.dequantize_state(tg.read_export(str(path)))
    assert (tmp_path / "model-1.ptz").read_bytes().startswith(tg.LZMA_MAGIC)
    for name in params:
        assert np.array_equal(read["0"][name], read["1"][name])


def test_int6_block_matrices_use_63_levels_and_the_embedding_keeps_255(monkeypatch):
    tg = trainer_module()
    monkeypatch.setenv("BLOCK_QUANT_BITS", "6")
    obj, _ = tg.quantize_state(tensors(np.random.default_rng(1)), None, tg.Hyperparameters())
    assert np.abs(obj["quantized"]["blocks.0.mlp.fc.weight"]).max() == 31
    assert np.abs(obj["quantized"]["tok_emb"]).max() == 127


def test_the_clip_search_rounds_no_row_worse_than_the_fixed_percentile():
    tg = trainer_module()
    w = np.random.default_rng(2).standard_t(3, size=(64, 512)).astype(np.float32)

    def row_error(search: bool) -> np.ndarray:
        q, scale = tg.quantize_rows(w, 31, search)
        back = q * scale.astype(np.float16).astype(np.float32)[:, None]
        return ((back - w) ** 2).sum(axis=1)

    fixed, searched = row_error(False), row_error(True)
    assert (searched <= fixed * (1 + 1e-3)).all() and searched.sum() < fixed.sum()


def test_the_fp16_embedding_switch_exports_the_embedding_unquantised(monkeypatch):
    tg = trainer_module()
    monkeypatch.setenv("EMBED_FP16", "1")
    obj, _ = tg.quantize_state(tensors(np.random.default_rng(3)), None, tg.Hyperparameters())
    assert obj["passthrough"]["tok_emb"].dtype == np.float16
    assert "tok_emb" not in obj["quantized"]


# ------------------------------------------------------------------------ trained and judged


@pytest.fixture(scope="module")
def tree(tmp_path_factory, repo_root: Path, sample_dataset) -> Path:
    return committed_copy(repo_root, tmp_path_factory.mktemp("techniques") / "repo")


def assert_judged_and_agreeing(run, measured) -> None:
    assert run.exit_code == 0, run.log_path.read_text()[-3000:]
    assert measured.verdict is None, measured.verdict.reason  # nothing failed: it is judged
    claim = measured.rung["judge"]["scores"]["claim"]
    assert claim["loader"] == "contract"
    assert claim["val_bpb"] == pytest.approx(run.log.exact_val_bpb, abs=AGREE)
    assert measured.val_bpb == measured.rung["judge"]["scores"]["holdout"]["val_bpb"]


# One judged smoke run per group, each idea applied on top of the previous one's keep: every
# technique trains, exports and is judged, and they compose (a run per idea cost a minute
# more of the suite; bench/techniques.py runs each alone). At smoke's 30 steps, not fewer: a
# shorter run shortens the warmdown with it, and SWA_START_LR's averaging is then never reached.
EXPORT = {"EMBED_FP16", "BLOCK_QUANT_BITS", "CLIP_SEARCH", "EXPORT_LZMA"}
OPTIMIZER = {"MUON_WD", "SWA_START_LR", "LR_FLOOR"}
DEPTH = {"ORTHO_INIT", "QK_GAIN_INIT", "RECUR_LAYERS", "PARALLEL_RESID"}


def group_of(idea) -> str:
    knobs = set(idea.knobs)
    for name, members in (("export", EXPORT), ("optimizer", OPTIMIZER), ("depth", DEPTH)):
        if knobs & members:
            return name
    return "model"


GROUPS = {g: [i for i in TECHNIQUES if group_of(i) == g]
          for g in ("export", "optimizer", "depth", "model")}


def test_every_technique_is_in_a_judged_group():
    assert sorted(i.id for g in GROUPS.values() for i in g) == sorted(i.id for i in TECHNIQUES)
    assert all(len(g) >= 2 for g in GROUPS.values())  # each group also composes


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS, ids=list(GROUPS))
def test_each_technique_applied_on_top_of_the_others_trains_exports_and_is_judged_at_smoke(
        tree, sample_dataset, group):
    ideas = GROUPS[group]
    git(tree, "checkout", "-q", "--", ".")
    start = git(tree, "rev-parse", "HEAD").strip()
    try:
        for idea in ideas:
            apply_idea(tree, idea)
            git(tree, "commit", "-q", "-am", f"keep {idea.id}")  # what a keep does
        knobs = knob_block((tree / SCRIPT).read_text())
        wanted = {k: v for i in ideas for k, v in i.knobs.items()}
        assert {k: float(knobs[k]) for k in wanted} == {k: float(v) for k, v in wanted.items()}
        run, measured = judged_smoke(tree, group, sample_dataset)
        assert_judged_and_agreeing(run, measured)
        switched = sorted(set(wanted) & set(trainer_module().TECHNIQUE_OFF))
        line = next(ln for ln in run.log_path.read_text().splitlines() if "techniques:" in ln)
        shown = dict(w.split("=") for w in line.split("techniques: ", 1)[1].split())
        assert {k: float(v) for k, v in shown.items()} == {k: float(wanted[k]) for k in switched}
        if "SWA_START_LR" in wanted:  # its averaging really ran (the warmdown reaches it)
            assert "swa: mean of the last" in run.log_path.read_text()
    finally:
        git(tree, "checkout", "-q", "--", ".")
        git(tree, "reset", "-q", "--hard", start)


# ------------------------------------------------------------------------ through the daemon

# Overwrites the artifact, after the trainer's own roundtrip, with as many zero bytes: the
# printed size still holds, and the model is gone.
CORRUPT_FROM = '    log(f"Total submission size int8+zlib: {size + code_bytes} bytes")\n'
CORRUPT_TO = CORRUPT_FROM + ("    with open(artifact, \"r+b\") as f:\n"
                             "        f.write(bytes(size))\n")


@pytest.mark.slow
def test_the_ideas_proposer_runs_a_technique_and_a_broken_export_through_the_daemon(
        tmp_path, repo_root, sample_dataset):
    clone = committed_copy(repo_root, tmp_path / "clone", ladder=["smoke"],
                           smoke_iterations=SHORT_SMOKE,
                           keep_rule={"max_runs": 2}, proposer={"name": "ideas", "seed": 0})
    trainer = (clone / TRAINER).read_text()
    assert trainer.count(CORRUPT_FROM) == 1
    (clone / TRAINER).write_text(trainer.replace(CORRUPT_FROM, CORRUPT_TO))
    patch = git(clone, "diff", "--", str(TRAINER))
    git(clone, "checkout", "-q", "--", str(TRAINER))
    (clone / "patches").mkdir()
    (clone / "patches" / "corrupt_export.patch").write_text(patch.rstrip("\n") + "\n")
    smear = next(i for i in TECHNIQUES if "SMEAR_GATE" in i.knobs)
    backlog_of(clone, f"- [I001] (untried) {smear.text}\n  knobs: SMEAR_GATE=1\n"
                      f"  source: {smear.source}",
               "- [I002] (untried) An export that zeroes the artifact after its roundtrip.\n"
               "  patch: patches/corrupt_export.patch")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "two ideas")
    env = {**os.environ, **blas_env(),
           "AUTOGOLF_CACHE_ROOT": str(Path(sample_dataset.data_path).parents[2])}

    done = subprocess.run([sys.executable, "-m", "loop.ui.cli", "run", "--max-experiments", "2"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=1500)

    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    rows = [r for r in Ledger(clone / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment" and not r.get("baseline")]
    by_idea = {r.get("idea"): r for r in rows}
    assert set(by_idea) == {"I001", "I002"}, done.stdout[-4000:]
    assert by_idea["I001"]["status"] in JUDGED, by_idea["I001"]
    broken = by_idea["I002"]
    assert broken["status"] == "unjudged", broken
    assert "loading model.ptz with train_gpt_mlx.py failed" in broken["reason"], broken["reason"]
