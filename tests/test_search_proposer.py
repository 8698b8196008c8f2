"""The `search` proposer: knob files, bounds, no repeats, learning, exhaustion, determinism."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from loop.proposers import Proposal, Proposer
from loop.proposers.search import (
    Knob,
    KnobError,
    SearchProposer,
    canonical,
    read_knobs,
    step_value,
    write_knob,
)

SCRIPT = """#!/usr/bin/env bash
# research knobs
MATRIX_LR=0.04
WARMDOWN_ITERS=100
export MATRIX_LR WARMDOWN_ITERS
PROFILE_MATRIX_LR=9
"""
TRAINER = """import os

QK_GAIN_INIT = 1.5  # query/key gain
def f():
    QK_GAIN_INIT = 7
"""

MATRIX_LR = Knob("MATRIX_LR", "autoresearch.sh", "env", "float", 0.001, 0.2, "log")
WARMDOWN = Knob("WARMDOWN_ITERS", "autoresearch.sh", "env", "int", 10, 1000, "linear")
QK_GAIN = Knob("QK_GAIN_INIT", "benchmark/train_gpt_mlx.py", "const", "float", 0.5, 3.0)
KNOBS = [MATRIX_LR, WARMDOWN, QK_GAIN]


def reset(tree: Path) -> Path:
    """The knob files at their starting values (0.04, 100, 1.5)."""
    (tree / "autoresearch.sh").write_text(SCRIPT)
    (tree / "benchmark").mkdir(exist_ok=True)
    (tree / "benchmark" / "train_gpt_mlx.py").write_text(TRAINER)
    return tree


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    reset(tmp_path)
    (tmp_path / "autoresearch.sh").chmod(0o755)
    return tmp_path


def baseline_row(config: dict) -> dict:
    return {"type": "experiment", "knobs": dict(config), "status": "keep", "baseline": True}


# --- Knob declarations -------------------------------------------------------------------------

@pytest.mark.parametrize("changes, words", [
    ({"name": "MATRIX-LR"}, "identifier"),
    ({"file": "/etc/passwd"}, "inside the worktree"),
    ({"file": "../outside.sh"}, "inside the worktree"),
    ({"kind": "yaml"}, "kind"),
    ({"type": "str"}, "type"),
    ({"scale": "exp"}, "scale"),
    ({"low": 0.5, "high": 0.1}, "below high"),
    ({"low": 0.0}, "low > 0"),
    ({"type": "int", "low": 1.5, "high": 10}, "whole bounds"),
])
def test_bad_knob_declarations_are_refused_naming_the_knob(changes, words):
    fields = dict(name="MATRIX_LR", file="autoresearch.sh", kind="env", type="float",
                  low=0.001, high=0.2, scale="log")
    fields.update(changes)
    with pytest.raises(KnobError, match=words) as err:
        Knob(**fields)
    assert repr(fields["name"]) in str(err.value)


# --- reading and writing ---------------------------------------------------------------------

def test_read_knobs_from_shell_and_python(worktree):
    assert read_knobs(worktree, KNOBS) == {"MATRIX_LR": 0.04, "WARMDOWN_ITERS": 100,
                                           "QK_GAIN_INIT": 1.5}


def test_int_knob_reads_as_int(worktree):
    assert type(read_knobs(worktree, [WARMDOWN])["WARMDOWN_ITERS"]) is int


def test_write_env_knob_changes_only_its_value(worktree):
    write_knob(worktree, MATRIX_LR, 0.05)
    assert (worktree / "autoresearch.sh").read_text() == SCRIPT.replace("MATRIX_LR=0.04",
                                                                        "MATRIX_LR=0.05")


def test_write_const_knob_keeps_the_comment(worktree):
    write_knob(worktree, QK_GAIN, 2.0)
    text = (worktree / "benchmark" / "train_gpt_mlx.py").read_text()
    assert "QK_GAIN_INIT = 2.0  # query/key gain\n" in text
    assert "    QK_GAIN_INIT = 7\n" in text  # the indented (non-module-level) line is untouched


def test_write_keeps_the_executable_bit(worktree):
    write_knob(worktree, WARMDOWN, 200)
    assert (worktree / "autoresearch.sh").stat().st_mode & 0o777 == 0o755


def test_write_keeps_windows_line_endings(worktree):
    path = worktree / "autoresearch.sh"
    path.write_bytes(b"MATRIX_LR=0.04\r\nX=1\r\n")
    write_knob(worktree, MATRIX_LR, 0.032)
    assert path.read_bytes() == b"MATRIX_LR=0.032\r\nX=1\r\n"


@pytest.mark.parametrize("line, written", [
    ('MATRIX_LR="0.04"', 'MATRIX_LR="0.05"'),
    ("MATRIX_LR=${MATRIX_LR:-0.04}", "MATRIX_LR=${MATRIX_LR:-0.05}"),
    ("MATRIX_LR=0.04  # Muon LR", "MATRIX_LR=0.05  # Muon LR"),
])
def test_env_knob_line_forms_round_trip(worktree, line, written):
    path = worktree / "autoresearch.sh"
    path.write_text(line + "\n")
    assert read_knobs(worktree, [MATRIX_LR]) == {"MATRIX_LR": 0.04}
    write_knob(worktree, MATRIX_LR, 0.05)
    assert path.read_text() == written + "\n"


def test_annotated_constant_is_a_knob(worktree):
    path = worktree / "benchmark" / "train_gpt_mlx.py"
    path.write_text("QK_GAIN_INIT: float = 1.5\n")
    assert read_knobs(worktree, [QK_GAIN]) == {"QK_GAIN_INIT": 1.5}


def test_missing_knob_line_names_file_and_knob(worktree):
    (worktree / "autoresearch.sh").write_text("export MATRIX_LR=0.04\n")
    with pytest.raises(KnobError, match=r"autoresearch\.sh.*MATRIX_LR"):
        read_knobs(worktree, [MATRIX_LR])


def test_knob_assigned_twice_names_file_knob_and_lines(worktree):
    (worktree / "autoresearch.sh").write_text("MATRIX_LR=0.04\necho\nMATRIX_LR=0.05\n")
    with pytest.raises(KnobError, match=r"autoresearch\.sh.*MATRIX_LR.*lines 1, 3"):
        read_knobs(worktree, [MATRIX_LR])


def test_non_literal_value_is_refused(worktree):
    path = worktree / "benchmark" / "train_gpt_mlx.py"
    path.write_text('QK_GAIN_INIT = float(os.environ.get("QK", "1.5"))\n')
    with pytest.raises(KnobError, match=r"train_gpt_mlx\.py:1: knob QK_GAIN_INIT"):
        read_knobs(worktree, [QK_GAIN])


def test_fractional_value_for_int_knob_is_refused(worktree):
    (worktree / "autoresearch.sh").write_text("WARMDOWN_ITERS=12.5\n")
    with pytest.raises(KnobError, match="WARMDOWN_ITERS"):
        read_knobs(worktree, [WARMDOWN])


def test_missing_file_names_file_and_knob(tmp_path):
    with pytest.raises(KnobError, match=r"autoresearch\.sh.*MATRIX_LR"):
        read_knobs(tmp_path, [MATRIX_LR])


# --- steps ------------------------------------------------------------------------------------

def test_log_step_multiplies_and_divides():
    assert step_value(MATRIX_LR, 0.04, +1, 0) == 0.05
    assert step_value(MATRIX_LR, 0.04, -1, 0) == 0.032


def test_linear_step_is_a_fraction_of_the_range():
    assert step_value(QK_GAIN, 1.5, +1, 0) == 1.62   # 5% of 2.5 = 0.125, three digits


def test_int_step_moves_at_least_one():
    small = Knob("LAYERS", "f.py", "const", "int", 1, 12, "log")
    assert step_value(small, 2, +1, 0) == 3
    assert step_value(small, 2, -1, 0) == 1


def test_step_is_clamped_and_none_at_the_bound():
    assert step_value(MATRIX_LR, 0.19, +1, 0) == 0.2
    assert step_value(MATRIX_LR, 0.2, +1, 0) is None


def test_canonical_form_merges_float_noise():
    assert canonical(0.1 + 0.2) == canonical(0.3)


# --- proposing -------------------------------------------------------------------------------

def test_search_proposer_is_a_proposer():
    assert isinstance(SearchProposer(KNOBS, seed=0), Proposer)


def test_proposal_writes_the_worktree_and_describes_the_move(worktree):
    proposal = SearchProposer(KNOBS, seed=0).propose(worktree, [])
    assert isinstance(proposal, Proposal)
    assert read_knobs(worktree, KNOBS) == proposal.knobs
    for part in proposal.description.split(", "):
        name, old, arrow, new = part.split()
        assert arrow == "->" and old != new
        assert float(new) == proposal.knobs[name]


def test_description_uses_the_file_form_of_values(worktree):
    for seed in range(30):
        (worktree / "autoresearch.sh").write_text(SCRIPT)
        proposal = SearchProposer([MATRIX_LR], seed=seed).propose(worktree, [])
        assert proposal.description in ("MATRIX_LR 0.04 -> 0.05", "MATRIX_LR 0.04 -> 0.032")


def test_same_seed_and_history_give_the_same_proposal(tmp_path):
    results = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        tree = reset(tmp_path / run)
        history = [baseline_row({"MATRIX_LR": 0.04, "WARMDOWN_ITERS": 100, "QK_GAIN_INIT": 1.5})]
        results.append(SearchProposer(KNOBS, seed=7).propose(tree, history))
    assert results[0] == results[1]


def simulate(worktree: Path, proposer: SearchProposer, objective, steps: int,
             outcome_rng: random.Random | None = None):
    """A fake daemon: measure, keep if strictly better (or by coin when `outcome_rng`),
    else restore the incumbent's values."""
    incumbent = read_knobs(worktree, KNOBS)
    history = [baseline_row(incumbent)]
    proposals = []
    for _ in range(steps):
        proposal = proposer.propose(worktree, history)
        if proposal is None:
            break
        proposals.append(proposal)
        if outcome_rng is not None:
            keep = outcome_rng.random() < 0.3
        else:
            keep = objective(proposal.knobs) < objective(incumbent)
        history.append({"type": "experiment", "knobs": proposal.knobs,
                        "status": "keep" if keep else "discard"})
        if keep:
            incumbent = proposal.knobs
        else:
            for knob in KNOBS:
                write_knob(worktree, knob, incumbent[knob.name])
    return proposals, history, incumbent


def test_never_repeats_a_configuration_across_50_proposals(worktree):
    proposals, history, _ = simulate(worktree, SearchProposer(KNOBS, seed=3), None, 50,
                                     outcome_rng=random.Random(11))
    assert len(proposals) == 50
    keys = [tuple(canonical(row["knobs"][k.name]) for k in KNOBS) for row in history]
    assert len(keys) == len(set(keys))


def test_never_proposes_a_configuration_of_a_duplicate_row(worktree):
    proposer = SearchProposer([MATRIX_LR], seed=0)
    history = [{"type": "experiment", "knobs": {"MATRIX_LR": 0.05}, "status": "duplicate"},
               {"type": "experiment", "knobs": {"MATRIX_LR": 0.032}, "status": "crash"}]
    assert proposer.propose(worktree, history).knobs["MATRIX_LR"] in (0.06, 0.0267)


def test_proposals_respect_the_bounds(worktree):
    proposals, _, _ = simulate(worktree, SearchProposer(KNOBS, seed=5), None, 50,
                               outcome_rng=random.Random(2))
    for proposal in proposals:
        for knob in KNOBS:
            assert knob.low <= proposal.knobs[knob.name] <= knob.high


def test_int_knobs_are_proposed_as_ints(worktree):
    proposals, _, _ = simulate(worktree, SearchProposer(KNOBS, seed=1), None, 20,
                               outcome_rng=random.Random(4))
    assert all(type(p.knobs["WARMDOWN_ITERS"]) is int for p in proposals)


def test_returns_none_when_no_unmeasured_neighbour_is_left(worktree):
    tiny = Knob("WARMDOWN_ITERS", "autoresearch.sh", "env", "int", 99, 101, "linear")
    proposer = SearchProposer([tiny], seed=0)
    history = [baseline_row({"WARMDOWN_ITERS": 100})]
    seen = set()
    for _ in range(2):
        proposal = proposer.propose(worktree, history)
        seen.add(proposal.knobs["WARMDOWN_ITERS"])
        history.append({"type": "experiment", "knobs": proposal.knobs, "status": "discard"})
        write_knob(worktree, tiny, 100)
    assert seen == {99, 101}
    assert proposer.propose(worktree, history) is None
    assert read_knobs(worktree, [tiny]) == {"WARMDOWN_ITERS": 100}  # nothing written


def lower_lr_is_better(config: dict) -> float:
    return config["MATRIX_LR"]  # the other knobs have no effect


@pytest.mark.parametrize("seed", range(5))
def test_keeps_trend_down_when_lower_matrix_lr_is_better(worktree, seed):
    proposals, history, incumbent = simulate(worktree, SearchProposer(KNOBS, seed=seed),
                                             lower_lr_is_better, 20)
    kept = [row["knobs"]["MATRIX_LR"] for row in history if row["status"] == "keep"]
    assert kept == sorted(kept, reverse=True)
    # With direction weights disabled, 3 to 8 of 20 proposals lowered MATRIX_LR (seeds 0-9);
    # continuing the direction of each keep makes it 13 to 17.
    assert len(kept) - 1 >= 10
    assert incumbent["MATRIX_LR"] < 0.04 / 4


def test_prefers_continuing_the_direction_of_the_last_keep(worktree):
    write_knob(worktree, MATRIX_LR, 0.032)
    history = [baseline_row({"MATRIX_LR": 0.04, "WARMDOWN_ITERS": 100, "QK_GAIN_INIT": 1.5}),
               {"type": "experiment", "status": "keep",
                "knobs": {"MATRIX_LR": 0.032, "WARMDOWN_ITERS": 100, "QK_GAIN_INIT": 1.5}}]
    downs = 0
    for seed in range(20):
        write_knob(worktree, MATRIX_LR, 0.032)
        write_knob(worktree, WARMDOWN, 100)
        write_knob(worktree, QK_GAIN, 1.5)
        proposal = SearchProposer(KNOBS, seed=seed).propose(worktree, history)
        downs += proposal.knobs["MATRIX_LR"] < 0.032
    assert downs >= 10  # 1 in 6 without learning (six directions)


def test_avoids_a_direction_that_lost_twice_from_this_incumbent(worktree):
    base = {"MATRIX_LR": 0.04, "WARMDOWN_ITERS": 100, "QK_GAIN_INIT": 1.5}
    history = [baseline_row(base),
               {"type": "experiment", "status": "discard", "knobs": {**base, "MATRIX_LR": 0.032}},
               {"type": "experiment", "status": "discard", "knobs": {**base, "MATRIX_LR": 0.0267}}]
    downs = 0
    for seed in range(20):
        proposal = SearchProposer(KNOBS, seed=seed).propose(reset(worktree), history)
        downs += proposal.knobs["MATRIX_LR"] < 0.04
    assert downs <= 1  # about 3 in 20 without learning


def test_sometimes_moves_two_knobs(worktree):
    pairs = 0
    for seed in range(40):
        proposal = SearchProposer(KNOBS, seed=seed).propose(reset(worktree), [])
        pairs += ", " in proposal.description
    assert 1 <= pairs <= 15


def test_rows_of_other_types_and_without_knobs_are_ignored(worktree):
    history = [{"type": "session", "session": "s"}, {"type": "experiment", "knobs": None,
                                                     "status": "keep"}, {"type": "stop"}]
    assert SearchProposer(KNOBS, seed=0).propose(worktree, history) is not None


def test_duplicate_knob_names_are_refused():
    with pytest.raises(KnobError, match="unique"):
        SearchProposer([MATRIX_LR, MATRIX_LR], seed=0)


def test_a_kept_code_change_without_knobs_makes_old_configurations_new_again(worktree):
    # After an agent's kept edit of the trainer, MATRIX_LR=0.05 on the new code is unmeasured.
    history = [{"type": "experiment", "knobs": {"MATRIX_LR": 0.05}, "status": "discard"},
               {"type": "experiment", "knobs": {"MATRIX_LR": 0.032}, "status": "discard"},
               {"type": "experiment", "knobs": None, "status": "keep", "proposer": "agent"}]
    proposer = SearchProposer([MATRIX_LR], seed=0)
    assert proposer.propose(worktree, history).knobs["MATRIX_LR"] in (0.05, 0.032)


# --- steps and model shape ----------------------------------------------------------------------

DIM = Knob("MODEL_DIM", "autoresearch.sh", "env", "int", 256, 768, "linear", 64)
LAYERS = Knob("NUM_LAYERS", "autoresearch.sh", "env", "int", 4, 14, "linear")


def test_a_stepped_knob_moves_along_its_grid():
    assert step_value(DIM, 512, +1, 0) == 576   # 5% of the range rounds to one step of 64
    assert step_value(DIM, 512, -1, 2) == 384   # 20% = 102 -> two steps


def test_a_value_off_the_grid_is_refused():
    with pytest.raises(KnobError, match="multiple of step"):
        DIM.coerce(500)


def test_local_search_never_moves_the_shape_over_the_cap(tmp_path):
    from loop.proposers.shape import SizeModel, shape_of

    (tmp_path / "autoresearch.sh").write_text("NUM_LAYERS=9\nMODEL_DIM=512\n")
    cap = SizeModel().predict(shape_of({"NUM_LAYERS": 9, "MODEL_DIM": 512}, {}))
    p = SearchProposer([LAYERS, DIM], seed=0, cap_bytes=cap)
    history = [baseline_row({"NUM_LAYERS": 9, "MODEL_DIM": 512})]
    proposed = 0
    for _ in range(8):  # 9 -> 10 layers alone does not fit; with a narrower model it may
        proposal = p.propose(tmp_path, history)
        if proposal is None:
            break  # every neighbour that fits was measured
        proposed += 1
        config = proposal.knobs
        assert SizeModel().predict(shape_of(config, {})) <= cap, proposal.description
        history.append({"type": "experiment", "knobs": config, "status": "discard"})
        (tmp_path / "autoresearch.sh").write_text("NUM_LAYERS=9\nMODEL_DIM=512\n")
    assert proposed >= 2


def test_local_search_never_moves_a_knob_the_first_rungs_profile_overrides(tmp_path):
    (tmp_path / "autoresearch.sh").write_text(
        "MATRIX_LR=0.04\nNUM_LAYERS=9\nMODEL_DIM=512\ncase \"$PROFILE\" in\n  smoke)\n"
        "    NUM_LAYERS=2\n    MODEL_DIM=64\n    ;;\nesac\n")
    p = SearchProposer([MATRIX_LR, LAYERS, DIM], seed=0, profile="smoke")
    for n in range(6):
        proposal = p.propose(tmp_path, [baseline_row({"MATRIX_LR": 0.04, "NUM_LAYERS": 9,
                                                      "MODEL_DIM": 512})] * (n + 1))
        assert proposal is not None and proposal.description.startswith("MATRIX_LR")
