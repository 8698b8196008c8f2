"""Pre-flight before each experiment: is it safe and meaningful to run one more?

Three checks, each answering with a message that says what is wrong, where, and what to do:
- free disk at the daemon's state folder above `limits.min_free_disk_mb` (logs, patches
  and the trainer's artifacts are written there; a full disk mid-run corrupts them);
- the dataset is present and unchanged since the daemon started: its id
  (loop.data.datasets.dataset_id, content hash included) must equal the one recorded then. The
  files are re-hashed only when their names, sizes or mtimes moved (hashing each time would
  cost seconds on real data); for the sample, the hash is recomputed from the files
  themselves, not read from its manifest, so an edited shard is caught too;
- the daemon's worktree is clean: it is restored after every experiment, so a change found
  there was made by someone else, and measuring it would credit a candidate with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loop.data import datasets
from loop.platform import free_disk_bytes

MB = 1024 * 1024
Fingerprint = tuple[tuple[str, int, int], ...]


def disk_problem(path: Path, min_free_mb: int) -> str | None:
    """A message when the disk holding `path` has less than `min_free_mb` free."""
    if min_free_mb <= 0:
        return None
    free = free_disk_bytes(path)
    if free >= min_free_mb * MB:
        return None
    return (f"only {free // MB} MB free on the disk of {path} (limits.min_free_disk_mb is "
            f"{min_free_mb}); free some space, then `autogolf run` again")


def worktree_problem(changed: list[str], worktree: Path) -> str | None:
    """A message when the daemon's worktree has changes the daemon did not make."""
    if not changed:
        return None
    shown = ", ".join(changed[:5]) + (f" (+{len(changed) - 5} more)" if len(changed) > 5 else "")
    return (f"the daemon's worktree {worktree} has changes it did not make: {shown}; "
            "copy them elsewhere if you need them (`autogolf run` resets the worktree to the "
            "session branch head)")


def fingerprint(info: datasets.DatasetInfo) -> Fingerprint:
    """Name, size and mtime of every file the dataset id depends on."""
    paths = [info.tokenizer_path, info.manifest_path, *sorted(info.data_path.glob("*.bin"))]
    found = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def content_id(info: datasets.DatasetInfo) -> str:
    """The dataset id computed from the files (for the sample, not read from its manifest)."""
    if info.kind != "sample":
        return datasets.dataset_id(info)
    manifest = info.manifest() or {}
    names = sorted(manifest.get("shards") or {})
    digest = datasets.content_hash(info.tokenizer_path, [info.data_path / n for n in names])
    return f"{info.name}:{digest[:16]}"


class DatasetWatch:
    """Remembers the dataset as it was at the start; `problem()` says when that changed."""

    def __init__(self, key: str, info: datasets.DatasetInfo, expected_id: str,
                 root: Path | None = None) -> None:
        self.key = key  # the name autogolf.yaml uses (a key of loop.data.datasets.DATASETS)
        self.info = info
        self.expected_id = expected_id
        self.root = root
        self._fingerprint = fingerprint(info)

    def problem(self) -> str | None:
        try:
            info = datasets.resolve(self.key, self.root)
        except datasets.DatasetError as exc:
            return f"the dataset is missing or incomplete: {' '.join(str(exc).split())}"
        now = fingerprint(info)
        if now == self._fingerprint:
            return None
        try:
            found = content_id(info)
        except FileNotFoundError as exc:
            return f"the dataset is missing or incomplete: {exc.filename} is gone"
        except (OSError, ValueError, datasets.DatasetError) as exc:
            return f"the dataset under {info.data_path} cannot be read: {exc}"
        if found != self.expected_id:
            return (f"the dataset under {info.data_path} changed since the daemon started "
                    f"({self.expected_id} -> {found}); results would not compare with this "
                    "session's: restore the data, or start a new session (--new-session)")
        self._fingerprint = now  # touched but identical (e.g. copied back): fine
        return None


class Preflight:
    """All three checks; `problem()` is the first failing one's message, or None."""

    def __init__(self, state_dir: Path, min_free_disk_mb: int, dataset: DatasetWatch,
                 worktree: Path, changed_files: Callable[[], list[str]]) -> None:
        self.state_dir = state_dir
        self.min_free_disk_mb = min_free_disk_mb
        self.dataset = dataset
        self.worktree = worktree
        self.changed_files = changed_files

    def problem(self) -> str | None:
        return (disk_problem(self.state_dir, self.min_free_disk_mb)
                or self.dataset.problem()
                or worktree_problem(self.changed_files(), self.worktree))
