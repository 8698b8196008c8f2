"""scripts/extract_parameter_golf_metrics.py: trainer log -> METRIC lines (SPEC section 4).

Hand-written logs in tests/fixtures/ cover upstream's MLX format (no size lines) and ours; the
extractor on a real smoke log is in test_harness.py, next to the smoke run that produces it.
"""

from __future__ import annotations

import ast
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXTRACTOR = REPO / "scripts" / "extract_parameter_golf_metrics.py"
FIXTURES = Path(__file__).parent / "fixtures"
# SPEC section 4 grammar, as strict as it is written: a finite decimal, nothing after it.
METRIC_LINE = re.compile(r"METRIC ([A-Za-z0-9_.]+)=([+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+))")
TRAINER_BYTES = 1234


def run_extractor(*args: str | Path, env: dict[str, str] | None = None):
    if env is None:
        env = {k: v for k, v in os.environ.items() if k != "DATA_PATH"}
    return subprocess.run(
        [sys.executable, str(EXTRACTOR), *map(str, args)],
        capture_output=True, text=True, env=env, timeout=60,
    )


def metrics_of(stdout: str) -> dict[str, str]:
    """Every stdout line must be a METRIC line; later lines win (the pi-autoresearch rule)."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        match = METRIC_LINE.fullmatch(line)
        assert match, f"not a METRIC line: {line!r}"
        found[match.group(1)] = match.group(2)
    return found


@pytest.fixture
def trainer(tmp_path: Path) -> Path:
    """A stand-in trainer file of a known size, so totals do not depend on the real one."""
    path = tmp_path / "train_gpt_mlx.py"
    path.write_bytes(b"#" * TRAINER_BYTES)
    return path


def extract(log: Path, trainer: Path, *extra: str | Path, env=None) -> dict[str, str]:
    proc = run_extractor(log, "--trainer", trainer, *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return metrics_of(proc.stdout)


def write_shards(folder: Path, counts: list[int]) -> Path:
    """Train shards in the real format (256 int32 header words, uint16 tokens)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, count in enumerate(counts):
        header = struct.pack("<256i", 20240520, 1, count, *([0] * 253))
        (folder / f"fineweb_train_{i:06d}.bin").write_bytes(header + b"\0\0" * count)
    (folder / "fineweb_val_000000.bin").write_bytes(struct.pack("<256i", 20240520, 1, 0,
                                                                *([0] * 253)))
    return folder


def write_log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.log"
    path.write_text(text, encoding="utf-8")
    return path


UPSTREAM_STYLE_TAIL = """\
step:{steps}/{steps} val_loss:4.0000 val_bpb:2.5000 train_time:1000ms step_avg:100.00ms
serialized_model_int8_zlib:5000000 bytes (payload:1 raw_pickle:1 payload_ratio:1.00x)
final_int8_zlib_roundtrip val_loss:4.0100 val_bpb:2.5100 eval_time:10ms
final_int8_zlib_roundtrip_exact val_loss:4.01000000 val_bpb:2.51000000
"""


def upstream_style_log(tmp_path: Path, steps: int, batch_tokens: int) -> Path:
    head = f"iterations:{steps} train_batch_tokens:{batch_tokens} grad_accum_steps:1\n"
    return write_log(tmp_path, head + UPSTREAM_STYLE_TAIL.format(steps=steps))


@pytest.mark.parametrize("log", sorted(FIXTURES.glob("*.log")), ids=lambda p: p.name)
def test_every_output_line_follows_the_metric_grammar(log: Path, trainer: Path):
    proc = run_extractor(log, "--trainer", trainer)
    assert proc.returncode == 0, proc.stderr
    metrics_of(proc.stdout)  # asserts the grammar line by line


def test_val_bpb_is_the_exact_roundtrip_value_not_the_rounded_one(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert metrics["val_bpb"] == "2.31331823"


def test_upstream_log_total_is_serialized_size_plus_trainer_file_size(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert int(metrics["total_bytes"]) == 10871234 + TRAINER_BYTES
    assert int(metrics["code_bytes"]) == TRAINER_BYTES
    assert int(metrics["model_bytes"]) == 10871234


def test_trainer_defaults_to_the_benchmark_trainer_of_this_checkout():
    real_trainer = REPO / "benchmark" / "train_gpt_mlx.py"
    if not real_trainer.is_file():
        pytest.skip("benchmark/train_gpt_mlx.py not written yet")
    proc = run_extractor(FIXTURES / "upstream_mlx.log")
    metrics = metrics_of(proc.stdout)
    assert int(metrics["code_bytes"]) == real_trainer.stat().st_size


def test_missing_trainer_file_leaves_the_total_unknown(tmp_path: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", tmp_path / "absent.py")
    assert "total_bytes" not in metrics
    assert "artifact_headroom_bytes" not in metrics
    assert "artifact_cap_used_pct" not in metrics
    assert metrics["model_bytes"] == "10871234"


def test_total_submission_size_line_wins_over_the_computed_total(trainer: Path):
    metrics = extract(FIXTURES / "ours_with_sizes.log", trainer)
    assert metrics["total_bytes"] == "170456"
    assert metrics["code_bytes"] == "47000"  # the log's `Code size:`, not the file's size


def test_headroom_and_cap_percentage_follow_from_the_total(trainer: Path):
    metrics = extract(FIXTURES / "ours_with_sizes.log", trainer)
    assert int(metrics["artifact_headroom_bytes"]) == 16_000_000 - 170456
    assert float(metrics["artifact_cap_used_pct"]) == pytest.approx(100 * 170456 / 16e6, abs=1e-4)


def test_over_the_cap_gives_negative_headroom(tmp_path: Path, trainer: Path):
    log = write_log(tmp_path, "serialized_model_int8_zlib:16500000 bytes (payload:1)\n")
    metrics = extract(log, trainer)
    assert int(metrics["artifact_headroom_bytes"]) == 16_000_000 - 16_500_000 - TRAINER_BYTES


def test_pre_quant_is_the_last_validation_before_export(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert metrics["pre_quant_val_bpb"] == "2.3104"  # not step 0's 4.1108


def test_roundtrip_delta_is_post_minus_pre(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert float(metrics["delta_bpb_roundtrip"]) == pytest.approx(2.31331823 - 2.3104, abs=1e-9)


def test_tiny_values_are_written_without_exponent(tmp_path: Path, trainer: Path):
    log = write_log(tmp_path, UPSTREAM_STYLE_TAIL.format(steps=1).replace(
        "val_bpb:2.51000000", "val_bpb:2.50000001"))
    metrics = extract(log, trainer)
    assert metrics["delta_bpb_roundtrip"] == "0.00000001"


def test_step_ms_is_the_last_train_step_average(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert metrics["step_ms"] == "486.51"  # the train line, not the val line's 692.10


def test_eval_ms_is_the_roundtrip_validation_time(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert float(metrics["eval_ms"]) == 40987


def test_tokens_consumed_is_steps_times_batch_for_upstream_logs(trainer: Path):
    metrics = extract(FIXTURES / "upstream_mlx.log", trainer)
    assert int(metrics["train_tokens_consumed"]) == 200 * 8192


def test_tokens_consumed_prefers_the_trainers_own_count(trainer: Path):
    metrics = extract(FIXTURES / "ours_with_sizes.log", trainer)
    assert int(metrics["train_tokens_consumed"]) == 122910  # not 30 steps x 4096


def test_tokens_consumed_is_unknown_without_a_batch_setting(tmp_path: Path, trainer: Path):
    log = write_log(tmp_path, UPSTREAM_STYLE_TAIL.format(steps=10))
    metrics = extract(log, trainer)
    assert "train_tokens_consumed" not in metrics
    assert "train_shards_touched_est" not in metrics


def test_shard_metrics_come_from_the_shards_present(tmp_path: Path, trainer: Path):
    data = write_shards(tmp_path / "data", [1000, 1000, 1000, 1000])
    log = upstream_style_log(tmp_path, steps=5, batch_tokens=500)  # 2,500 tokens
    metrics = extract(log, trainer, "--data-path", data)
    assert int(metrics["train_shards_touched_est"]) == 3
    assert float(metrics["train_shard_coverage_pct"]) == pytest.approx(62.5)


def test_shard_coverage_above_100_means_the_stream_wrapped(tmp_path: Path, trainer: Path):
    data = write_shards(tmp_path / "data", [1000, 1000])
    log = upstream_style_log(tmp_path, steps=10, batch_tokens=500)  # 5,000 tokens
    metrics = extract(log, trainer, "--data-path", data)
    assert int(metrics["train_shards_touched_est"]) == 2
    assert float(metrics["train_shard_coverage_pct"]) == pytest.approx(250.0)


def test_shard_metrics_read_the_data_path_from_the_environment(tmp_path: Path, trainer: Path):
    data = write_shards(tmp_path / "data", [1000, 1000])
    log = upstream_style_log(tmp_path, steps=2, batch_tokens=500)
    env = dict(os.environ, DATA_PATH=str(data))
    metrics = extract(log, trainer, env=env)
    assert int(metrics["train_shards_touched_est"]) == 1


def test_shard_coverage_is_unknown_without_shards(tmp_path: Path, trainer: Path):
    log = upstream_style_log(tmp_path, steps=2, batch_tokens=500)
    metrics = extract(log, trainer, "--data-path", tmp_path / "no-such-dir")
    assert "train_shard_coverage_pct" not in metrics
    assert "train_shards_touched_est" not in metrics


def test_shard_coverage_is_unknown_when_a_header_is_not_a_shard(tmp_path: Path, trainer: Path):
    data = write_shards(tmp_path / "data", [1000])
    (data / "fineweb_train_000001.bin").write_bytes(b"not a shard at all")
    log = upstream_style_log(tmp_path, steps=2, batch_tokens=500)
    metrics = extract(log, trainer, "--data-path", data)
    assert "train_shard_coverage_pct" not in metrics


def test_nonfinite_score_is_omitted_not_zero(trainer: Path):
    metrics = extract(FIXTURES / "nonfinite_final.log", trainer)
    for name in ("val_bpb", "pre_quant_val_bpb", "delta_bpb_roundtrip"):
        assert name not in metrics
    assert metrics["total_bytes"] == str(10_000_000 + TRAINER_BYTES)  # sizes are still known


def test_crashed_run_has_no_score_and_no_size(trainer: Path):
    metrics = extract(FIXTURES / "crashed_mid_training.log", trainer)
    for name in ("val_bpb", "total_bytes", "artifact_headroom_bytes", "eval_ms"):
        assert name not in metrics


def test_duplicate_lines_last_wins(trainer: Path):
    metrics = extract(FIXTURES / "appended_two_runs.log", trainer)
    assert metrics["val_bpb"] == "2.52"
    assert metrics["model_bytes"] == "9500000"
    assert metrics["pre_quant_val_bpb"] == "2.5"
    assert int(metrics["train_tokens_consumed"]) == 20 * 4096


def test_junk_lines_that_resemble_trainer_lines_change_nothing(trainer: Path):
    metrics = extract(FIXTURES / "junk_lines.log", trainer)
    assert metrics["val_bpb"] == "1.505"
    assert metrics["model_bytes"] == "2000000"
    assert int(metrics["total_bytes"]) == 2_000_000 + TRAINER_BYTES
    assert int(metrics["train_tokens_consumed"]) == 5 * 1024
    assert metrics["step_ms"] == "200.0"


def test_the_daemon_parser_reads_the_same_values(trainer: Path):
    from loop.measure.metrics import parse_metric_lines

    proc = run_extractor(FIXTURES / "upstream_mlx.log", "--trainer", trainer)
    ours = {k: float(v) for k, v in metrics_of(proc.stdout).items()}
    assert parse_metric_lines(proc.stdout) == ours


def test_unreadable_log_is_an_error(tmp_path: Path):
    proc = run_extractor(tmp_path / "missing.log")
    assert proc.returncode == 2
    assert "METRIC" not in proc.stdout


def test_extractor_uses_only_the_standard_library():
    tree = ast.parse(EXTRACTOR.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported, "found no imports at all: the scan is broken"
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
