"""The one atomic file write of the daemon, and the file hash every row records.

A daemon killed mid-write (power loss, SIGKILL) must leave either the old file or the new
one, never half of one: the state file, a saved patch, the backlog, a knob's script. So each
write goes to a temporary file in the same folder, is flushed and fsynced, takes the old
file's permission bits (autoresearch.sh stays executable), and replaces the target in one
rename; the folder is fsynced too so the new name survives a power loss.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` (str is written as UTF-8, newlines untouched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (POSIX needs the folder itself fsynced)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_hash(path: Path) -> str | None:
    """sha256 of the file's bytes, or None when it cannot be read (unknown, not empty)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None
