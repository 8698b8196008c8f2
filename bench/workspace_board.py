"""What lease renewals cost a shared folder workspace (issue 20): board size and read time.

    python bench/workspace_board.py [--experiments 200] [--agents 4] [--minutes 10]

Builds a folder workspace as `--agents` agents leave it after `--experiments` experiments each
of `--minutes` minutes, once as before issue 20 (a claim and a result per experiment) and
once as now (plus a renewal every lease_s / 3 with the default 15-minute lease, and the
status updates), then times what a daemon's `sync` reads: every post, cold (a daemon that
just started) and warm (the cached board of a running daemon, which only reads new files).
Prints the two side by side. Nothing is asserted: the figures are for the README and reviews.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from loop.workspace import board as wb
from loop.workspace.dirstore import DirStore
from loop.workspace.settings import DEFAULT_LEASE_S, RENEWALS_PER_LEASE


def fill(root: Path, agents: int, experiments: int, minutes: float, renewals: bool) -> int:
    store = DirStore(root)
    per_exp = int(minutes * 60 // (DEFAULT_LEASE_S / RENEWALS_PER_LEASE)) if renewals else 0
    count = 0
    for a in range(agents):
        agent = f"agent{a}"
        kinds = ["status-joined", "status-left"] if renewals else []
        for _ in range(experiments):
            kinds += ["claim", *(f"renew{n}" for n in range(1, per_exp + 1)), "result"]
        for i, kind in enumerate(kinds):
            meta = {"type": "status-update" if kind.startswith("status") else
                    "result" if kind == "result" else "experiment-proposal",
                    "agent_id": agent, "timestamp": f"2026-01-01T00:00:{i:06d}",
                    "experiment": f"E{i:04d}", "diff_hash": "d" * 64, "incumbent": "k" * 16}
            name = wb.file_name(f"{i:06d}-{kind}", agent, "md")
            store.write_new(f"{wb.POSTS}/{name}", wb.render_post(meta, "body").encode())
            count += 1
    return count


def timed_reads(root: Path) -> tuple[float, float]:
    board = wb.Board(DirStore(root), "reader", root.parent / "outbox")
    start = time.perf_counter()
    board.posts()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    board.posts()
    return cold, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    print(f"{args.agents} agents x {args.experiments} experiments of {args.minutes:g} min; "
          f"lease {DEFAULT_LEASE_S:g} s renewed every {DEFAULT_LEASE_S / RENEWALS_PER_LEASE:g} s")
    print(f"{'board':<28}{'posts':>8}{'sync cold (s)':>16}{'sync warm (s)':>16}")
    for label, renewals in (("claim + result (before)", False), ("with leases (now)", True)):
        with tempfile.TemporaryDirectory(prefix="autogolf-bench-ws-") as tmp:
            root = Path(tmp) / "ws"
            root.mkdir()
            posts = fill(root, args.agents, args.experiments, args.minutes, renewals)
            cold, warm = timed_reads(root)
            print(f"{label:<28}{posts:>8}{cold:>16.3f}{warm:>16.3f}")


if __name__ == "__main__":
    main()
