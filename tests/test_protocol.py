"""The frozen evaluation protocol (loop/judge/protocol.py) and its enforcement by the scheduler.

The fake benchmark (tests/scheduler_helpers.py) prints each protocol field from a knob in
knobs.sh, so a proposal that sets the knob changes what the "trainer" says it used - and
scores 0.05 lower whenever it scores fewer validation tokens, like a real shortcut would.
"""

from __future__ import annotations

import pytest
from scheduler_helpers import baselines, candidates, fake_runs, run_daemon

from loop.judge import protocol
from loop.measure.logparse import TrainerLog
from loop.store.statuses import NAMES as STATUSES

WIN = {"BONUS_BREADTH": 0.01}  # a real improvement, far over the 0.002 margin


# --------------------------------------------------------------------------- pure logic


def test_protocol_is_read_from_the_trainers_settings_lines_and_missing_is_none():
    log = TrainerLog(settings={"seed": "1337", "val_tokens": "16384", "iterations": "30"})
    read = protocol.read_protocol(log)
    assert (read["seed"], read["val_tokens"], read["iterations"]) == ("1337", "16384", "30")
    assert read["tokenizer"] is None and set(read) == set(protocol.FIELDS)


def test_a_field_the_candidate_stopped_printing_is_a_difference():
    before = {"seed": "1337", "iterations": "30"}
    assert protocol.differences(before, {"iterations": "30"}) == {"seed": ("1337", None)}
    assert protocol.describe({"seed": ("1337", None)}) == "seed 1337 -> (not printed)"


def test_allowed_changes_carry_the_fields_derived_from_them():
    changed = {"val_max_tokens": ("16384", "8192"), "val_tokens": ("16384", "8192"),
               "seed": ("1337", "1")}
    forbidden, allowed = protocol.split_changes(changed, ["val_max_tokens"])
    assert set(forbidden) == {"seed"} and set(allowed) == {"val_max_tokens", "val_tokens"}
    assert protocol.overrides({"val_max_tokens": "8192", "val_tokens": "8192"}, allowed) == {
        "VAL_MAX_TOKENS": "8192"}


def test_hashes_are_shortened_in_reasons_and_the_status_is_known():
    text = protocol.describe({"tokenizer": ("a" * 64, "b" * 64)})
    assert text == f"tokenizer {'a' * 12} -> {'b' * 12}"
    assert "protocol_drift" in STATUSES
    assert "seed" not in protocol.ALLOWABLE and "tokenizer" not in protocol.ALLOWABLE


# --------------------------------------------------------------------------- the scheduler


@pytest.mark.parametrize("knob, value, field", [
    ("SEED", "42", "seed"),
    ("VAL_TOKENS", "8192", "val_tokens"),
    ("VAL_MAX_TOKENS", "8192", "val_max_tokens"),
    ("TOKENIZER_SHA256", "c" * 64, "tokenizer"),
    ("VAL_SHA256", "d" * 64, "val_data"),
    ("ITERATIONS", "8", "iterations"),
    ("TRAIN_BATCH_TOKENS", "4096", "train_batch_tokens"),
    ("TRAIN_SEQ_LEN", "256", "train_seq_len"),
    ("MAX_WALLCLOCK_SECONDS", "60", "max_wallclock_seconds"),
])
def test_each_protocol_field_changed_by_a_candidate_is_protocol_drift(repo, knob, value, field):
    run_daemon(repo, {**WIN, knob: value}, ladder=("breadth",))
    [row] = candidates(repo)
    assert row["status"] == "protocol_drift", row["reason"]
    assert f"{field} " in row["reason"] and "frozen evaluation protocol" in row["reason"]
    assert row["commit"] is None


def test_an_unchanged_protocol_is_judged_as_usual(repo):
    run_daemon(repo, WIN, ladder=("breadth",))
    [row] = candidates(repo)
    assert row["status"] == "keep"
    assert row["rungs"]["breadth"]["protocol"]["seed"] == "1337"


def test_an_allowed_change_remeasures_the_incumbent_under_the_new_protocol(repo, tmp_path):
    # Fewer val tokens score 0.05 lower for the same model: compared with the old incumbent
    # that would be a keep; against the incumbent re-measured with 8192 tokens it is nothing.
    run_daemon(repo, {"VAL_MAX_TOKENS": "8192", "VAL_TOKENS": "8192"}, ladder=("breadth",),
               protocol_allow_change=("val_max_tokens",))
    [row] = candidates(repo)
    assert row["status"] == "discard", row["reason"]
    remeasured = row["incumbent_remeasured"]["breadth"]
    assert remeasured["overrides"] == {"VAL_MAX_TOKENS": "8192"}
    assert remeasured["val_bpb"] == pytest.approx(row["rungs"]["breadth"]["val_bpb"], abs=3e-4)
    assert any(r.startswith("E0002-incumbent") for r in fake_runs(tmp_path))
    assert len(baselines(repo)) == 1  # the re-measurement is part of the candidate's row


def test_an_allowed_change_with_a_real_improvement_is_kept(repo):
    run_daemon(repo, {**WIN, "VAL_MAX_TOKENS": "8192", "VAL_TOKENS": "8192"},
               ladder=("breadth",), protocol_allow_change=("val_max_tokens",))
    [row] = candidates(repo)
    assert row["status"] == "keep", row["reason"]
    incumbent = row["incumbent_remeasured"]["breadth"]["val_bpb"]
    assert incumbent - row["rungs"]["breadth"]["val_bpb"] == pytest.approx(0.01, abs=3e-4)


# --------------------------------------------------------------------------- configuration


def test_allow_change_accepts_budget_fields_and_refuses_the_seed_and_data(tmp_path):
    from loop.config import ConfigError, load_config

    path = tmp_path / "autogolf.yaml"
    path.write_text("protocol: {allow_change: [iterations, train_seq_len]}\n")
    assert load_config(path).protocol_allow_change == ("iterations", "train_seq_len")
    for field in ("seed", "tokenizer", "val_data", "val_tokens"):
        path.write_text(f"protocol: {{allow_change: [{field}]}}\n")
        with pytest.raises(ConfigError, match=r"protocol\.allow_change\[0\]"):
            load_config(path)


def test_verify_settings_are_validated(tmp_path):
    from loop.config import ConfigError, load_config

    path = tmp_path / "autogolf.yaml"
    path.write_text("verify: {enabled: true, tolerance: 0.0005}\n")
    cfg = load_config(path)
    assert (cfg.verify_enabled, cfg.verify_tolerance) == (True, 0.0005)
    path.write_text("verify: {enabled: yes please}\n")
    with pytest.raises(ConfigError, match="verify.enabled"):
        load_config(path)
