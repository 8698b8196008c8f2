"""What an agent costs and when to wait (loop.proposers.agentlimits), the idea claim of its
summary file (loop.proposers.claim) and the prompt's evidence (loop.proposers.evidence), on
their own: the output formats of the CLIs, the backoff schedule, the credit rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop.proposers import evidence
from loop.proposers.agentlimits import (
    DEFAULT_RATE_LIMIT_PATTERNS,
    Limits,
    Spend,
    Usage,
    parse_usage,
    rate_limited,
    wait,
)
from loop.proposers.claim import credit, read_summary

# --------------------------------------------------------------------------- usage

CLAUDE_RESULT = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 4,
                 "result": "Changed MATRIX_LR.", "total_cost_usd": 0.1234,
                 "usage": {"input_tokens": 100, "cache_creation_input_tokens": 2000,
                           "cache_read_input_tokens": 30000, "output_tokens": 456}}


def test_claudes_json_result_gives_cost_and_tokens_with_the_cache_counted_as_input():
    usage = parse_usage("some text\n" + json.dumps(CLAUDE_RESULT) + "\n")
    assert usage == Usage(0.1234, 32100, 456)
    assert usage.tokens == 32556


def test_claudes_pretty_printed_result_is_read_too():
    assert parse_usage(json.dumps(CLAUDE_RESULT, indent=2)).cost_usd == 0.1234


def test_codex_completed_turns_are_summed_and_its_cost_is_unknown():
    events = [{"type": "thread.started"},
              {"type": "turn.completed", "usage": {"input_tokens": 1000,
                                                   "cached_input_tokens": 800,
                                                   "output_tokens": 50}},
              {"type": "turn.completed", "usage": {"input_tokens": 500, "output_tokens": 25}}]
    usage = parse_usage("\n".join(json.dumps(e) for e in events))
    assert usage == Usage(None, 1500, 75)


def test_aiders_token_lines_are_summed_and_the_last_session_cost_is_the_total():
    text = ("Tokens: 2.3k sent, 450 received. Cost: $0.02 message, $0.02 session.\n"
            "Applied edit to autoresearch.sh\n"
            "Tokens: 1,200 sent, 50 received. Cost: $0.01 message, $0.03 session.\n")
    assert parse_usage(text) == Usage(0.03, 3500, 500)


def test_output_that_reports_nothing_is_unknown_not_zero():
    assert parse_usage("I changed the warmdown.\n{\"not\": \"usage\"}\n") is None
    assert parse_usage("") is None


# --------------------------------------------------------------------------- rate limits


@pytest.mark.parametrize("text", [
    "API Error: 429 {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\"}}",
    "stream error: exceeded retry limit, last status: 429 Too Many Requests",
    "API Error: 529 Overloaded", "Claude AI usage limit reached|1767225600",
    "litellm.RateLimitError: RATE LIMIT",
])
def test_rate_limit_and_overload_messages_of_the_clis_are_recognised(text):
    assert rate_limited("working...\n" + text + "\n", DEFAULT_RATE_LIMIT_PATTERNS)


def test_a_number_that_only_contains_429_is_not_a_rate_limit():
    assert rate_limited("read 14290 tokens; exit 1: syntax error", DEFAULT_RATE_LIMIT_PATTERNS) \
        is None


def test_only_the_tail_of_the_output_is_searched():
    text = "the docs mention HTTP 429 somewhere\n" + "x" * 10_000 + "\nsyntax error\n"
    assert rate_limited(text, DEFAULT_RATE_LIMIT_PATTERNS) is None


def test_the_patterns_are_configurable():
    assert rate_limited("quota exhausted", ("quota",)) == "quota"
    assert rate_limited("Quota exhausted", ("rate.?limit",)) is None


def test_backoff_doubles_from_backoff_s_up_to_its_cap():
    limits = Limits(backoff_s=10, backoff_max_s=50)
    assert [limits.delay(n) for n in range(5)] == [10, 20, 40, 50, 50]


def test_a_wait_ends_as_soon_as_a_stop_is_requested():
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    assert wait(3600, stop, poll_s=0.01) is False


def test_a_wait_without_a_stop_request_runs_out_true():
    assert wait(0.01, lambda: False, poll_s=0.005) is True


# --------------------------------------------------------------------------- budgets


def test_the_time_budget_is_spent_by_the_summed_agent_time():
    spend = Spend()
    spend.add(40, 0, 0, None)
    assert spend.exhausted(Limits(budget_s=60)) is None
    spend.add(25, 100, 1, None)  # waiting is not agent time
    assert "agent.budget_s spent" in spend.exhausted(Limits(budget_s=60))


def test_a_cost_budget_counts_reported_cost_only_and_unknown_never_spends_it():
    spend = Spend()
    spend.add(1, 0, 0, None)
    assert spend.exhausted(Limits(budget_usd=0.01)) is None
    spend.add(1, 0, 0, Usage(0.5, 10, 10))
    assert "agent.budget_usd spent" in spend.exhausted(Limits(budget_usd=0.4))
    assert "agent.budget_tokens spent" in spend.exhausted(Limits(budget_tokens=20))
    assert spend.unreported == 1


# --------------------------------------------------------------------------- the claim


def test_the_summary_gives_the_description_and_the_idea_line_apart():
    summary = read_summary("Longer warmdown: smoother end.\n\nidea: [i003]\n")
    assert (summary.description, summary.claim) == ("Longer warmdown: smoother end.", "I003")
    assert read_summary("My own trick.\nIdea: own\n").claim == "own"
    assert read_summary("No claim here.\n").claim is None


def test_a_claimed_backlog_idea_gets_the_credit_even_when_another_was_suggested():
    given = credit("I003", "I002", {"I002", "I003"})
    assert given.idea == "I003" and "implemented I003; suggested was I002" in given.note


def test_the_suggested_idea_claimed_needs_no_note():
    assert credit("I002", "I002", {"I002"}).note == ""


def test_own_idea_and_an_unknown_id_credit_no_backlog_idea_with_a_note():
    assert credit("own", "I002", {"I002"}).idea is None
    unknown = credit("I999", "I002", {"I002"})
    assert unknown.idea is None and "I999, which is not in the backlog" in unknown.note


def test_no_claim_credits_the_suggested_idea_saying_the_agent_did_not_say():
    given = credit(None, "I002", {"I002"})
    assert given.idea == "I002" and "the agent did not say" in given.note


# --------------------------------------------------------------------------- evidence

LOG = """step:1/30 train_loss:6.9303 train_time:138ms step_avg:137.68ms tok_s:14876
step:2/30 train_loss:7.1622 train_time:289ms step_avg:144.42ms tok_s:13557
step:5/30 train_loss:6.6044 train_time:772ms step_avg:154.41ms tok_s:18032
step:10/30 train_loss:4.8207 train_time:1310ms step_avg:130.97ms tok_s:19023
step:15/30 train_loss:5.9000 train_time:1800ms step_avg:120.00ms tok_s:19023
step:20/30 train_loss:5.7066 train_time:2393ms step_avg:119.66ms tok_s:19287
step:30/30 train_loss:5.6099 train_time:3468ms step_avg:115.61ms tok_s:18993
step:30/30 val_loss:5.2933 val_bpb:3.3726 train_time:3468ms step_avg:115.61ms
final_int8_zlib_roundtrip_exact val_loss:5.29330000 val_bpb:3.37300000
"""


def run_row(exp_id: str, status: str, log: str | None, **rung) -> dict:
    return {"type": "experiment", "id": exp_id, "session": "s", "status": status,
            "rungs": {"smoke": {"log": log, **rung}}}


def test_the_runs_evidence_has_curve_step_time_gap_and_headroom(tmp_path: Path):
    (tmp_path / "E0001.log").write_text(LOG)
    rows = [run_row("E0001", "keep", "E0001.log", val_bpb=3.899,
                    judge={"total_bytes": {"total": 282_520}}, total_bytes=1)]
    text = evidence.runs_section(rows, tmp_path, 16_000_000)
    assert text.startswith("- E0001 incumbent, keep at smoke: val_bpb 3.8990")
    assert "train_loss 6.930@1 7.162@2 6.604@5 5.900@15 5.707@20 5.610@30" in text
    assert "step 115.6 ms" in text and "roundtrip gap +0.00040" in text
    assert "headroom 15,717,480 bytes (1.8% of the cap used)" in text


def test_evidence_without_a_log_says_unknown_and_uses_the_rows_claims(tmp_path: Path):
    rows = [run_row("E0002", "discard", "missing.log", val_bpb=1.5, step_ms=10.0)]
    text = evidence.runs_section(rows, tmp_path, 16_000_000)
    assert "train_loss unknown" in text and "step 10.0 ms" in text
    assert "roundtrip gap unknown" in text and "headroom unknown" in text


def test_evidence_shows_the_incumbent_and_only_the_last_few_runs(tmp_path: Path):
    rows = [run_row("E0001", "keep", None, val_bpb=2.0)]
    rows += [run_row(f"E{n:04d}", "discard", None, val_bpb=2.1) for n in range(2, 10)]
    text = evidence.runs_section(rows, tmp_path, 16_000_000, last=3)
    assert [line.split()[1] for line in text.splitlines()] == ["E0001", "E0007", "E0008",
                                                               "E0009"]


FAMILIES = {"I001": "Schedule", "I002": "Schedule", "I003": "Schedule", "I004": "Model"}


def tried(exp_id: str, idea: str, status: str) -> dict:
    return {"type": "experiment", "id": exp_id, "idea": idea, "status": status}


def test_a_family_is_rotated_away_after_n_losses_in_a_row():
    rows = [tried("E1", "I001", "discard"), tried("E2", "I002", "crash"),
            tried("E3", "I004", "discard"), tried("E4", "I003", "discard")]
    assert evidence.rotated_families(rows, FAMILIES, 3) == {"Schedule"}
    assert evidence.rotated_families(rows, FAMILIES, 4) == set()
    assert evidence.rotated_families(rows, FAMILIES, 0) == set()


def test_a_keep_resets_the_streak_and_untested_outcomes_do_not_count():
    rows = [tried("E1", "I001", "discard"), tried("E2", "I002", "keep"),
            tried("E3", "I003", "discard"), tried("E4", "I003", "agent_failed"),
            tried("E5", "I003", "forbidden_edit")]
    assert evidence.loss_streaks(rows, FAMILIES) == {"Schedule": 1}


def test_the_family_section_tallies_and_names_the_rotation():
    rows = [tried("E1", "I001", "discard"), tried("E2", "I002", "discard"),
            tried("E3", None, "keep")]
    text = evidence.family_section(rows, FAMILIES, 2)
    assert "- Schedule: 2 tested, 0 kept; last: E1 discard, E2 discard; 2 losses in a row: " \
        "rotate away" in text
    assert "- Model: nothing tested yet" in text
    assert "own ideas): 1 tested, 1 kept" in text
