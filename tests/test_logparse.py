"""The daemon's trusted reading of raw trainer output: our log, upstream's MLX log, odd cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.measure.logparse import (
    ProgressEstimator,
    TrainerLog,
    format_seconds,
    parse_progress,
    parse_train_curve,
    parse_trainer_log,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ours() -> TrainerLog:
    return parse_trainer_log((FIXTURES / "logparse_ours.txt").read_text())


@pytest.fixture(scope="module")
def upstream() -> TrainerLog:
    return parse_trainer_log((FIXTURES / "logparse_upstream.txt").read_text())


def test_our_log_score_is_the_exact_roundtrip_line(ours):
    assert ours.exact_val_bpb == 3.07998765
    assert ours.exact_val_loss == 5.33991234


def test_our_log_four_decimal_roundtrip_and_eval_time(ours):
    assert (ours.roundtrip_val_bpb, ours.eval_ms) == (3.0800, 350.0)


def test_our_log_sizes(ours):
    assert (ours.serialized_bytes, ours.code_bytes, ours.total_bytes) == (912345, 41234, 953579)


def test_our_log_pre_quant_bpb_is_the_last_validation_line(ours):
    assert ours.pre_quant_val_bpb == 3.0743


def test_our_log_training_progress_fields(ours):
    assert (ours.last_step, ours.iterations) == (20, 20)
    assert ours.last_train_loss == 5.4107
    assert ours.step_ms == 40.50
    assert ours.tok_s == 100999
    assert ours.nonfinite_loss is False


def test_single_pair_lines_are_settings(ours):
    assert ours.settings["seed"] == "1337"
    assert ours.settings["val_tokens"] == "65536"
    assert ours.settings["compute_dtype"] == "float32"
    assert ours.settings["run_id"] == "smoke_20261123_141200"


def test_lines_with_several_pairs_are_not_settings(ours):
    # `iterations:20 train_batch_tokens:4096 ...` describes; it is not one protocol setting.
    assert "iterations" not in ours.settings
    assert "mlx_version" not in ours.settings


def test_progress_counters_are_not_settings(ours):
    assert "val_progress" not in ours.settings


def test_upstream_log_has_no_code_or_total_size(upstream):
    assert upstream.serialized_bytes == 10987654
    assert upstream.code_bytes is None
    assert upstream.total_bytes is None
    assert upstream.artifact_bytes() is None


def test_upstream_log_score_and_steps(upstream):
    assert upstream.exact_val_bpb == 2.25781234
    assert (upstream.last_step, upstream.iterations) == (200, 200)
    assert upstream.pre_quant_val_bpb == 2.2512


def test_upstream_warmup_counters_are_not_settings(upstream):
    assert "warmup_step" not in upstream.settings
    assert upstream.settings["tokenizer_path"] == "./data/tokenizers/fineweb_1024_bpe.model"


def test_artifact_bytes_prefers_the_total_line():
    log = TrainerLog(serialized_bytes=100, code_bytes=10, total_bytes=999)
    assert log.artifact_bytes() == 999


def test_artifact_bytes_falls_back_to_serialized_plus_code():
    assert TrainerLog(serialized_bytes=100, code_bytes=10).artifact_bytes() == 110


def test_empty_output_is_all_unknown_not_zero():
    log = parse_trainer_log("")
    assert log == TrainerLog()
    assert log.exact_val_bpb is None and log.total_bytes is None and log.step_ms is None


def test_crash_mid_training_keeps_progress_and_no_score():
    text = ("step:1/100 train_loss:6.9000 train_time:50ms step_avg:50.00ms tok_s:1000\n"
            "step:2/100 train_loss:6.8000 train_time:100ms step_avg:50.00ms tok_s:1000\n"
            "Traceback (most recent call last):\nMemoryError\n")
    log = parse_trainer_log(text)
    assert (log.last_step, log.iterations) == (2, 100)
    assert log.exact_val_bpb is None and log.serialized_bytes is None


def test_nan_train_loss_sets_nonfinite_and_leaves_loss_unknown():
    text = "step:7/100 train_loss:nan train_time:350ms step_avg:50.00ms tok_s:1000\n"
    log = parse_trainer_log(text)
    assert log.nonfinite_loss is True
    assert log.last_train_loss is None
    assert log.last_step == 7


def test_inf_train_loss_is_non_finite_too():
    text = "step:7/100 train_loss:-inf train_time:350ms step_avg:50.00ms tok_s:1000\n"
    assert parse_trainer_log(text).nonfinite_loss is True


def test_non_finite_exact_score_is_unknown():
    log = parse_trainer_log("final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:nan\n")
    assert log.exact_val_bpb is None and log.exact_val_loss is None


def test_last_repeated_final_line_wins():
    text = ("final_int8_zlib_roundtrip_exact val_loss:3.00000000 val_bpb:1.50000000\n"
            "final_int8_zlib_roundtrip_exact val_loss:3.10000000 val_bpb:1.60000000\n")
    assert parse_trainer_log(text).exact_val_bpb == 1.6


def test_step_zero_validation_average_is_not_a_step_time():
    text = "step:0/200 val_loss:6.9410 val_bpb:4.1108 train_time:0ms step_avg:0.00ms\n"
    log = parse_trainer_log(text)
    assert log.step_ms is None
    assert log.pre_quant_val_bpb == 4.1108


def test_extra_fields_after_a_known_line_are_tolerated():
    # Forks append fields (e.g. `seq_len:512`) to step lines; the known prefix still reads.
    text = "step:5/50 train_loss:4.2000 train_time:250ms step_avg:50.00ms tok_s:900 seq_len:512\n"
    log = parse_trainer_log(text)
    assert (log.last_step, log.last_train_loss, log.tok_s) == (5, 4.2, 900)


def test_lookalike_lines_are_not_read():
    text = ("echo final_int8_zlib_roundtrip_exact val_loss:1.0 val_bpb:0.1\n"
            "serialized_model_int8_zlib:12 kilobytes\n"
            "Code size: many bytes\n")
    log = parse_trainer_log(text)
    assert (log.exact_val_bpb, log.serialized_bytes, log.code_bytes) == (None, None, None)


def test_leading_and_trailing_whitespace_and_crlf_are_tolerated():
    log = parse_trainer_log("  Total submission size int8+zlib: 1234 bytes \r\n")
    assert log.total_bytes == 1234


@pytest.mark.parametrize("line, expected", [
    ("step:3/20 train_loss:6.1000 train_time:120ms step_avg:40.00ms tok_s:100", (3, 20)),
    ("step:20/20 val_loss:5.3 val_bpb:3.07 train_time:810ms step_avg:40.50ms", (20, 20)),
    ("step:7/9", (7, 9)),
    ("warmup_step:1/20", None),
    ("stopping_early: wallclock_cap train_time:600ms step:15/20", None),
    ("val_progress:1/2", None),
    ("", None),
])
def test_parse_progress(line, expected):
    assert parse_progress(line) == expected


STEP = "step:{}/{} train_loss:5.0000 train_time:0ms step_avg:1.00ms tok_s:1"


def test_progress_eta_from_wall_clock_between_step_lines():
    est = ProgressEstimator(start=0.0)
    est.feed("compiling...", now=5.0)
    est.feed(STEP.format(1, 100), now=10.0)
    est.feed(STEP.format(11, 100), now=20.0)  # 10 steps in 10 s -> 89 steps left = 89 s
    snap = est.snapshot()
    assert (snap.phase, snap.step, snap.total) == ("training", 11, 100)
    assert snap.eta_s == pytest.approx(89.0)


def test_progress_eta_counts_down_between_lines():
    est = ProgressEstimator(start=0.0)
    est.feed(STEP.format(1, 100), now=10.0)
    est.feed(STEP.format(11, 100), now=20.0)
    assert est.snapshot(now=30.0).eta_s == pytest.approx(79.0)


def test_progress_eta_unknown_from_a_single_step_line():
    est = ProgressEstimator(start=0.0)
    est.feed(STEP.format(1, 100), now=10.0)
    assert est.snapshot().eta_s is None


def test_progress_phases_after_training():
    est = ProgressEstimator(start=0.0)
    est.feed(STEP.format(100, 100), now=50.0)
    assert est.snapshot().phase == "evaluating"
    est.feed("serialized_model_int8_zlib:100 bytes (payload:1)", now=60.0)
    assert est.snapshot().phase == "exporting"
    est.feed("final_int8_zlib_roundtrip_exact val_loss:1.00000000 val_bpb:0.50000000", now=70.0)
    assert est.snapshot().phase == "done"


def test_progress_line_is_readable():
    est = ProgressEstimator(start=0.0)
    est.feed(STEP.format(10, 200), now=10.0)
    est.feed(STEP.format(110, 200), now=110.0)
    assert est.snapshot().line() == "training step 110/200 (55%) ETA 1m30s, elapsed 1m50s"


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.4, "59s"), (185, "3m05s"),
                                           (3720, "1h02m")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_train_curve_is_every_train_step_in_order_with_unknown_for_non_finite():
    text = ("step:2/30 train_loss:6.5000 train_time:90ms step_avg:45.00ms tok_s:1000\n"
            "step:1/30 train_loss:6.9000 train_time:50ms step_avg:50.00ms tok_s:1000\n"
            "step:30/30 val_loss:5.2933 val_bpb:3.3726 train_time:3468ms step_avg:115.61ms\n"
            "step:3/30 train_loss:nan train_time:130ms step_avg:43.00ms tok_s:1000\n"
            "noise step:4/30 train_loss:1.0\n")
    assert parse_train_curve(text) == [(1, 6.9), (2, 6.5), (3, None)]
