"""loop/judge/verify.py: a trainer that lowers its own printed val_bpb is caught (one real
smoke run).

The run uses a copy of the trainer edited the way a cheating proposer would: the model and
its artifact are untouched, only the printed roundtrip val_bpb is multiplied by 0.9. The
trusted evaluation of the artifact must agree with the honest number (printed / 0.9) and
disagree with the printed one.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from loop.judge import protocol, verify
from loop.measure import logparse

SMOKE = {  # autoresearch.sh's smoke profile
    "ITERATIONS": "30", "TRAIN_BATCH_TOKENS": "2048", "GRAD_ACCUM_STEPS": "1",
    "TRAIN_SEQ_LEN": "128", "VAL_MAX_TOKENS": "16384", "VAL_BATCH_SIZE": "8192",
    "WARMUP_STEPS": "1", "TRAIN_LOG_EVERY": "10", "MAX_WALLCLOCK_SECONDS": "0",
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "MLP_MULT": "2",
}
CHEAT_FROM = "    q_loss, q_bpb = run.evaluator(q_params)\n"
CHEAT_TO = CHEAT_FROM + "    q_bpb = q_bpb * 0.9  # a proposer's 'improvement'\n"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def cheating_run(tmp_path_factory, repo_root: Path, trainer_env: dict[str, str]):
    work = tmp_path_factory.mktemp("cheat")
    source = (repo_root / "benchmark/train_gpt_mlx.py").read_text()
    assert source.count(CHEAT_FROM) == 1, "the trainer's final evaluation line moved"
    trainer = work / "train_gpt_mlx.py"
    trainer.write_text(source.replace(CHEAT_FROM, CHEAT_TO))
    env = {**trainer_env, **SMOKE, "RUN_ID": "cheat", "OUT_DIR": str(work)}
    done = subprocess.run([sys.executable, str(trainer)], cwd=work, env=env, text=True,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return logparse.parse_trainer_log(done.stdout), trainer_env


def settings_of(log: logparse.TrainerLog, env: dict[str, str]) -> verify.Settings:
    s = log.settings
    return verify.Settings(Path(env["DATA_PATH"]), Path(env["TOKENIZER_PATH"]),
                           int(s["train_seq_len"]), int(s["val_max_tokens"]),
                           float(s["logit_softcap"]), float(s["rope_base"]))


@pytest.mark.slow
def test_a_trainer_that_lowers_its_printed_val_bpb_is_caught(cheating_run):
    log, env = cheating_run
    claimed = log.exact_val_bpb
    artifact = Path(log.settings["artifact_path"])
    check = verify.verify(artifact, claimed, settings_of(log, env), TOLERANCE)
    print(f"\nprinted {claimed:.6f}, honest {claimed / 0.9:.6f}, trusted {check.trusted:.6f}")
    assert check.status == "disagree", check.reason
    # The trusted number is the honest one: verify re-derives, it does not merely distrust.
    assert check.trusted == pytest.approx(claimed / 0.9, abs=TOLERANCE)
    honest = verify.verify(artifact, claimed / 0.9, settings_of(log, env), TOLERANCE)
    assert honest.status == "agree", honest.reason


@pytest.mark.slow
def test_the_real_trainer_prints_every_protocol_field(cheating_run):
    log, _ = cheating_run
    read = protocol.read_protocol(log)
    assert None not in read.values(), read
    assert (read["seed"], read["val_max_tokens"], read["train_seq_len"]) == ("1337", "16384",
                                                                            "128")
    assert len(read["tokenizer"]) == 64 and len(read["val_data"]) == 64


@pytest.mark.slow
def test_an_artifact_of_another_architecture_is_unsupported_not_agreed(cheating_run, tmp_path):
    log, env = cheating_run
    obj = pickle.loads(zlib.decompress(Path(log.settings["artifact_path"]).read_bytes()))
    obj["passthrough"]["blocks.0.extra_gate"] = np.ones(64, dtype=np.float32)
    other = tmp_path / "other.ptz"
    other.write_bytes(zlib.compress(pickle.dumps(obj)))
    check = verify.verify(other, log.exact_val_bpb, settings_of(log, env), TOLERANCE)
    assert check.status == "unsupported"
    assert check.reason.startswith("verify: unsupported architecture")


def test_an_artifact_that_unpickles_code_is_refused(tmp_path):
    evil = tmp_path / "evil.ptz"
    evil.write_bytes(zlib.compress(pickle.dumps({"quantized": {}, "scales": {},
                                                  "passthrough": {"x": print}})))
    with pytest.raises(verify.Unsupported, match="builtins.print"):
        verify.load_artifact(evil)


# --------------------------------------------------------------------------- the scheduler
# The fake benchmark "exports" a copy of the real smoke artifact and prints the score given.


def daemon_with_artifact(repo: Path, artifact: Path, printed: float) -> dict:
    from scheduler_helpers import candidates, git, run_daemon

    knobs = repo / "knobs.sh"
    knobs.write_text(knobs.read_text() + "BPB=6.0\n")  # the incumbent: far worse
    git(repo, "commit", "-qam", "incumbent scores 6.0")
    run_daemon(repo, {"BPB": f"{printed:.8f}", "ARTIFACT": str(artifact)}, ladder=("breadth",),
               verify_enabled=True, verify_tolerance=TOLERANCE)
    [row] = candidates(repo)
    return row


@pytest.mark.slow
def test_the_daemon_revokes_a_keep_whose_artifact_scores_worse_than_printed(cheating_run,
                                                                           repo):
    log, _ = cheating_run
    artifact = Path(log.settings["artifact_path"])
    row = daemon_with_artifact(repo, artifact, log.exact_val_bpb)
    assert row["status"] == "metric_mismatch" and row["reason"].startswith("verify: ")
    assert row["commit"] is None
    assert row["verify"]["claimed_val_bpb"] == pytest.approx(log.exact_val_bpb)
    assert row["verify"]["trusted_val_bpb"] == pytest.approx(log.exact_val_bpb / 0.9,
                                                             abs=TOLERANCE)
    assert not list((repo / ".autogolf/worktrees").glob("*/logs/autoresearch/*.ptz"))


@pytest.mark.slow
def test_the_daemon_keeps_a_candidate_whose_artifact_agrees(cheating_run, repo):
    log, _ = cheating_run
    artifact = Path(log.settings["artifact_path"])
    row = daemon_with_artifact(repo, artifact, log.exact_val_bpb / 0.9)
    assert row["status"] == "keep", row["reason"]
    assert row["verify"]["status"] == "agree" and "verify: trusted val_bpb" in row["reason"]
