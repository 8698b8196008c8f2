"""Your own trainer, judged (issue 25): an upstream-shaped trainer and a researcher's edits of
it run through the real benchmark and the judge with no adapter written by hand.

The trainer here is tests/fixtures/upstream_shaped/train_gpt_mlx.py, a stand-in with
upstream's public interface (upstream's code is never copied into this repository): env-var
hyperparameters, a `GPT` whose call returns hidden states, a loss with the tied head and the
softcap, the int8+zlib export under OUT_DIR, no `load_for_eval`, and AUTOGOLF_ARTIFACT_PATH
ignored. Each benchmark is `PROFILE=smoke bash autoresearch.sh` through the loop's pipeline,
judged by the loop's ArtifactJudge, in a committed copy of this project.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_e2e_real import SHORT_SMOKE, committed_copy, git

from loop.config import load_config
from loop.data import datasets, sample_data, tokenbytes
from loop.judge import artifact, loader, score
from loop.judge.artifact_judge import ArtifactJudge, claim_disagreement
from loop.judge.validity import Measurement, assess
from loop.measure import logparse, seal
from loop.measure.pipeline import ARTIFACT_NAME, Pipeline, Run
from loop.proposers import Proposal

TRAINER = Path("benchmark/train_gpt_mlx.py")
STAND_IN = Path(__file__).resolve().parent / "fixtures" / "upstream_shaped" / "train_gpt_mlx.py"
AGREE = 2e-4  # autogolf.yaml's judge.claim_tolerance


def stand_in(*edits: tuple[str, str]) -> str:
    """The stand-in's source with each (old, new) edit made once."""
    text = STAND_IN.read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"the stand-in no longer has {old!r}"
        text = text.replace(old, new)
    return text


# Edits researchers make to upstream's trainer.
GELU = ("        h = nn.relu(self.fc(x))\n        return self.proj(h * h)",
        "        return self.proj(nn.gelu(self.fc(x)))")
OUT_GAIN = [("        self.blocks = [Block(dim,", "        self.out_gain = mx.ones((dim,))\n"
             "        self.blocks = [Block(dim,"),
            ("        return rms_norm(x)\n\n    def loss",
             "        return rms_norm(x) * self.out_gain.astype(x.dtype)\n\n    def loss")]
SIX_BIT = ("QUANT_LEVELS = 127", "QUANT_LEVELS = 31")
# A loss that does not make logits the way upstream's does: the built-in loader cannot know.
HALF_TEMPERATURE = ("        return nn.losses.cross_entropy(logits.astype(mx.float32),",
                    "        return nn.losses.cross_entropy(logits.astype(mx.float32) * 0.5,")
RENAMED_MODEL = ("class GPT(nn.Module):", "class TinyLM(nn.Module):")
EXPORT = "    quant_path.write_bytes(zlib.compress(raw, level=9))\n"
READ_BACK = "pickle.loads(zlib.decompress(quant_path.read_bytes()))"


@dataclass
class Judged:
    measured: Measurement
    log: logparse.TrainerLog
    asked: Path
    upstream: Path

    @property
    def status(self) -> str | None:
        return None if self.measured.verdict is None else self.measured.verdict.status

    @property
    def reason(self) -> str:
        return "" if self.measured.verdict is None else self.measured.verdict.reason

    def score(self, name: str) -> dict:
        return self.measured.rung["judge"]["scores"][name]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, repo_root: Path, sample_dataset) -> Path:
    return committed_copy(repo_root, tmp_path_factory.mktemp("own") / "repo")


def judged_smoke(tree: Path, run_id: str, dataset: datasets.DatasetInfo,
                 iterations: int | None = None) -> tuple[Run, Measurement]:
    """One smoke benchmark of the tree as it is, judged as the loop judges it (sealed);
    `iterations` replaces smoke's 30 steps (the way the judge re-measures an incumbent)."""
    cfg = load_config(tree / "autogolf.yaml")
    scorer = ArtifactJudge(cfg, tree, tree, dataset)
    env = scorer.trainer_env("smoke")
    scorer.seal = seal.for_checkout(cfg.judge_sealed, tree, dataset.data_path, worktree=tree,
                                    data=[Path(v) for v in env.values()],
                                    trainer=tree / TRAINER)
    if iterations is not None:  # after the seal, which reads env's values as data paths
        env["AUTOGOLF_PROTOCOL_OVERRIDES"] = f"ITERATIONS={iterations}"
    cache = datasets.cache_root(Path(dataset.data_path))
    run = Pipeline(cfg, cache, dataset, "test", seal=scorer.seal).benchmark(
        tree, "smoke", run_id, tree / ".autogolf" / f"{run_id}.log", env)
    measured = scorer.judge(assess(run, cfg.artifact_cap_bytes), run, "smoke",
                            f"{run_id}-smoke")
    return run, measured


def bench(tree: Path, trainer: str, run_id: str, dataset: datasets.DatasetInfo) -> Judged:
    """One smoke benchmark of `trainer` in `tree`, judged as the loop judges it, in 8 of
    smoke's 30 steps: whether the judge loads a model as its trainer does needs no trained one."""
    (tree / TRAINER).write_text(trainer)
    run, measured = judged_smoke(tree, run_id, dataset, SHORT_SMOKE)
    upstream = artifact.upstream_path(run.logs_dir, f"{run_id}-smoke")
    return Judged(measured, run.log, run.outputs / ARTIFACT_NAME, upstream)


def agrees(judged: Judged) -> None:
    assert judged.status is None, judged.reason
    claim = judged.score("claim")
    assert claim["loader"] == "builtin"
    assert claim["val_bpb"] == pytest.approx(judged.log.exact_val_bpb, abs=AGREE)


# ------------------------------------------------------------------------ judged as it is


@pytest.fixture(scope="module")
def baseline(tree, sample_dataset) -> Judged:
    return bench(tree, stand_in(), "base", sample_dataset)


@pytest.mark.slow
def test_an_upstream_shaped_trainer_is_judged_by_the_builtin_loader(baseline):
    agrees(baseline)
    assert baseline.measured.val_bpb == baseline.score("holdout")["val_bpb"]


@pytest.mark.slow
def test_the_judge_finds_upstreams_export_under_out_dir(baseline):
    assert "upstream's export under OUT_DIR" in baseline.measured.rung["judge"]["artifact"]
    assert not baseline.upstream.exists()  # read, then deleted: it is tens of MB at full size


@pytest.mark.slow
def test_the_builtin_loader_is_given_the_settings_the_benchmark_printed(baseline):
    settings = baseline.measured.rung["judge"]["settings"]
    assert settings["MODEL_DIM"] == "64" and settings["VOCAB_SIZE"] == "1024"
    assert settings["ITERATIONS"] == str(SHORT_SMOKE)


# ------------------------------------------------------------------------ researchers' edits


@pytest.mark.slow
@pytest.mark.parametrize("edits", [[GELU], OUT_GAIN, [SIX_BIT]],
                         ids=["another activation", "an added parameter tensor",
                              "6-bit quantization"])
def test_an_edit_of_the_trainer_is_judged_and_agrees_with_its_own_score(tree, sample_dataset,
                                                                        edits):
    agrees(bench(tree, stand_in(*edits), "edit", sample_dataset))


@pytest.mark.slow
def test_a_loss_the_loader_does_not_reproduce_is_unjudged_with_both_numbers(tree,
                                                                            sample_dataset):
    judged = bench(tree, stand_in(HALF_TEMPERATURE), "temperature", sample_dataset)
    assert judged.status == "unjudged"
    assert "the built-in loader did not load the model as the trainer does" in judged.reason
    assert f"the trainer printed val_bpb {judged.log.exact_val_bpb:.6f}" in judged.reason
    assert "load_for_eval" in judged.reason


@pytest.mark.slow
def test_a_trainer_the_loader_cannot_read_is_unjudged_with_what_was_missing(tree,
                                                                          sample_dataset):
    judged = bench(tree, stand_in(RENAMED_MODEL, ("    model = GPT(", "    model = TinyLM(")),
                   "renamed", sample_dataset)
    assert judged.status == "unjudged"
    assert "has no model class (GPT)" in judged.reason and "load_for_eval" in judged.reason


# ------------------------------------------------------------------------ where the file is


@pytest.mark.slow
def test_a_trainer_that_writes_no_artifact_is_unjudged_naming_both_paths(tree, sample_dataset):
    last = '    log(f"final_int8_zlib_roundtrip_exact val_loss:{q_loss:.8f} val_bpb:{q_bpb:.8f}")\n'
    judged = bench(tree, stand_in((last, last + "    quant_path.unlink()\n")), "deleted",
                   sample_dataset)
    assert judged.status == "unjudged"
    assert str(judged.asked) in judged.reason and str(judged.upstream) in judged.reason
    assert "Fix: write the int8 export to $AUTOGOLF_ARTIFACT_PATH" in judged.reason


@pytest.mark.slow
def test_a_trainer_that_writes_it_elsewhere_is_unjudged_naming_the_file_it_wrote(
        tree, sample_dataset):
    named = '    quant_path = out_dir / f"{args.run_id}_mlx_model.int8.ptz"'
    judged = bench(tree, stand_in((named, '    quant_path = out_dir / "model.int8.ptz"')),
                   "elsewhere", sample_dataset)
    assert judged.status == "unjudged"
    assert "model files it did write, which the judge does not score" in judged.reason
    assert "model.int8.ptz" in judged.reason


@pytest.mark.slow
def test_an_export_in_a_format_the_loader_cannot_read_is_unjudged_naming_the_file(
        tree, sample_dataset):
    judged = bench(tree, stand_in(
        (EXPORT, "    quant_path.write_bytes(__import__('bz2').compress(raw))\n"),
        (READ_BACK, "pickle.loads(__import__('bz2').decompress(quant_path.read_bytes()))")),
        "bz2", sample_dataset)
    assert judged.status == "unjudged"
    assert "bz2-smoke_mlx_model.int8.ptz is neither zlib- nor lzma-compressed" in judged.reason
    assert "load_for_eval" in judged.reason


# ------------------------------------------------------------------------ other vocabularies


@pytest.fixture(scope="module")
def sample_4096(tmp_path_factory) -> datasets.DatasetInfo:
    """The offline sample at vocabulary 4096, from a slice of the standard library (seconds)."""
    root = tmp_path_factory.mktemp("cache4096")
    sample_data.build_sample(root, sample_data.BuildOptions(
        vocab_size=4096, max_source_chars=1_500_000, min_train_tokens=100_000,
        min_val_tokens=40_000, val_tokens=40_000))
    return datasets.resolve("sample_sp4096", root)


@pytest.mark.slow
def test_the_sample_at_vocabulary_4096_is_judged_end_to_end(tree, sample_4096):
    judged = bench(tree, stand_in(), "v4096", sample_4096)
    agrees(judged)
    assert judged.measured.rung["judge"]["settings"]["VOCAB_SIZE"] == "4096"
    assert judged.measured.rung["judge"]["holdout"]["dataset"].startswith("sample_sp4096:")


def test_rows_of_two_vocabularies_name_two_datasets(sample_dataset, sample_4096):
    assert datasets.dataset_id(sample_dataset) != datasets.dataset_id(sample_4096)
    assert datasets.dataset_id(sample_4096).startswith("sample_sp4096:")


# ------------------------------------------------------------------------ pure parts


def test_the_artifact_the_daemon_asked_for_comes_first(tmp_path):
    asked, outputs = tmp_path / "asked.ptz", tmp_path / "logs"
    asked.write_bytes(b"x")
    artifact.upstream_path(outputs, "E1-smoke").parent.mkdir(parents=True)
    artifact.upstream_path(outputs, "E1-smoke").write_bytes(b"y")
    assert artifact.find_artifact(asked, outputs, "E1-smoke")[0] == asked


def test_upstreams_export_is_found_under_the_runs_outputs(tmp_path):
    outputs = tmp_path / "logs"
    path = outputs / "autoresearch" / "E1-r2-smoke_mlx_model.int8.ptz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"y")
    assert artifact.find_artifact(tmp_path / "asked.ptz", outputs, "E1-r2-smoke")[0] == path


def test_another_runs_export_is_not_this_runs_artifact(tmp_path):
    outputs = tmp_path / "logs"
    other = artifact.upstream_path(outputs, "E1-smoke")
    other.parent.mkdir(parents=True)
    other.write_bytes(b"y")
    found, why = artifact.find_artifact(tmp_path / "asked.ptz", outputs, "E2-smoke")
    assert found is None and str(other) in why


def test_only_numeric_settings_reach_the_model_server():
    given = {"MODEL_DIM": "64", "LOGIT_SOFTCAP": "30", "MATRIX_LR": "4e-2", "RUN_ID": "E1-smoke",
             "PYTHONHASHSEED": "0", "LD_BIND_NOW": "1", "MLX_EAGER_EVAL": "1",
             "AUTOGOLF_JUDGE_SEED": "7", "PAYLOAD": "1" * 40, "PATH": "1"}
    assert loader.settings_env(given) == {"MODEL_DIM": "64", "LOGIT_SOFTCAP": "30",
                                          "MATRIX_LR": "4e-2"}


def test_the_settings_line_of_autoresearch_sh_is_read_as_run_settings():
    log = logparse.parse_trainer_log("autoresearch: profile=smoke run_id=E1-smoke log=x\n"
                                     "autoresearch: ITERATIONS=30 MODEL_DIM=64 VOCAB_SIZE=4096 \n")
    assert log.run_settings == {"ITERATIONS": "30", "MODEL_DIM": "64", "VOCAB_SIZE": "4096"}


def _claim(loader_name: str, bpb: float) -> score.Score:
    return score.Score("scored", "", 1.0, bpb, 10, 10, loader_name)


def test_a_disagreement_under_the_builtin_loader_is_the_judge_failing_to_load():
    status, reason = claim_disagreement(1.5, _claim("builtin", 1.6), 2e-4)
    assert status == "unjudged"
    assert "printed val_bpb 1.500000" in reason and "at 1.600000" in reason


def test_a_disagreement_under_the_trainers_contract_is_a_metric_mismatch():
    status, _ = claim_disagreement(1.5, _claim("contract", 1.6), 2e-4)
    assert status == "metric_mismatch"


def test_agreement_within_the_tolerance_is_no_disagreement():
    assert claim_disagreement(1.5, _claim("builtin", 1.5001), 2e-4) is None


def test_byte260_counts_one_byte_per_byte_token_and_none_for_specials(tmp_path):
    path = tmp_path / "fineweb_pure_byte_260.json"
    path.write_text('{"tokenizer_type": "pure_byte", "vocab_size": 260, "config": '
                    '{"byte_offset": 4, "byte_count": 256, "bos_id": 1}}')
    tables = tokenbytes.build_byte_tables(path, 260)
    ids = np.array([1, *(np.frombuffer("héllo wörld".encode(), np.uint8) + 4)])
    assert tokenbytes.count_document_bytes(ids, tables) == len("héllo wörld".encode())
    assert tokenbytes.vocab_size_of(path) == 260


def test_a_server_environment_never_carries_a_setting_over_a_daemon_key():
    env = score.server_env({"PATH": "/bin", "HOME": "/h"}) | loader.settings_env(
        {"PATH": "1", "HOME": "2"})
    assert env["PATH"] == "/bin" and env["HOME"] == "/h"



# ------------------------------------------------------------------------ autogolf adopt


@pytest.fixture
def checkout(tmp_path, repo_root: Path, sample_dataset, monkeypatch) -> Path:
    """A researcher's checkout of this project (the sample data from this repo's cache)."""
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(repo_root))
    return committed_copy(repo_root, tmp_path / "checkout", smoke_iterations=SHORT_SMOKE)


def adopt_file(checkout: Path, tmp_path: Path, text: str, yes: bool = False
               ) -> tuple[int, str]:
    from loop.ui import adopt

    path = tmp_path / "my_trainer.py"
    path.write_text(text)
    said: list[str] = []
    code = adopt.adopt(checkout, load_config(checkout / "autogolf.yaml"), path, yes=yes,
                       out=said.append)
    return code, "\n".join(said)


@pytest.mark.slow
def test_adopt_installs_an_upstream_shaped_trainer_and_says_what_it_checked(checkout,
                                                                           tmp_path):
    code, said = adopt_file(checkout, tmp_path, stand_in())
    assert code == 0, said
    assert (checkout / TRAINER).read_text() == stand_in()
    for finding in ("METRIC lines found: ", "val_bpb", "artifact: upstream's export under "
                    "OUT_DIR", "agrees within", "causality probe: passed", "seed: passed",
                    "time per step: ", "not committed"):
        assert finding in said


@pytest.mark.slow
def test_adopt_writes_a_load_for_eval_where_the_builtin_loader_cannot_serve(checkout,
                                                                           tmp_path):
    renamed = stand_in(RENAMED_MODEL, ("    model = GPT(", "    model = TinyLM("))
    code, said = adopt_file(checkout, tmp_path, renamed)
    assert code == 1 and "+def load_for_eval(artifact_path):" in said
    assert "+    model = TinyLM(vocab_size=args.vocab_size" in said
    assert (checkout / TRAINER).read_text() != renamed  # shown, not written, without --yes
    code, said = adopt_file(checkout, tmp_path, renamed, yes=True)
    assert code == 0, said
    installed = (checkout / TRAINER).read_text()
    assert installed.startswith(renamed.rstrip("\n")) and "def load_for_eval(" in installed


@pytest.mark.slow
def test_adopt_installs_nothing_when_even_a_written_load_for_eval_disagrees(checkout,
                                                                           tmp_path):
    before = (checkout / TRAINER).read_text()
    code, said = adopt_file(checkout, tmp_path, stand_in(HALF_TEMPERATURE), yes=True)
    assert code == 1 and "still not judged" in said and "nothing installed" in said
    assert (checkout / TRAINER).read_text() == before


@pytest.mark.parametrize("text,missing", [
    ("print('hello')\n", "no Hyperparameters class"),
    ("class Hyperparameters:\n    pass\n", "no `if __name__"),
    ("def broken(:\n", "not Python source"),
])
def test_adopt_refuses_a_file_that_is_not_a_trainer_and_installs_nothing(checkout, tmp_path,
                                                                         text, missing):
    from loop.errors import UserError

    before = (checkout / TRAINER).read_text()
    with pytest.raises(UserError, match="is not a trainer") as caught:
        adopt_file(checkout, tmp_path, text)
    assert missing in str(caught.value) and "nothing installed" in str(caught.value)
    assert (checkout / TRAINER).read_text() == before


# ------------------------------------------------------------------------ the loop


def _edit_step(description: str, *edits: tuple[str, str]):
    def step(worktree: Path) -> Proposal:
        (worktree / TRAINER).write_text(stand_in(*edits))
        return Proposal(description, None)
    return step


@pytest.fixture(scope="module")
def loop_rows(tmp_path_factory, repo_root: Path, sample_dataset) -> list[dict]:
    """`autogolf run` at smoke with the stand-in as the trainer: a baseline, one edit (the
    other edits are judged one run each above; a decision costs up to 3 runs here)."""
    from scheduler_helpers import Scripted

    from loop.daemon import scheduler
    from loop.store.ledger import Ledger

    repo = committed_copy(repo_root, tmp_path_factory.mktemp("loop") / "repo", ladder=["smoke"],
                          smoke_iterations=SHORT_SMOKE,
                          keep_rule={"max_runs": 2})
    (repo / TRAINER).write_text(stand_in())
    git(repo, "commit", "-q", "-am", "upstream-shaped trainer")
    steps = (_edit_step("an output gain", *OUT_GAIN),)
    old = os.environ.get("AUTOGOLF_CACHE_ROOT")
    os.environ["AUTOGOLF_CACHE_ROOT"] = str(repo_root)
    try:
        scheduler.Scheduler(repo, load_config(repo / "autogolf.yaml"),
                            scheduler.StopRules(max_experiments=1, max_consecutive_failures=0),
                            proposer=Scripted(*steps), out=lambda s: None).run()
    finally:
        if old is None:
            os.environ.pop("AUTOGOLF_CACHE_ROOT", None)
        else:
            os.environ["AUTOGOLF_CACHE_ROOT"] = old
    return [r for r in Ledger(repo / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment"]


@pytest.mark.slow
def test_the_loop_judges_an_upstream_shaped_baseline_and_its_experiments(loop_rows):
    assert [r["description"] for r in loop_rows if not r.get("baseline")] == ["an output gain"]
    for row in loop_rows:
        assert row["status"] in ("keep", "discard", "inconclusive"), (row["status"],
                                                                       row["reason"])
        scores = row["rungs"]["smoke"]["judge"]["scores"]
        assert scores["holdout"]["loader"] == "builtin"
    assert [r["status"] for r in loop_rows if r.get("baseline")] == ["keep"]


# ------------------------------------------------------------------------ autogolf bench


def test_bench_shows_the_judges_score_beside_the_printout_each_with_its_tokens():
    from loop.ui.bench import judge_lines

    rung = {"val_bpb": 1.9, "printed_val_bpb": 1.7, "judge": {
        "holdout": {"trainer_slice": [0, 16385]},
        "scores": {"holdout": {"val_bpb": 1.9, "tokens": 16256, "loader": "builtin"},
                   "claim": {"val_bpb": 1.70001, "tokens": 16384}}}}
    lines = judge_lines(rung)
    assert lines[0].startswith("judge's val_bpb   1.900000  on 16,256 held-out tokens of the "
                               "validation split")
    assert lines[1].startswith("trainer's val_bpb 1.700000  printed by the trainer on its own "
                               "'validation' slice: the first 16,385 train tokens")
    assert "the judge on those same tokens: 1.700010" in lines[2]


def test_bench_says_the_judges_score_is_unknown_when_not_judged():
    from loop.ui.bench import judge_lines

    lines = judge_lines({"printed_val_bpb": 1.7, "judge": {"holdout": {}}})
    assert lines[0] == "judge's val_bpb   unknown (not judged: see the reason above)"


@pytest.mark.slow
def test_a_manual_bench_of_an_upstream_shaped_trainer_is_judged(checkout):
    from loop.ui.bench import manual_bench

    (checkout / TRAINER).write_text(stand_in())
    row = manual_bench(checkout, load_config(checkout / "autogolf.yaml"), "smoke",
                       out=lambda s: None)
    rung = row["rungs"]["smoke"]
    assert row["status"] == "keep", row["reason"]
    assert rung["val_bpb"] == rung["judge"]["scores"]["holdout"]["val_bpb"]
    assert rung["printed_val_bpb"] == pytest.approx(
        rung["judge"]["scores"]["claim"]["val_bpb"], abs=AGREE)
