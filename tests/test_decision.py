"""The keep rule (SPEC section 6), table-driven: every way a candidate fails, and the margin."""

from __future__ import annotations

import dataclasses
import math

import pytest

from loop.config import Config
from loop.judge.margin import compare
from loop.judge.noise import margin
from loop.judge.validity import budget_verdict, judge_run
from loop.measure.logparse import TrainerLog
from loop.store.statuses import NAMES as STATUSES
from loop.store.verdict import Verdict

CAP = 16_000_000


def good_log(**changes) -> TrainerLog:
    """A trainer log that agrees with `good_metrics()`."""
    fields = dict(last_step=200, iterations=200, exact_val_bpb=1.23456789, exact_val_loss=3.1,
                  serialized_bytes=15_000_000, code_bytes=50_000, total_bytes=15_050_000)
    fields.update(changes)
    return TrainerLog(**fields)


def good_metrics(**changes) -> dict[str, float]:
    metrics = {"val_bpb": 1.23456789, "total_bytes": 15_050_000.0}
    metrics.update(changes)
    return {k: v for k, v in metrics.items() if v is not None}


def judge(metrics=None, log=None, exit_code=0, timed_out=False, **kw):
    return judge_run(good_metrics() if metrics is None else metrics,
                     good_log() if log is None else log, CAP, exit_code, timed_out, **kw)


# --- judge_run: is the measurement valid? -----------------------------------------------------

JUDGE_TABLE = [
    # (case id, metrics, log, exit_code, timed_out, expected status or None = valid)
    ("valid run", good_metrics(), good_log(), 0, False, None),
    ("crash: non-zero exit", good_metrics(), good_log(), 1, False, "crash"),
    ("crash: non-finite loss exit 3", {}, good_log(nonfinite_loss=True), 3, False, "crash"),
    ("crash: diverged but script exit 0", good_metrics(), good_log(nonfinite_loss=True), 0,
     False, "crash"),
    ("crash: no exit status", good_metrics(), good_log(), None, False, "crash"),
    ("timeout", good_metrics(), good_log(), -15, True, "timeout"),
    ("missing val_bpb", good_metrics(val_bpb=None), good_log(), 0, False, "invalid_metric"),
    ("NaN val_bpb", good_metrics(val_bpb=math.nan), good_log(), 0, False, "invalid_metric"),
    ("inf val_bpb", good_metrics(val_bpb=math.inf), good_log(), 0, False, "invalid_metric"),
    ("missing total_bytes", good_metrics(total_bytes=None), good_log(), 0, False,
     "invalid_metric"),
    ("val_bpb within rounding of the log", good_metrics(val_bpb=1.2346), good_log(), 0, False,
     None),
    ("bpb mismatch", good_metrics(val_bpb=1.2300), good_log(), 0, False, "metric_mismatch"),
    ("bpb claimed, log has no exact line", good_metrics(), good_log(exact_val_bpb=None), 0,
     False, "metric_mismatch"),
    ("bytes mismatch with total line", good_metrics(total_bytes=15_049_999.0), good_log(), 0,
     False, "metric_mismatch"),
    ("bytes mismatch with serialized + code", good_metrics(total_bytes=15_000_000.0),
     good_log(total_bytes=None), 0, False, "metric_mismatch"),
    ("bytes agree with serialized + code", good_metrics(), good_log(total_bytes=None), 0, False,
     None),
    ("bytes claimed, log has no size lines", good_metrics(),
     good_log(serialized_bytes=None, code_bytes=None, total_bytes=None), 0, False,
     "metric_mismatch"),
    ("over cap", good_metrics(total_bytes=16_000_001.0),
     good_log(total_bytes=16_000_001), 0, False, "over_cap"),
    ("exactly at cap", good_metrics(total_bytes=16_000_000.0),
     good_log(total_bytes=16_000_000), 0, False, None),
]


@pytest.mark.parametrize("metrics, log, exit_code, timed_out, expected",
                         [row[1:] for row in JUDGE_TABLE], ids=[row[0] for row in JUDGE_TABLE])
def test_judge_run_table(metrics, log, exit_code, timed_out, expected):
    verdict = judge(metrics, log, exit_code, timed_out)
    assert (verdict.status if verdict else None) == expected
    if verdict is not None:
        assert verdict.reason


def test_timeout_wins_over_the_exit_code_of_the_killed_process():
    assert judge(exit_code=-9, timed_out=True).status == "timeout"


def test_crash_reason_names_the_exit_code():
    assert "code 3" in judge(exit_code=3).reason


def test_mismatch_reason_quotes_both_values():
    reason = judge(good_metrics(val_bpb=1.2)).reason
    assert "1.2" in reason and "1.23456789" in reason


def test_over_cap_reason_quotes_size_and_cap():
    verdict = judge(good_metrics(total_bytes=16_500_000.0), good_log(total_bytes=16_500_000))
    assert "16,500,000" in verdict.reason and "16,000,000" in verdict.reason
    assert verdict.val_bpb == 1.23456789


def test_upstream_log_total_completed_by_trainer_file_size():
    log = good_log(code_bytes=None, total_bytes=None)
    assert judge(log=log, trainer_bytes=50_000) is None
    assert judge(log=log, trainer_bytes=49_000).status == "metric_mismatch"


def test_upstream_log_without_trainer_size_cannot_confirm_bytes():
    log = good_log(code_bytes=None, total_bytes=None)
    assert judge(log=log).status == "metric_mismatch"


def test_over_cap_is_judged_on_the_trusted_log_size():
    # The extractor claims a size under the cap; the trainer's own lines say otherwise.
    verdict = judge(good_metrics(total_bytes=15_000_000.0), good_log(total_bytes=17_000_000))
    assert verdict.status == "metric_mismatch"


# --- compare: the margin -----------------------------------------------------------------------

COMPARE_TABLE = [
    # (case id, val_bpb, incumbent, margin, expected)
    ("improves by more than the margin", 1.2300, 1.2371, 0.002, "keep"),
    ("improves by exactly the margin", 1.0111, 1.0131, 0.002, "keep"),  # float: 0.00199999...78
    ("improves by less than the margin", 1.2360, 1.2371, 0.002, "discard"),
    ("no change", 1.2371, 1.2371, 0.002, "discard"),
    ("worse", 1.2400, 1.2371, 0.002, "discard"),
    ("zero margin, tiny improvement", 1.23709999, 1.2371, 0.0, "keep"),
    ("no incumbent: baseline", 1.2371, None, 0.002, "keep"),
]


@pytest.mark.parametrize("val_bpb, incumbent, m, expected", [row[1:] for row in COMPARE_TABLE],
                         ids=[row[0] for row in COMPARE_TABLE])
def test_compare_table(val_bpb, incumbent, m, expected):
    verdict = compare(val_bpb, incumbent, m)
    assert verdict.status == expected
    assert (verdict.val_bpb, verdict.margin) == (val_bpb, m)


def test_keep_reason_has_the_numbers():
    reason = compare(1.2345, 1.2371, 0.002).reason
    assert reason == "val_bpb 1.2345 vs incumbent 1.2371: improved by 0.0026 >= margin 0.0020"


def test_discard_reason_shows_digits_that_tell_gain_and_margin_apart():
    reason = compare(1.23511, 1.2371, 0.002).reason
    assert "improved by only 0.00199 < margin 0.00200" in reason


def test_worse_reason_says_worse():
    assert "worse by 0.0029" in compare(1.2400, 1.2371, 0.002).reason


def test_baseline_reason_says_it_is_a_baseline():
    assert compare(1.2371, None, 0.002).reason.startswith("baseline")


def test_compare_refuses_an_unknown_score():
    with pytest.raises(ValueError):
        compare(math.nan, 1.2, 0.002)


# --- margin -----------------------------------------------------------------------------------

@pytest.mark.parametrize("min_improvement, k, noise, expected", [
    (0.002, 2.0, None, 0.002),        # noise not measured yet
    (0.002, 2.0, math.nan, 0.002),    # noise unknown
    (0.002, 2.0, 0.0005, 0.002),      # quiet profile: the floor
    (0.002, 2.0, 0.004, 0.008),       # noisy profile: k x noise
])
def test_margin(min_improvement, k, noise, expected):
    assert margin(min_improvement, k, noise) == pytest.approx(expected)


def test_margin_refuses_negative_settings():
    with pytest.raises(ValueError):
        margin(-0.001, 2.0, None)


# --- Verdict ----------------------------------------------------------------------------------

def test_verdict_refuses_an_unknown_status():
    with pytest.raises(ValueError):
        Verdict("kept", "typo")


def test_statuses_are_the_spec_list_plus_the_documented_additions():
    spec = {"keep", "discard", "crash", "timeout", "checks_failed", "over_cap", "forbidden_edit",
            "invalid_metric", "metric_mismatch", "duplicate", "interrupted"}
    assert spec <= set(STATUSES)
    # docs/LEDGER.md "Statuses" documents each addition.
    assert set(STATUSES) - spec == {"agent_failed", "agent_timeout", "agent_no_change",
                                    "agent_touched_git", "protocol_drift", "unjudged",
                                    "inconclusive", "pruned", "over_budget", "seed_ignored"}


def test_the_status_table_marks_spec_statuses_and_documents_every_addition(repo_root):
    from loop.store.statuses import STATUSES as TABLE

    readme = "\n".join(p.read_text() for p in (repo_root / "README.md",
                                                *sorted((repo_root / "docs").glob("*.md"))))
    for name, status in TABLE.items():
        assert status.in_spec == (name in {"keep", "discard", "crash", "timeout",
                                           "checks_failed", "over_cap", "forbidden_edit",
                                           "invalid_metric", "metric_mismatch", "duplicate",
                                           "interrupted"})
        assert status.in_spec or f"`{name}`" in readme, f"README/docs do not document {name}"


def test_a_busy_moment_does_not_make_an_unchanged_trainer_over_budget():
    # the same compute, two of three candidate runs slowed by load (what failed at load 8)
    walls = {"measure": "cpu_s", "candidate": [5.4, 7.0, 7.1], "incumbent": [5.5, 5.3, 5.6]}
    assert budget_verdict(walls, 1.25) is None


def test_a_trainer_slower_at_every_seed_is_over_budget_naming_both_figures():
    walls = {"measure": "cpu_s", "candidate": [8.7, 8.9, 9.4], "incumbent": [5.1, 5.3, 5.0]}
    verdict = budget_verdict(walls, 1.25)
    assert verdict is not None and verdict.status == "over_budget"
    assert "1.74x" in verdict.reason and "8.7 s against 5.0 s" in verdict.reason


def test_unknown_compute_is_over_budget_fail_closed():
    walls = {"measure": "wall_s", "candidate": [None], "incumbent": [3.0]}
    verdict = budget_verdict(walls, 1.25)
    assert verdict is not None and "cannot be checked (fail closed)" in verdict.reason


def test_the_compute_caps_back_to_back_pair_is_run_once_per_candidate_and_rung(tmp_path):
    # the look after the first pair and the decision's end both find the recorded runs over
    # budget: the pair run back to back is measured for the first and reused by the second
    from loop.judge.judge import Judge
    from loop.store.rows import Experiment

    cfg = dataclasses.replace(Config(), judge_enabled=False)
    judge = Judge(cfg, tmp_path, tmp_path, None, "dataset", bench=None)
    exp = Experiment("E0001", "s", "head", "search")
    ran: list[bool] = []

    def seeded(exp, profile, seed, incumbent, rows=None, purpose=""):
        ran.append(incumbent)
        judge._facts[(exp.id, profile, incumbent, seed)] = {
            "compute_s": 5.0 if incumbent else 5.5, "sha256": None}
        return 1.0

    judge._seeded = seeded
    recorded = {"measure": "cpu_s", "candidate": [9.0], "incumbent": [5.0]}  # a busy moment
    assert judge._budget_verdict(exp, "smoke", dict(recorded), "ahead") is None
    walls = dict(recorded)
    assert judge._budget_verdict(exp, "smoke", walls) is None
    assert ran == [True, False]  # one pair, incumbent first
    assert walls["back_to_back"] == {"measure": "cpu_s", "candidate": [5.5],
                                     "incumbent": [5.0]}


def _judge_with_runs(tmp_path, hashes: list[str]):
    """A Judge whose candidate runs at seeds 1337, 1338 wrote artifacts with `hashes`, and a
    stand-in scorer (only whether there is one matters to the seed check)."""
    from loop.judge.judge import Judge
    from loop.store.rows import Experiment

    judge = Judge(dataclasses.replace(Config(), judge_enabled=False), tmp_path, tmp_path, None,
                  "dataset", bench=None)
    judge.scorer = object()
    exp = Experiment("E0001", "s", "head", "search")
    exp.rungs["smoke"] = {"judge": {"artifact_sha256": hashes[0]}}
    judge._facts[("E0001", "smoke", False, 1338)] = {"sha256": hashes[1]}
    return judge, exp


def test_a_candidate_ahead_after_two_seeds_with_one_artifact_stops_seed_ignored(tmp_path):
    from loop.judge.verdict import Decided

    judge, exp = _judge_with_runs(tmp_path, ["aa", "aa"])
    with pytest.raises(Decided) as cut:  # ahead: 3.90 and 3.91 against 3.95 and 3.96
        judge._early_seed(exp, "smoke", [1337, 1338], [(3.90, 3.95), (3.91, 3.96)])
    assert cut.value.verdict.status == "seed_ignored"
    assert cut.value.verdict.reason.startswith("at smoke, after its second pair: ")


def test_the_early_seed_check_leaves_a_candidate_behind_or_following_its_seed_alone(tmp_path):
    judge, exp = _judge_with_runs(tmp_path, ["aa", "aa"])
    judge._early_seed(exp, "smoke", [1337, 1338], [(3.99, 3.95), (3.98, 3.96)])  # behind
    judge, exp = _judge_with_runs(tmp_path, ["aa", "bb"])
    judge._early_seed(exp, "smoke", [1337, 1338], [(3.90, 3.95), (3.91, 3.96)])  # two models
