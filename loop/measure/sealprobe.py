"""The seal's probe: run inside a seal, it tries what judged code must not manage.

Argument: a JSON plan `{"read_fail": [...], "write_fail": [...], "read_ok": [...],
"write_ok": [...], "connect": bool}`. It prints one JSON line `{"breaches": [...]}`: each
breach is something that got through (a secret read, a connection out) or something the
seal wrongly blocks (the data folder unreadable). Writes are judged outside: the probe leaves
a marker file in each folder it could write, and loop.measure.seal looks for the markers on
the real disk. Exit 0 whenever it could report; loop.measure.seal reads the line.

The attempts are the ones an agent would write: open the file by path, create a file in the
folder, connect a TCP socket to a public address and to the host's loopback.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

CONNECT_TARGETS = (("1.1.1.1", 53), ("8.8.8.8", 53))


def can_read(path: Path) -> bool:
    try:
        if path.is_dir():
            os.listdir(path)
            return True
        with path.open("rb") as f:
            f.read(1)
        return True
    except OSError:
        return False


def can_write(folder: Path, marker: str) -> bool:
    """Write `marker` into `folder` and leave it there: the daemon looks for it on the real
    disk afterwards (a write into a private, vanishing folder is no breach)."""
    try:
        with (folder / marker).open("wb") as f:
            f.write(b"x")
    except OSError:
        return False
    return True


def can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def breaches(plan: dict) -> list[str]:
    marker = plan.get("marker", f".autogolf-seal-probe-{os.getpid()}")
    found = [f"read {p}" for p in plan.get("read_fail", []) if can_read(Path(p))]
    for p in plan.get("write_fail", []):  # judged by the daemon: did the marker land?
        if Path(p).is_dir():
            can_write(Path(p), marker)
    found += [f"cannot read {p}, which the run needs" for p in plan.get("read_ok", [])
              if not can_read(Path(p))]
    found += [f"cannot write into {p}, which the run needs" for p in plan.get("write_ok", [])
              if not can_write(Path(p), marker)]
    if plan.get("connect"):  # public addresses, and the host's loopback listener given
        targets = [*CONNECT_TARGETS, *(tuple(t) for t in plan["connect"] if isinstance(t, list))]
        found += [f"connected to {h}:{port}" for h, port in targets if can_connect(h, port)]
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    plan = json.loads(args[0]) if args else {}
    print(json.dumps({"breaches": breaches(plan)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
