"""Two daemons on the real chain (trainer, harness, checks, git) sharing one workspace folder.

Two committed copies of this repository (agents alice and bob) climb the `smoke` ladder one
experiment each with the built-in search proposer and the same seed, so bob's first proposal
is the change alice already claimed and measured: it is skipped without a benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_e2e_real import SHORT_SMOKE, committed_copy

from loop.platform import blas_env
from loop.store.ledger import Ledger
from loop.workspace import board as wb
from loop.workspace.dirstore import DirStore


def clone_as(repo_root: Path, dest: Path, agent: str, shared: Path) -> Path:
    return committed_copy(repo_root, dest, ladder=["smoke"], smoke_iterations=SHORT_SMOKE,
                          workspace={"agent_id": agent, "path": str(shared)},
                          keep_rule={"max_runs": 2})  # the workspace is the subject, not the rule


def run(clone: Path, env: dict[str, str]) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "loop.ui.cli", "run", "--max-experiments", "1"],
                          cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = Ledger(clone / ".autogolf" / "ledger.jsonl").rows()
    return [r for r in rows if r.get("type") == "experiment" and not r.get("baseline")]


@pytest.mark.slow
def test_two_real_daemons_share_a_workspace(tmp_path, repo_root, sample_dataset):
    shared = tmp_path / "shared"
    env = {**os.environ, **blas_env(),
           "AUTOGOLF_CACHE_ROOT": str(Path(sample_dataset.data_path).parents[2])}
    env.pop("AUTOGOLF_AGENT_ID", None)
    assert subprocess.run([sys.executable, "-m", "loop.ui.cli", "workspace", "init", str(shared)],
                          env=env, capture_output=True, text=True).returncode == 0
    alice = clone_as(repo_root, tmp_path / "alice", "alice", shared)
    bob = clone_as(repo_root, tmp_path / "bob", "bob", shared)

    [a_row] = run(alice, env)
    [b_row] = run(bob, env)

    assert a_row["rungs"] and a_row["workspace"] == "sent"
    assert b_row["status"] == "duplicate" and b_row["rungs"] == {}
    assert "by agent alice" in b_row["reason"]
    files = [p for p in DirStore(shared).list() if wb.owner_of(p)]
    assert any("-claim-" in p for p in files) and any("-result-" in p for p in files)
    for path in files:
        if wb.owner_of(path) == "bob":  # bob skipped the change: he only said hello and bye
            assert "-status-joined-" in path or "-status-left-" in path, path
        else:
            assert wb.owner_of(path) == "alice", path
    [record] = [json.loads((shared / p).read_text()) for p in files if p.endswith(".json")]
    assert record["agent_id"] == "alice" and record["status"] == a_row["status"]
    # The validation tokens the real trainer scored, as it reported them.
    assert record["test_samples"] == int(a_row["rungs"]["smoke"]["protocol"]["val_tokens"]) > 0
    assert record["baseline_score"] is not None
