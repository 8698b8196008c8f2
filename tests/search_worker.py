"""One of two `search` daemons sharing a study (tests/test_search_model.py starts two).

    python tests/search_worker.py STORAGE DIR NAME OTHER ROUNDS

Proposes ROUNDS candidates from its own worktree under DIR, scores each with a fixed
function of the knobs (the benchmark's stand-in), records the row like the daemon would and
restores the incumbent. After its first reservation it waits for OTHER's (files in DIR's
parent), so every later proposal of either worker happens with the other's trials stored;
prints `saw_other=yes` when the study held a trial of the other process.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from loop.proposers.optuna_search import ModelSearchProposer
from loop.proposers.search import Knob

SCRIPT = "MATRIX_LR=0.04\nWARMDOWN_FRAC=0.2\n"
KNOBS = [Knob("MATRIX_LR", "autoresearch.sh", "env", "float", 0.005, 0.2, "log"),
         Knob("WARMDOWN_FRAC", "autoresearch.sh", "env", "float", 0.05, 0.6)]
PROTOCOL = {"seed": "1337", "val_tokens": "16384", "iterations": "30"}


def score(knobs: dict) -> float:
    return 2.0 + (knobs["MATRIX_LR"] - 0.08) ** 2 * 50 + (knobs["WARMDOWN_FRAC"] - 0.4) ** 2


def row(name: str, n: int, knobs: dict, **extra: object) -> dict:
    return {"type": "experiment", "id": f"E{n:04d}", "session": name, "timestamp": f"{name}{n}",
            "knobs": dict(knobs), "status": "discard", "dataset": "sample",
            "rungs": {"smoke": {"val_bpb": score(knobs), "protocol": PROTOCOL}}, **extra}


def wait_for(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the other worker never reached the barrier ({path})")
        time.sleep(0.05)


def main() -> None:
    storage, folder, name, other, rounds = sys.argv[1:6]
    tree = Path(folder)
    tree.mkdir(parents=True)
    (tree / "autoresearch.sh").write_text(SCRIPT)
    proposer = ModelSearchProposer(KNOBS, storage=storage, ladder=["smoke"],
                                   cap_bytes=16_000_000, seed=ord(name))
    history = [row(name, 1, {"MATRIX_LR": 0.04, "WARMDOWN_FRAC": 0.2}, status="keep",
                   baseline=True)]
    saw_other = False
    for i in range(int(rounds)):
        proposal = proposer.propose(tree, history)
        if proposal is None:
            raise SystemExit("nothing left to propose")
        if i == 0:
            (tree.parent / f"ready-{name}").write_text("")
            wait_for(tree.parent / f"ready-{other}")
        study = next(iter(proposer._studies.values()))
        saw_other |= any(t.user_attrs.get("pid") not in (None, os.getpid()) or
                         str(t.user_attrs.get("row", "")).startswith(f"{other}/")
                         for t in study.get_trials(deepcopy=False))
        history.append(row(name, i + 2, proposal.knobs))
        proposer.observe(history[-1])
        (tree / "autoresearch.sh").write_text(SCRIPT)  # the daemon restores the incumbent
    print(f"saw_other={'yes' if saw_other else 'no'}")


if __name__ == "__main__":
    main()
