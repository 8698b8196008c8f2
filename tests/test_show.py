"""`autogolf show ID`: a morning you can act on (loop/ui/show.py). Every number says what
measured it and on which tokens, no raw dict is printed, a field that does not apply is left
out, and a keep comes with the command that takes it, its step-time change, its fresh-seed
estimate and the next ideas of its family."""

from __future__ import annotations

import dataclasses

import pytest
from scheduler_helpers import Scripted, candidates, cli, commit_files, load_config, run_daemon

from loop.daemon import scheduler
from loop.ui import show

BACKLOG = """# Ideas

## Rates

- [I001] (untried) Higher LR. The short run may want a faster start.
  knobs: LR=0.06
- [I002] (untried) Lower LR.
  knobs: LR=0.03

## Other

- [I003] (untried) Something else.
  knobs: BONUS_CONFIRM=0.1
"""
SEEDED = "LR=0.04\nSEED_SD=0.02\nSEED_X=0.004\nBONUS_BREADTH=0\n"


def sequential_keep(repo) -> dict:
    """A sequential-rule keep of an LR change at breadth, with a backlog in the checkout."""
    commit_files(repo, {"knobs.sh": SEEDED, "autoresearch.ideas.md": BACKLOG})
    cfg = dataclasses.replace(load_config(repo / "autogolf.yaml"), ladder=("breadth",),
                              keep_rule_enabled=True)
    rules = scheduler.StopRules(max_experiments=1, max_consecutive_failures=0)
    scheduler.Scheduler(repo, cfg, rules, proposer=Scripted(
        {"LR": 0.041, "SEED_SD": 0.02, "SEED_X": 0.004, "BONUS_BREADTH": 0.05}),
        out=lambda s: None).run()
    [row] = candidates(repo)
    assert row["status"] == "keep"
    return row


def shown(repo, exp_id: str) -> str:
    done = cli(repo, "show", exp_id)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_keep_says_how_to_take_it_into_your_branch(repo):
    row = sequential_keep(repo)
    text = shown(repo, row["id"])
    assert f"git cherry-pick {row['commit'][:10]}" in text
    assert f"git merge autogolf/{row['session']}" in text


def test_a_keep_shows_its_step_time_against_the_incumbent(repo):
    row = sequential_keep(repo)
    assert "step time at breadth: 10.0 ms vs the incumbent's 10.0 ms (E0001): +0.0%" in shown(
        repo, row["id"])


def test_a_keep_shows_its_fresh_seed_estimate(repo):
    row = sequential_keep(repo)
    text = shown(repo, row["id"])
    assert "fresh-seed estimate at breadth:" in text and "is optimistic" in text
    assert "not re-measured yet" in text


def test_a_keep_lists_the_next_untried_ideas_of_its_family(repo):
    row = sequential_keep(repo)
    text = shown(repo, row["id"])
    assert "next ideas in its family (Rates):" in text
    assert "[I001] Higher LR." in text and "[I002] Lower LR." in text
    assert "[I003]" not in text


def test_under_the_sequential_rule_no_margin_is_shown(repo):
    row = sequential_keep(repo)
    text = shown(repo, row["id"])
    assert "margin" not in text
    assert "sequential rule:" in text and "paired run(s) at seeds 1337-" in text


def test_under_the_margin_rule_the_margin_is_shown_and_explained(repo):
    run_daemon(repo, {"BONUS_BREADTH": 0.01, "BONUS_CONFIRM": 0.01})
    text = shown(repo, candidates(repo)[0]["id"])
    assert "margin:" in text and "max(min_improvement, k x noise)" in text


def test_show_prints_no_raw_dict_or_list(repo):
    row = sequential_keep(repo)
    before_diff = shown(repo, row["id"]).split("\ndiff (")[0]
    assert "{'" not in before_diff and "['" not in before_diff


JUDGED_RUNG = {
    "val_bpb": 3.8431, "printed_val_bpb": 3.2082, "step_ms": 163.6, "train_steps": 30.0,
    "delta_bpb_roundtrip": -0.0000451, "wall_s": 8.4, "exit_code": 0, "timed_out": False,
    "log": ".autogolf/experiments/E0002/bench-smoke.log",
    "judge": {"holdout": {"tokens": 16384, "trainer_slice": [0, 16385]},
              "scores": {"holdout": {"val_bpb": 3.8431}}},
    "protocol": {"seed": "1337", "tokenizer": "f" * 64, "iterations": "30"},
}


def test_the_judges_score_says_it_is_on_held_out_validation_tokens():
    lines = show.rung_lines({"rungs": {"smoke": JUDGED_RUNG}})
    assert ("  the judge's score:  val_bpb 3.8431 on 16,384 held-out tokens, the front of the "
            "validation split, never given to the trainer") in lines


def test_the_trainers_printout_says_it_is_on_train_split_tokens():
    text = "\n".join(show.rung_lines({"rungs": {"smoke": JUDGED_RUNG}}))
    assert ("trainer's printout: val_bpb 3.2082 on its printout slice, the first 16,385 tokens "
            "of the train split") in text


@pytest.mark.parametrize(("name", "expected"), [
    ("train_steps", "training steps done"), ("step_ms", "step time, ms (trainer's step_avg)")])
def test_every_number_in_the_table_is_labelled(name, expected):
    text = "\n".join(show.rung_lines({"rungs": {"smoke": JUDGED_RUNG}}))
    assert expected in text and f"  {name} " not in text


def test_whole_numbers_read_as_whole_and_tiny_ones_are_not_rounded_to_zero():
    text = "\n".join(show.rung_lines({"rungs": {"smoke": JUDGED_RUNG}}))
    assert "30.0000" not in text and "-4.5e-05" in text


def test_the_protocol_is_one_readable_line_with_hashes_shortened():
    text = "\n".join(show.rung_lines({"rungs": {"smoke": JUDGED_RUNG}}))
    assert "protocol at smoke (as the trainer printed it): seed 1337, tokenizer ffffffffffff..." \
        in text


def test_the_incumbent_is_found_by_its_code_across_the_backlogs_bookkeeping_commits():
    keep = {"type": "experiment", "id": "E0002", "session": "s", "status": "keep",
            "commit": "c2", "code": "tree2", "rungs": {"breadth": {"step_ms": 10.0}}}
    after = {"type": "experiment", "id": "E0003", "session": "s", "status": "keep",
             "base_commit": "c2-bookkeeping", "base_code": "tree2", "commit": "c3",
             "rungs": {"breadth": {"step_ms": 12.0}}}
    assert show.incumbent_row(after, [keep, after], "breadth") is keep
