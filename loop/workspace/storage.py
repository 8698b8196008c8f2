"""The storage a shared workspace lives on: a small interface both backends implement.

Paths are workspace-relative posix paths (`message_board/x_alice.md`). The rules every backend
keeps (SPEC section 10):
- `write_new` never overwrites: it raises `AlreadyExists` when the path is taken;
- a half-written file is never visible to a reader (temporary name + rename, or an upload
  that only appears once complete);
- a workspace that cannot be reached raises `Unreachable`, which the daemon turns into a
  queued post, never into a stopped loop.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Protocol


class WorkspaceError(Exception):
    """Base of every workspace problem."""


class Unreachable(WorkspaceError):
    """The workspace cannot be reached now (unmounted folder, network down, hub error)."""


class WriteRefused(WorkspaceError):
    """A write that would break the workspace rules; refused before anything is written."""


class AlreadyExists(WriteRefused):
    """`write_new` on a path that already holds a file."""


class Storage(Protocol):
    """What the workspace logic needs from a backend."""

    def describe(self) -> str:
        """Where the workspace is, for messages (`dir /mnt/team` or `hf-bucket ns/name`)."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every file under `prefix` (recursive), as sorted workspace-relative paths."""
        ...

    def read(self, path: str) -> bytes:
        """The file's bytes; FileNotFoundError when absent."""
        ...

    def exists(self, path: str) -> bool: ...

    def write_new(self, path: str, data: bytes) -> None:
        """Create `path` with `data` atomically; AlreadyExists when it is taken."""
        ...

    def replace(self, path: str, data: bytes) -> None:
        """Atomically create or replace `path` (only for the one shared generated file)."""
        ...


def clean_path(path: str) -> str:
    """A normalised workspace-relative path; WriteRefused for absolute or climbing paths."""
    if not path or path.startswith("/") or "\\" in path:
        raise WriteRefused(f"bad workspace path {path!r}: use a relative posix path")
    parts = [p for p in PurePosixPath(path).parts if p != "."]
    if not parts or ".." in parts:
        raise WriteRefused(f"bad workspace path {path!r}: it must stay inside the workspace")
    return "/".join(parts)
