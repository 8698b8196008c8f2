"""The benchmark harness: autoresearch.sh (profiles, knobs, METRIC output) and
autoresearch.checks.sh (the fast gate), SPEC section 4.

Most behaviour is pinned with a stand-in trainer in a copy of the harness files (fast, no
MLX); the real trainer runs once for the smoke profile and once for the checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "autoresearch.sh"
CHECKS = REPO / "autoresearch.checks.sh"
EXTRACTOR = REPO / "scripts" / "extract_parameter_golf_metrics.py"
TRAINER = REPO / "benchmark" / "train_gpt_mlx.py"
METRIC_LINE = re.compile(r"METRIC ([A-Za-z0-9_.]+)=([+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))")
SMOKE_LIMIT_S = 60
SPEC_METRICS = (
    "val_bpb", "total_bytes", "artifact_headroom_bytes", "artifact_cap_used_pct", "step_ms",
    "eval_ms", "pre_quant_val_bpb", "delta_bpb_roundtrip", "train_tokens_consumed",
    "train_shards_touched_est", "train_shard_coverage_pct",
)

needs_trainer = pytest.mark.skipif(not TRAINER.is_file(),
                                   reason="benchmark/train_gpt_mlx.py not written yet")


def metrics_of(stdout: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        if match := METRIC_LINE.fullmatch(line):
            found[match.group(1)] = match.group(2)
    return found


# A stand-in trainer: prints a complete, plausible log (our format) and the parts of its
# environment a test asks for, then exits with EXIT. BEFORE_EXIT runs last (e.g. a raise).
FAKE_TRAINER = textwrap.dedent("""\
    import os, sys
    for name in os.environ.get("FAKE_SHOW", "").split():
        print(f"env:{name}={os.environ.get(name)}")
    print("iterations:2 train_batch_tokens:256 grad_accum_steps:1")
    print("step:2/2 train_loss:5.0000 train_time:10ms step_avg:5.00ms tok_s:51200")
    print("step:2/2 val_loss:5.0000 val_bpb:3.0000 train_time:10ms step_avg:5.00ms")
    print("serialized_model_int8_zlib:1000 bytes (payload:1 raw_pickle:1 payload_ratio:1.00x)")
    print("final_int8_zlib_roundtrip val_loss:5.0100 val_bpb:3.0100 eval_time:3ms")
    print("final_int8_zlib_roundtrip_exact val_loss:5.01000000 val_bpb:3.01000000")
    print("Code size: 500 bytes")
    print("Total submission size int8+zlib: 1500 bytes")
    open(os.path.join(os.environ["OUT_DIR"], os.environ["RUN_ID"] + "_mlx_model.int8.ptz"),
         "wb").write(b"x")
    BEFORE_EXIT
    sys.exit(EXIT)
""")


def fake_trainer(exit_code: int = 0, before_exit: str = "pass") -> str:
    return FAKE_TRAINER.replace("BEFORE_EXIT", before_exit).replace("EXIT", str(exit_code))


def workspace(tmp_path: Path, trainer_source: str | None = None) -> Path:
    """A copy of the harness files with the given trainer (default: the real one)."""
    root = tmp_path / "ws"
    (root / "benchmark").mkdir(parents=True)
    (root / "scripts").mkdir()
    shutil.copy(SCRIPT, root / "autoresearch.sh")
    shutil.copy(CHECKS, root / "autoresearch.checks.sh")
    shutil.copy(EXTRACTOR, root / "scripts" / EXTRACTOR.name)
    if trainer_source is None:
        shutil.copy(TRAINER, root / "benchmark" / "train_gpt_mlx.py")
    else:
        (root / "benchmark" / "train_gpt_mlx.py").write_text(trainer_source, encoding="utf-8")
    return root


def fake_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for a stand-in trainer: explicit (unused) data paths, this Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_ID", "PROFILE", "SEED")}
    env.update(PYTHON=sys.executable, DATA_PATH=str(tmp_path / "data"),
               TOKENIZER_PATH=str(tmp_path / "tok.model"), PROFILE="smoke", RUN_ID="fake")
    env.update(extra)
    return env


def run_script(root: Path, env: dict[str, str], script: str = "autoresearch.sh", timeout=120):
    return subprocess.run(["bash", str(root / script)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def shown_env(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^env:(\w+)=(.*)$", stdout, flags=re.M))


def knob_block(text: str) -> list[str]:
    block = text.split("# autogolf:knobs:start\n", 1)[1].split("# autogolf:knobs:end", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# The real smoke profile, run once.


@pytest.fixture(scope="module")
def smoke_run(trainer_env):
    if not TRAINER.is_file():
        pytest.skip("benchmark/train_gpt_mlx.py not written yet")
    run_id = f"pytest-smoke-{os.getpid()}"
    env = dict(trainer_env, PROFILE="smoke", RUN_ID=run_id, PYTHON=sys.executable)
    started = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    wall = time.monotonic() - started
    log_dir = REPO / "logs" / "autoresearch"
    yield proc, wall, log_dir / f"{run_id}.log"
    for path in log_dir.glob(f"{run_id}*"):
        path.unlink()


@pytest.mark.slow
def test_smoke_profile_exits_zero(smoke_run):
    proc, _, _ = smoke_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_smoke_profile_finishes_within_a_minute(smoke_run):
    _, wall, _ = smoke_run
    assert wall < SMOKE_LIMIT_S, f"smoke took {wall:.1f} s"


@pytest.mark.slow
def test_smoke_profile_prints_every_spec_metric(smoke_run):
    proc, _, _ = smoke_run
    metrics = metrics_of(proc.stdout)
    assert [name for name in SPEC_METRICS if name not in metrics] == []


@pytest.mark.slow
def test_smoke_metric_lines_come_last(smoke_run):
    proc, _, _ = smoke_run
    lines = proc.stdout.splitlines()
    first_metric = next(i for i, line in enumerate(lines) if line.startswith("METRIC "))
    assert all(METRIC_LINE.fullmatch(line) for line in lines[first_metric:])


@pytest.mark.slow
def test_smoke_streams_the_trainer_output(smoke_run):
    proc, _, _ = smoke_run
    assert re.search(r"^step:\d+/\d+ train_loss:", proc.stdout, flags=re.M)


@pytest.mark.slow
def test_smoke_val_bpb_is_the_trainers_exact_roundtrip_score(smoke_run):
    proc, _, _ = smoke_run
    exact = re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\S+ val_bpb:(\S+)$",
                      proc.stdout, flags=re.M)
    assert exact
    assert float(metrics_of(proc.stdout)["val_bpb"]) == float(exact.group(1))


@pytest.mark.slow
def test_smoke_total_bytes_is_the_trainers_submission_size(smoke_run):
    proc, _, _ = smoke_run
    total = re.search(r"^Total submission size int8\+zlib: (\d+) bytes", proc.stdout, flags=re.M)
    assert total
    assert metrics_of(proc.stdout)["total_bytes"] == total.group(1)


@pytest.mark.slow
def test_smoke_saves_the_raw_log_under_logs(smoke_run):
    proc, _, log = smoke_run
    text = log.read_text(encoding="utf-8")
    assert "final_int8_zlib_roundtrip_exact" in text
    assert "METRIC " not in text  # the raw log is the trainer's output only


@pytest.mark.slow
def test_smoke_removes_the_model_files(smoke_run):
    _, _, log = smoke_run
    run_id = log.stem
    assert list(log.parent.glob(f"{run_id}_mlx_model*")) == []


@pytest.mark.slow
def test_extractor_on_the_real_smoke_log_gives_the_scripts_metrics(smoke_run, trainer_env):
    proc, _, log = smoke_run
    again = subprocess.run(
        [sys.executable, str(EXTRACTOR), str(log), "--trainer", str(TRAINER),
         "--data-path", trainer_env["DATA_PATH"]],
        capture_output=True, text=True, timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert metrics_of(again.stdout) == metrics_of(proc.stdout)


@pytest.mark.slow
@needs_trainer
def test_real_trainer_with_a_bad_data_path_fails_without_val_bpb(tmp_path, trainer_env):
    env = dict(trainer_env, PROFILE="smoke", RUN_ID="bad-data", PYTHON=sys.executable,
               DATA_PATH=str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    root = workspace(tmp_path)
    proc = run_script(root, env)
    assert proc.returncode != 0
    assert "METRIC val_bpb=" not in proc.stdout


# ---------------------------------------------------------------------------------------------
# Harness behaviour with a stand-in trainer.


def test_successful_run_ends_with_metric_lines(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert metrics_of(proc.stdout)["val_bpb"] == "3.01"
    assert proc.stdout.splitlines()[-1].startswith("METRIC ")


def test_trainer_exit_code_is_passed_on_and_no_metric_is_printed(tmp_path):
    root = workspace(tmp_path, fake_trainer(exit_code=3))
    proc = run_script(root, fake_env(tmp_path))
    assert proc.returncode == 3
    assert "METRIC" not in proc.stdout


def test_trainer_crashing_after_its_score_line_prints_no_val_bpb(tmp_path):
    root = workspace(tmp_path, fake_trainer(before_exit="raise RuntimeError('late crash')"))
    proc = run_script(root, fake_env(tmp_path))
    assert proc.returncode == 1
    assert "METRIC val_bpb=" not in proc.stdout


def test_unknown_profile_is_refused_before_training(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, PROFILE="huge"))
    assert proc.returncode == 2
    assert "PROFILE=huge" in proc.stderr
    assert "val_bpb" not in proc.stdout


def test_default_profile_is_breadth(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    env = fake_env(tmp_path)
    del env["PROFILE"]
    proc = run_script(root, env)
    assert "profile=breadth" in proc.stdout


@pytest.mark.parametrize("profile", ["smoke", "breadth", "confirm", "full"])
def test_every_profile_runs_the_trainer(tmp_path, profile):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, PROFILE=profile, FAKE_SHOW="ITERATIONS"))
    assert proc.returncode == 0, proc.stderr
    assert int(shown_env(proc.stdout)["ITERATIONS"]) > 0


def test_full_profile_validates_on_the_whole_split(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, PROFILE="full", FAKE_SHOW="VAL_MAX_TOKENS"))
    assert shown_env(proc.stdout)["VAL_MAX_TOKENS"] == "0"


def test_caller_seed_never_reaches_the_trainer(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, SEED="7", FAKE_SHOW="SEED"))
    assert shown_env(proc.stdout)["SEED"] == "None"


def test_profile_budget_overrides_the_callers_environment(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, ITERATIONS="99999", FAKE_SHOW="ITERATIONS"))
    assert shown_env(proc.stdout)["ITERATIONS"] != "99999"


def test_knob_lines_have_the_shape_the_search_proposer_edits():
    knobs = knob_block(SCRIPT.read_text(encoding="utf-8"))
    assert len(knobs) >= 5
    for line in knobs:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*=[^\s#'\"]+", line), line
    assert not any(line.startswith("SEED=") for line in knobs)


def test_editing_a_knob_line_changes_what_the_trainer_gets(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    script = root / "autoresearch.sh"
    text, count = re.subn(r"^MATRIX_LR=.*$", "MATRIX_LR=0.0123",
                          script.read_text(encoding="utf-8"), flags=re.M)
    assert count == 1
    script.write_text(text, encoding="utf-8")
    proc = run_script(root, fake_env(tmp_path, PROFILE="breadth", FAKE_SHOW="MATRIX_LR"))
    assert shown_env(proc.stdout)["MATRIX_LR"] == "0.0123"


def test_warmdown_fraction_becomes_steps_of_the_profile(tmp_path):
    knobs = dict(line.split("=", 1) for line in knob_block(SCRIPT.read_text(encoding="utf-8")))
    root = workspace(tmp_path, fake_trainer())
    proc = run_script(root, fake_env(tmp_path, PROFILE="confirm",
                                     FAKE_SHOW="ITERATIONS WARMDOWN_ITERS"))
    shown = shown_env(proc.stdout)
    expected = int(int(shown["ITERATIONS"]) * float(knobs["WARMDOWN_FRAC"]) + 0.5)
    assert int(shown["WARMDOWN_ITERS"]) == expected


def test_run_id_defaults_to_a_timestamp_and_the_profile(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    env = fake_env(tmp_path)
    del env["RUN_ID"]
    run_script(root, env)
    logs = [p.name for p in (root / "logs" / "autoresearch").glob("*.log")]
    assert len(logs) == 1
    assert re.fullmatch(r"\d{8}T\d{6}Z-smoke-\d+\.log", logs[0]), logs


def test_raw_log_holds_the_trainer_output(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    run_script(root, fake_env(tmp_path, RUN_ID="r1"))
    text = (root / "logs" / "autoresearch" / "r1.log").read_text(encoding="utf-8")
    assert "final_int8_zlib_roundtrip_exact val_loss:5.01000000 val_bpb:3.01000000" in text


def test_model_files_of_the_run_are_removed(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    run_script(root, fake_env(tmp_path, RUN_ID="r2"))
    assert list((root / "logs" / "autoresearch").glob("r2_mlx_model*")) == []


def test_keep_model_keeps_the_model_files(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    run_script(root, fake_env(tmp_path, RUN_ID="r3", KEEP_MODEL="1"))
    assert list((root / "logs" / "autoresearch").glob("r3_mlx_model*")) != []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OpenBLAS preload is Linux-only")
def test_openblas_is_preloaded_on_linux(tmp_path):
    from loop.platform import openblas_path

    lib = openblas_path()
    if lib is None:
        pytest.skip("no system OpenBLAS installed")
    env = fake_env(tmp_path, FAKE_SHOW="LD_PRELOAD")
    env.pop("LD_PRELOAD", None)
    proc = run_script(workspace(tmp_path, fake_trainer()), env)
    assert lib in shown_env(proc.stdout)["LD_PRELOAD"].split(":")


def test_dataset_comes_from_loop_datasets_when_paths_are_unset(tmp_path, sample_dataset,
                                                                repo_root):
    env = fake_env(tmp_path, AUTOGOLF_CACHE_ROOT=str(repo_root), DATASET="sample",
                   FAKE_SHOW="DATA_PATH TOKENIZER_PATH")
    del env["DATA_PATH"], env["TOKENIZER_PATH"]
    proc = run_script(workspace(tmp_path, fake_trainer()), env)
    assert proc.returncode == 0, proc.stderr
    shown = shown_env(proc.stdout)
    assert Path(shown["DATA_PATH"]) == Path(sample_dataset.data_path)
    assert Path(shown["TOKENIZER_PATH"]) == Path(sample_dataset.tokenizer_path)


def test_missing_dataset_stops_before_training(tmp_path):
    (tmp_path / "empty-cache").mkdir()
    env = fake_env(tmp_path, AUTOGOLF_CACHE_ROOT=str(tmp_path / "empty-cache"),
                   DATASET="sample", FAKE_SHOW="DATA_PATH")
    del env["DATA_PATH"], env["TOKENIZER_PATH"]
    proc = run_script(workspace(tmp_path, fake_trainer()), env)
    assert proc.returncode == 2
    assert "env:DATA_PATH" not in proc.stdout


# ---------------------------------------------------------------------------------------------
# The session documents


def test_session_document_has_the_tried_markers_the_daemon_rewrites():
    text = (REPO / "autoresearch.md").read_text(encoding="utf-8")
    start = text.index("<!-- autogolf:tried:start -->")
    assert text.index("<!-- autogolf:tried:end -->") > start


def test_seeded_ideas_have_unique_ids_and_a_known_status():
    text = (REPO / "autoresearch.ideas.md").read_text(encoding="utf-8")
    ideas = re.findall(r"^- \[(I\d+)\] \((\w+)\) \S", text, flags=re.M)
    assert 10 <= len(ideas) <= 40  # the seed ideas and the record techniques
    assert len({idea for idea, _ in ideas}) == len(ideas)
    assert {status for _, status in ideas} <= {"untried", "promising", "exhausted", "invalid"}


@needs_trainer
def test_every_idea_knob_is_a_knob_line_or_a_trainer_constant():
    script_knobs = {line.split("=", 1)[0]
                    for line in knob_block(SCRIPT.read_text(encoding="utf-8"))}
    constants = set(re.findall(r"^([A-Z][A-Z0-9_]*) = ", TRAINER.read_text(encoding="utf-8"),
                               flags=re.M))
    text = (REPO / "autoresearch.ideas.md").read_text(encoding="utf-8")
    used = {name for line in re.findall(r"^  knobs: (.*)$", text, flags=re.M)
            for name, _ in (pair.split("=", 1) for pair in line.split())}
    assert used, "no knobs: lines found"
    assert used <= script_knobs | constants, used - script_knobs - constants


# ---------------------------------------------------------------------------------------------
# autoresearch.checks.sh


@pytest.mark.slow
@needs_trainer
def test_checks_pass_on_the_repo(trainer_env):
    started = time.monotonic()
    proc = subprocess.run(["bash", str(CHECKS)], cwd=REPO, capture_output=True, text=True,
                          env=dict(trainer_env, PYTHON=sys.executable), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 60


@needs_trainer
def test_checks_fail_on_a_syntax_error_naming_compile(tmp_path):
    source = TRAINER.read_text(encoding="utf-8") + "\ndef broken(:\n"
    proc = run_script(workspace(tmp_path, source), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert proc.returncode == 1
    assert "FAILED compile" in proc.stderr


@needs_trainer
def test_checks_fail_on_a_socket_import_naming_no_network(tmp_path):
    source = TRAINER.read_text(encoding="utf-8") + "\nimport socket\n"
    proc = run_script(workspace(tmp_path, source), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert proc.returncode == 1
    assert "FAILED no-network" in proc.stderr
    assert "socket" in proc.stderr
    assert "FAILED compile" not in proc.stderr


def test_checks_catch_a_dynamic_network_import(tmp_path):
    source = fake_trainer() + "\nmod = __import__('urllib.request')\n"
    proc = run_script(workspace(tmp_path, source), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert "FAILED no-network" in proc.stderr


def test_checks_catch_a_network_import_in_the_extractor(tmp_path):
    root = workspace(tmp_path, fake_trainer())
    extractor = root / "scripts" / EXTRACTOR.name
    extractor.write_text(extractor.read_text(encoding="utf-8") + "\nimport requests\n",
                         encoding="utf-8")
    proc = run_script(root, fake_env(tmp_path), script="autoresearch.checks.sh")
    assert "FAILED no-network" in proc.stderr


def test_checks_fail_when_the_tiny_run_crashes_naming_tiny_run(tmp_path):
    proc = run_script(workspace(tmp_path, fake_trainer(exit_code=1)), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert proc.returncode == 1
    assert "FAILED tiny-run" in proc.stderr


def test_checks_fail_when_the_tiny_run_scores_nan(tmp_path):
    source = fake_trainer().replace("val_bpb:3.01000000", "val_bpb:nan")
    proc = run_script(workspace(tmp_path, source), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert proc.returncode == 1
    assert "FAILED tiny-run" in proc.stderr


def test_checks_pass_with_a_working_stand_in_trainer(tmp_path):
    source = fake_trainer().replace("step:2/2 train_loss", "step:1/1 train_loss")
    proc = run_script(workspace(tmp_path, source), fake_env(tmp_path),
                      script="autoresearch.checks.sh")
    assert proc.returncode == 0, proc.stderr
