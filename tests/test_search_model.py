"""The `search` proposer's Optuna strategies (tpe, random): the study, its trials, the
artifact-size prediction, and several daemons on one storage."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from loop.proposers import Proposer
from loop.proposers.optuna_search import (
    ModelSearchProposer,
    SearchStorageError,
    default_storage,
    open_storage,
)
from loop.proposers.search import Knob, KnobError, config_key, read_knobs
from loop.proposers.shape import (
    SizeModel,
    parameter_count,
    shape_of,
    shape_problem,
    size_model,
)

HERE = Path(__file__).parent
SCRIPT = "MATRIX_LR=0.04\nWARMDOWN_FRAC=0.2\nNUM_LAYERS=9\nMODEL_DIM=512\nNUM_HEADS=8\n" \
         "NUM_KV_HEADS=4\nMLP_MULT=2\n"
MATRIX_LR = Knob("MATRIX_LR", "autoresearch.sh", "env", "float", 0.005, 0.2, "log")
WARMDOWN = Knob("WARMDOWN_FRAC", "autoresearch.sh", "env", "float", 0.05, 0.6)
LAYERS = Knob("NUM_LAYERS", "autoresearch.sh", "env", "int", 4, 14)
DIM = Knob("MODEL_DIM", "autoresearch.sh", "env", "int", 256, 768, "linear", 64)
KV = Knob("NUM_KV_HEADS", "autoresearch.sh", "env", "int", 1, 8, "log")
RATES = [MATRIX_LR, WARMDOWN]
PROTOCOL = {"seed": "1337", "val_tokens": "16384", "iterations": "30"}
START = {"MATRIX_LR": 0.04, "WARMDOWN_FRAC": 0.2, "NUM_LAYERS": 9, "MODEL_DIM": 512,
         "NUM_KV_HEADS": 4}


@pytest.fixture
def worktree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "autoresearch.sh").write_text(SCRIPT)
    return tree


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return default_storage(tmp_path / ".autogolf")


def proposer(storage: str, knobs=RATES, strategy="tpe", ladder=("smoke",), cap=16_000_000,
             seed=0) -> ModelSearchProposer:
    return ModelSearchProposer(list(knobs), strategy=strategy, storage=storage, ladder=ladder,
                               cap_bytes=cap, seed=seed)


def row(n: int, knobs: dict, val_bpb: float | None, status: str = "discard", *,
        baseline: bool = False, profile: str = "smoke", dataset: str = "sample",
        protocol: dict | None = None, **rung: object) -> dict:
    figures = {"protocol": dict(protocol or PROTOCOL), **rung}
    if val_bpb is not None:
        figures["val_bpb"] = val_bpb
    return {"type": "experiment", "id": f"E{n:04d}", "session": "s1", "timestamp": f"t{n}",
            "knobs": dict(knobs), "status": status, "baseline": baseline, "dataset": dataset,
            "rungs": {profile: figures}}


def baseline(knobs=None, val_bpb: float = 2.0, **kw: object) -> dict:
    return row(1, {k: v for k, v in (knobs or START).items()}, val_bpb, "keep", baseline=True,
               **kw)


def trials(storage: str, profile: str = "smoke", dataset: str = "sample") -> list:
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)
             if f":{dataset}:{profile}:" in s.study_name]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage).get_trials()


# --- proposing ----------------------------------------------------------------------------------

def test_model_search_proposer_is_a_proposer(storage):
    assert isinstance(proposer(storage), Proposer)


def test_proposal_moves_some_knobs_from_the_incumbent_and_writes_them(worktree, storage):
    proposal = proposer(storage).propose(worktree, [baseline()])
    written = read_knobs(worktree, RATES)
    assert proposal.knobs == written
    moved = [k for k in written if written[k] != START[k]]
    assert 1 <= len(moved) <= 2 and proposal.description.startswith(moved[0])


def test_unmoved_knobs_keep_the_incumbents_exact_values(worktree, storage):
    knobs = [MATRIX_LR, WARMDOWN, Knob("BETA2", "autoresearch.sh", "env", "float", 0.9, 0.999)]
    (worktree / "autoresearch.sh").write_text(SCRIPT + "BETA2=0.95\n")
    start = read_knobs(worktree, knobs)
    p = proposer(storage, knobs)
    for n in range(8):
        proposal = p.propose(worktree, [baseline(start)])
        same = [k for k in start if proposal.knobs[k] == start[k]]
        assert len(same) >= len(knobs) - 3, n
        (worktree / "autoresearch.sh").write_text(SCRIPT + "BETA2=0.95\n")


def test_proposed_floats_have_three_significant_digits(worktree, storage):
    proposal = proposer(storage).propose(worktree, [baseline()])
    for value in proposal.knobs.values():
        assert float(f"{value:.3g}") == value


def test_never_proposes_a_measured_configuration(worktree, storage):
    layers = Knob("NUM_LAYERS", "autoresearch.sh", "env", "int", 8, 11)  # 8, 9, 10, 11
    history = [baseline({"NUM_LAYERS": 9}), row(2, {"NUM_LAYERS": 8}, 2.1),
               row(3, {"NUM_LAYERS": 10}, 2.2)]
    proposal = proposer(storage, [layers], cap=10**9).propose(worktree, history)
    assert proposal.knobs == {"NUM_LAYERS": 11}


def test_returns_none_when_every_configuration_was_measured(worktree, storage):
    layers = Knob("NUM_LAYERS", "autoresearch.sh", "env", "int", 8, 10)
    history = [baseline({"NUM_LAYERS": 9}), row(2, {"NUM_LAYERS": 8}, 2.1),
               row(3, {"NUM_LAYERS": 10}, 2.2)]
    assert proposer(storage, [layers], cap=10**9).propose(worktree, history) is None


def test_random_strategy_proposes_too(worktree, storage):
    proposal = proposer(storage, strategy="random").propose(worktree, [baseline()])
    assert proposal is not None and "(random)" in proposal.description


def test_same_seed_and_history_give_the_same_proposal(tmp_path):
    proposals = []
    for i in range(2):
        tree = tmp_path / f"t{i}"
        tree.mkdir()
        (tree / "autoresearch.sh").write_text(SCRIPT)
        p = proposer(default_storage(tmp_path / f"home{i}"), seed=3)
        proposals.append(p.propose(tree, [baseline()]).knobs)
    assert proposals[0] == proposals[1]


def test_tpe_moves_toward_the_better_region_after_warm_start(worktree, storage):
    # A history where a higher MATRIX_LR was always better: TPE should propose above 0.04.
    history = [baseline()]
    for n, lr in enumerate([0.01, 0.015, 0.02, 0.03, 0.06, 0.08, 0.1, 0.12, 0.15], 2):
        history.append(row(n, {"MATRIX_LR": lr, "WARMDOWN_FRAC": 0.2}, 2.0 - lr))
    p = proposer(storage, [MATRIX_LR])
    ups = 0
    for _ in range(6):
        proposal = p.propose(worktree, history)
        ups += proposal.knobs["MATRIX_LR"] > 0.06
        history.append(row(len(history) + 1, proposal.knobs, 2.0 - proposal.knobs["MATRIX_LR"]))
        (worktree / "autoresearch.sh").write_text(SCRIPT)
    assert ups >= 4


# --- the study: warm start, separation, what a trial records ---------------------------------

def test_every_measured_row_becomes_one_trial(worktree, storage):
    history = [baseline(), row(2, {"MATRIX_LR": 0.05, "WARMDOWN_FRAC": 0.2}, 1.9)]
    p = proposer(storage)
    p.sync(history)
    p.sync(history)  # again: nothing is added twice
    got = trials(storage)
    assert sorted(t.value for t in got) == [1.9, 2.0]
    assert {t.user_attrs["row"] for t in got} == {"s1/E0001/t1", "s1/E0002/t2"}


def test_a_later_session_finds_the_trials_of_an_earlier_one(worktree, storage):
    history = [baseline(), row(2, {"MATRIX_LR": 0.05, "WARMDOWN_FRAC": 0.2}, 1.9)]
    proposer(storage).sync(history)
    later = proposer(storage)  # a new daemon on the same storage, with an empty history
    later.sync([])
    assert len(trials(storage)) == 2
    assert later.propose(worktree, [baseline()]).knobs != history[1]["knobs"]


def test_rows_of_other_datasets_profiles_and_protocols_never_share_a_study(storage):
    p = proposer(storage, ladder=("smoke", "breadth"))
    knobs = {"MATRIX_LR": 0.05, "WARMDOWN_FRAC": 0.2}
    p.sync([baseline(), row(2, knobs, 1.9, dataset="fineweb"),
            row(3, knobs, 1.8, profile="breadth"),
            row(4, knobs, 1.7, protocol={**PROTOCOL, "seed": "42"})])
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert len(names) == 4
    assert all(len(optuna.load_study(study_name=n, storage=storage).trials) == 1 for n in names)


def test_over_cap_row_is_a_constraint_violation(storage):
    p = proposer(storage, cap=1_000_000)
    p.sync([row(2, START, 1.9, "over_cap", total_bytes=1_500_000)])
    (trial,) = trials(storage)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.constraints["artifact_cap"] == pytest.approx(0.5)


def test_a_row_under_the_cap_is_feasible(storage):
    proposer(storage, cap=1_000_000).sync([row(2, START, 1.9, total_bytes=900_000)])
    (trial,) = trials(storage)
    assert trial.constraints["artifact_cap"] == pytest.approx(-0.1)


def test_a_crash_is_a_failed_trial_without_a_value(storage):
    proposer(storage).sync([row(2, START, None, "crash")])
    (trial,) = trials(storage)
    assert trial.state == optuna.trial.TrialState.FAIL and trial.value is None


def test_each_rung_goes_to_its_profiles_study_and_the_first_carries_the_ladder(storage):
    climbed = row(2, START, 1.9, "keep")
    climbed["rungs"]["breadth"] = {"val_bpb": 1.5, "protocol": PROTOCOL}
    proposer(storage, ladder=("smoke", "breadth")).sync([climbed])
    (smoke,) = trials(storage, "smoke")
    (breadth,) = trials(storage, "breadth")
    assert (smoke.value, breadth.value) == (1.9, 1.5)
    assert smoke.intermediate_values == {0: 1.9, 1: 1.5}


def test_rows_before_a_kept_code_change_are_another_study(storage):
    agent_keep = {"type": "experiment", "id": "E0003", "status": "keep", "knobs": None,
                  "commit": "abcdef1234567890", "rungs": {}}
    p = proposer(storage)
    p.sync([baseline(), agent_keep, row(4, START, 1.8, "keep", baseline=True)])
    assert len(optuna.get_all_study_summaries(storage)) == 1
    assert "abcdef123456" in optuna.get_all_study_summaries(storage)[0].study_name


def test_the_proposal_is_pending_until_its_row_finishes_it(worktree, storage):
    p = proposer(storage)
    history = [baseline()]
    proposal = p.propose(worktree, history)
    running = [t for t in trials(storage) if t.state == optuna.trial.TrialState.RUNNING]
    assert [t.user_attrs["config"] for t in running] == [proposal.knobs]
    p.observe(row(2, proposal.knobs, 1.95))
    finished = trials(storage)
    assert len(finished) == 2 and all(t.state.is_finished() for t in finished)
    assert sorted(t.value for t in finished) == [1.95, 2.0]


def test_a_proposal_that_measured_nothing_fails_at_the_next_proposal(worktree, storage):
    p = proposer(storage)
    first = p.propose(worktree, [baseline()])
    (worktree / "autoresearch.sh").write_text(SCRIPT)
    unmeasured = {**row(2, first.knobs, None, "checks_failed"), "rungs": {}}
    second = p.propose(worktree, [baseline(), unmeasured])
    states = {config_key(t.user_attrs["config"], RATES): t.state for t in trials(storage)}
    assert states[config_key(first.knobs, RATES)] == optuna.trial.TrialState.FAIL
    assert second.knobs != first.knobs


def test_a_stale_running_trial_of_a_dead_daemon_on_this_host_is_failed(storage):
    p = proposer(storage)
    p.sync([baseline()])
    study = p._studies[next(iter(p._studies))]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.RUNNING, params={"MATRIX_LR": 0.1, "WARMDOWN_FRAC": 0.3},
        distributions=optuna.load_study(study_name=study.study_name, storage=storage)
        .trials[0].distributions,
        user_attrs={"host": socket.gethostname(), "pid": dead.pid}))
    proposer(storage).sync([baseline()])
    assert not [t for t in trials(storage) if t.state == optuna.trial.TrialState.RUNNING]


# --- model shape and artifact size ---------------------------------------------------------------

def test_parameter_count_of_the_baseline_shape():
    shape = shape_of({}, {})
    # 1024x512 embedding + 9 blocks of (2x512^2 + 2x512x256 + 8) + (2x512x1024) + 4x512,
    # + 4 skip weights x 512: the trainer prints model_params:17059912 for this shape.
    assert parameter_count(shape) == 17_059_912


@pytest.mark.parametrize("changes, words", [
    ({"MODEL_DIM": 500}, "multiple of NUM_HEADS"),
    ({"NUM_KV_HEADS": 3}, "multiple of NUM_KV_HEADS"),
    ({"MODEL_DIM": 24, "NUM_HEADS": 8}, "even"),
])
def test_invalid_shapes_are_named(changes, words):
    assert words in shape_problem(shape_of(changes, {}))


def test_size_model_learns_bytes_per_parameter_from_the_largest_measured_model():
    rows = [row(1, START, 2.0, model_params=1000, model_bytes=1500, code_bytes=40_000),
            row(2, START, 2.0, model_params=10_000, model_bytes=9_000, code_bytes=41_000)]
    model = size_model(rows)
    assert (model.bytes_per_param, model.code_bytes, model.measured_rows) == (0.9, 41_000, 2)


def test_size_model_without_measurements_is_the_safe_default():
    assert size_model([baseline()]) == SizeModel()


def test_a_shape_predicted_over_the_cap_is_never_proposed(worktree, storage):
    cap = SizeModel().predict(shape_of({"NUM_LAYERS": 9}, {}))  # 9 layers just fit
    history = [baseline({"NUM_LAYERS": 9})]
    p = proposer(storage, [LAYERS], cap=cap)
    for n in range(2, 6):
        proposal = p.propose(worktree, history)
        assert proposal.knobs["NUM_LAYERS"] < 9
        history.append(row(n, proposal.knobs, 2.0))
        (worktree / "autoresearch.sh").write_text(SCRIPT)


def test_a_shape_over_the_cap_is_refused_with_the_predicted_size():
    from loop.proposers.shape import shape_refusal

    reason = shape_refusal({"NUM_LAYERS": 12}, {}, SizeModel(), cap_bytes=16_000_000)
    assert reason.startswith("predicted artifact ") and "> cap 16000000" in reason


def test_a_configuration_without_shape_knobs_is_never_refused_for_size():
    from loop.proposers.shape import shape_refusal

    assert shape_refusal({"MATRIX_LR": 0.04}, {}, SizeModel(), cap_bytes=1) is None


def test_invalid_kv_heads_are_never_proposed(worktree, storage):
    p = proposer(storage, [KV], cap=10**9)
    history = [baseline({"NUM_KV_HEADS": 4})]
    for n in range(2, 5):
        proposal = p.propose(worktree, history)
        assert proposal is not None and 8 % proposal.knobs["NUM_KV_HEADS"] == 0
        history.append(row(n, proposal.knobs, 2.0))
        (worktree / "autoresearch.sh").write_text(SCRIPT)
    assert p.propose(worktree, history) is None  # 1, 2, 4, 8 all measured: 3, 5-7 refused


def test_model_dim_proposals_stay_on_the_step_grid(worktree, storage):
    p = proposer(storage, [DIM], cap=10**9)
    proposal = p.propose(worktree, [baseline({"MODEL_DIM": 512})])
    assert proposal.knobs["MODEL_DIM"] % 64 == 0


# --- storage errors ----------------------------------------------------------------------------

def test_an_unreachable_database_is_an_error_naming_search_storage():
    pytest.importorskip("psycopg2")
    with pytest.raises(SearchStorageError, match=r"search\.storage.*autogolf:\*\*\*@127.*"
                                                 r"OperationalError"):
        open_storage("postgresql+psycopg2://autogolf:secret@127.0.0.1:9/none")


def test_a_sqlite_file_that_cannot_be_created_is_an_error_naming_search_storage(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SearchStorageError, match=r"search\.storage"):
        open_storage(f"sqlite:///{tmp_path}/file/optuna.db")


def test_the_storage_error_keeps_the_password_out(tmp_path):
    pytest.importorskip("psycopg2")
    with pytest.raises(SearchStorageError) as err:
        open_storage("postgresql+psycopg2://autogolf:hunter2@127.0.0.1:9/none")
    assert "hunter2" not in str(err.value)


def test_an_unknown_strategy_is_refused(storage):
    with pytest.raises(ValueError, match="search.strategy"):
        proposer(storage, strategy="cma")


# --- several daemons on one storage --------------------------------------------------------------

def run_two_workers(storage: str, tmp_path: Path, rounds: int = 4) -> list[str]:
    """Two processes propose and record `rounds` candidates each on one storage, meeting
    after their first reservation (a file barrier), so each must see the other's trials."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    procs = [subprocess.Popen([sys.executable, str(HERE / "search_worker.py"), storage,
                               str(tmp_path / name), name, "ab"[1 - i], str(rounds)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i, name in enumerate("ab")]
    results = [p.communicate(timeout=600) for p in procs]
    for p in procs:
        assert p.returncode == 0, "\n".join(e[-2000:] for _o, e in results)
    return [out for out, _err in results]


def check_shared_study(storage: str, outs: list[str], rounds: int) -> None:
    got = trials(storage)
    candidates = [t for t in got if not t.user_attrs.get("baseline")]
    assert len(candidates) == 2 * rounds
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in got)
    configs = [config_key(t.user_attrs["config"], RATES) for t in candidates]
    assert len(set(configs)) == len(configs)  # neither proposed what the other measured
    for out in outs:  # each worker's later proposals saw the other's trials
        assert "saw_other=yes" in out, out


def test_two_daemons_share_one_sqlite_study(tmp_path):
    storage = default_storage(tmp_path / "shared")
    outs = run_two_workers(storage, tmp_path)
    check_shared_study(storage, outs, 4)


@pytest.fixture
def postgres(request: pytest.FixtureRequest):
    """A throwaway PostgreSQL server on a local port, or a skip saying why there is none."""
    pytest.importorskip("psycopg2", reason="pip install psycopg2-binary (the test extra)")
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    # Not under tmp_path: pytest's folders are private to us, and as root the server runs as
    # the `postgres` user (initdb refuses root), which must reach its data folder.
    top = Path(tempfile.mkdtemp(prefix="autogolf-pg-"))
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    os.chmod(top, 0o755)
    data = top / "data"
    data.mkdir()
    as_user = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        shutil.chown(data, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    done = subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust",
                           "-U", "autogolf"], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"initdb failed: {done.stderr.strip()[-300:]}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", "60",
                            "-l", str(data / "log"), "-o", f"-p {port} -k {data} -h 127.0.0.1",
                            "start"], capture_output=True, text=True)
    if start.returncode != 0:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        # SQLAlchemy 2.1 reads plain postgresql:// as psycopg 3; the test extra is psycopg2.
        yield f"postgresql+psycopg2://autogolf@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)


def _postgres_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return versions[-1].parent if versions else None


def test_two_daemons_share_one_postgresql_study(postgres, tmp_path):
    outs = run_two_workers(postgres, tmp_path)
    check_shared_study(postgres, outs, 4)


def test_trials_value_is_the_rungs_val_bpb_not_a_default(storage):
    proposer(storage).sync([row(2, START, 1.234)])
    (trial,) = trials(storage)
    assert math.isclose(trial.value, 1.234)


# --- the real chain -----------------------------------------------------------------------------

@pytest.mark.slow
def test_the_daemon_runs_tpe_on_the_real_trainer_and_fills_the_study(tmp_path, repo_root,
                                                                      sample_dataset):
    from test_e2e_real import SHORT_SMOKE, committed_copy

    from loop.platform import blas_env
    from loop.store.ledger import Ledger

    clone = committed_copy(repo_root, tmp_path / "clone", ladder=["smoke"],
                           smoke_iterations=SHORT_SMOKE, search={"strategy": "tpe"},
                           keep_rule={"max_runs": 2})  # the study is the subject, not the rule
    env = {**os.environ, **blas_env(),
           "AUTOGOLF_CACHE_ROOT": str(Path(sample_dataset.data_path).parents[2])}
    done = subprocess.run([sys.executable, "-m", "loop.ui.cli", "run", "--max-experiments", "2"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    rows = [r for r in Ledger(clone / ".autogolf" / "ledger.jsonl").rows()
            if r.get("type") == "experiment"]
    candidates = [r for r in rows if not r.get("baseline")]
    assert len(candidates) == 2 and all("(tpe)" in r["description"] for r in candidates)
    storage = default_storage(clone / ".autogolf")
    got = trials(storage, "smoke", rows[0]["dataset"])
    scores = sorted(r["rungs"]["smoke"]["val_bpb"] for r in rows
                    if "val_bpb" in r["rungs"].get("smoke", {}))  # a pruned run has none
    told = [t for t in got if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.value for t in told) == pytest.approx(scores)  # each told once, finished
    assert len(got) == len([r for r in rows if "smoke" in r["rungs"]])  # failed ones too
    smoke_shape = {"NUM_LAYERS": 2, "MODEL_DIM": 64, "NUM_HEADS": 2, "NUM_KV_HEADS": 1,
                   "MLP_MULT": 2}  # autoresearch.sh's smoke profile
    assert rows[0]["rungs"]["smoke"]["model_params"] == parameter_count(shape_of(smoke_shape, {}))


# --- at start: the daemon's proposer factory ----------------------------------------------------

def test_a_missing_knob_file_stops_the_daemon_at_start_naming_it(tmp_path):
    from loop.config import Config
    from loop.proposers.registry import make_proposer

    with pytest.raises(KnobError, match=r"autoresearch\.sh.*MATRIX_LR"):
        make_proposer(Config(), tmp_path)


def test_an_unreachable_storage_stops_the_daemon_at_start_naming_the_key(worktree):
    import dataclasses

    from loop.config import Config
    from loop.errors import UserError
    from loop.proposers.registry import make_proposer

    pytest.importorskip("psycopg2")
    cfg = dataclasses.replace(Config(), knobs=tuple(RATES),
                              search_storage="postgresql+psycopg2://u:pw@127.0.0.1:9/none")
    with pytest.raises(UserError, match=r"search\.storage"):
        make_proposer(cfg, worktree)


def test_the_default_strategy_is_built_with_its_sqlite_file_under_autogolf(worktree):
    import dataclasses

    from loop.config import Config
    from loop.proposers.registry import make_proposer

    built = make_proposer(dataclasses.replace(Config(), knobs=tuple(RATES)), worktree)
    assert isinstance(built, ModelSearchProposer)
    assert built.storage_url == default_storage(worktree / ".autogolf")


# --------------------------------------------------------------------------- profile overrides

SMOKE_BLOCK = 'case "$PROFILE" in\n    smoke)  # tiny\n        ITERATIONS=30\n' \
              '        NUM_LAYERS=2\n        MODEL_DIM=64\n        ;;\n    breadth)\n' \
              '        ITERATIONS=200\n        ;;\nesac\n'


def test_the_profile_overrides_are_read_from_its_block_in_autoresearch_sh(worktree):
    (worktree / "autoresearch.sh").write_text(SCRIPT + SMOKE_BLOCK)
    from loop.proposers.search import profile_overrides

    assert profile_overrides(worktree, "smoke") == {"ITERATIONS", "NUM_LAYERS", "MODEL_DIM"}
    assert profile_overrides(worktree, "breadth") == {"ITERATIONS"}
    assert profile_overrides(worktree, "full") == frozenset()


@pytest.mark.parametrize("strategy", ["tpe", "random"])
def test_the_search_never_moves_a_knob_the_first_rungs_profile_overrides(worktree, storage,
                                                                       strategy):
    (worktree / "autoresearch.sh").write_text(SCRIPT + SMOKE_BLOCK)
    search = proposer(storage, knobs=[MATRIX_LR, LAYERS, DIM], strategy=strategy, cap=10**9)
    history: list[dict] = [baseline(START)]
    for n in range(8):
        proposal = search.propose(worktree, history)
        assert proposal is not None
        assert "NUM_LAYERS" not in proposal.description and "MODEL_DIM" not in proposal.description
        history.append(row(n + 1, proposal.knobs, 2.0 + n / 100))
        (worktree / "autoresearch.sh").write_text(SCRIPT + SMOKE_BLOCK)


def test_a_search_with_only_overridden_knobs_proposes_nothing_and_says_why(worktree, storage):
    (worktree / "autoresearch.sh").write_text(SCRIPT + SMOKE_BLOCK)
    search = proposer(storage, knobs=[LAYERS, DIM])
    assert search.propose(worktree, [baseline(START)]) is None
    assert search.last_refusals == ["every knob is overridden by the smoke profile"]
