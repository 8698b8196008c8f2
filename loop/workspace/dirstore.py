"""The `dir` backend: a folder every machine can reach (a synced or network folder).

The folder is never created here (only by `autogolf workspace init`): a network share that is
not mounted must read as unreachable, not silently become an empty local folder.

A new file is written under a hidden temporary name in its final folder, fsynced, then
hard-linked to its final name, which fails atomically when the name is taken; on a file
system without hard links (some network shares) it falls back to an existence check and a
rename. Readers skip the temporary names, so a half-written file is never visible.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from loop.workspace.storage import AlreadyExists, Unreachable, clean_path

TEMP_PREFIX = ".autogolf-tmp-"


class DirStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser()

    def describe(self) -> str:
        return f"dir {self.root}"

    def list(self, prefix: str = "") -> list[str]:
        base = self._base()
        start = base / clean_path(prefix) if prefix else base
        if not start.is_dir():
            return []
        found = []
        try:
            for folder, dirs, files in os.walk(start):
                dirs[:] = [d for d in dirs if not d.startswith(".")]
                for name in files:
                    if not name.startswith("."):
                        found.append((Path(folder) / name).relative_to(base).as_posix())
        except OSError as exc:
            raise Unreachable(f"{self.describe()}: cannot list {prefix or '/'}: {exc}") from exc
        return sorted(found)

    def read(self, path: str) -> bytes:
        target = self._base() / clean_path(path)
        try:
            return target.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Unreachable(f"{self.describe()}: cannot read {path}: {exc}") from exc

    def exists(self, path: str) -> bool:
        return (self._base() / clean_path(path)).is_file()

    def write_new(self, path: str, data: bytes) -> None:
        rel = clean_path(path)
        target = self._base() / rel
        if target.exists():
            raise AlreadyExists(f"{rel} already exists in {self.describe()}; never overwritten")
        tmp = self._write_temp(target, data)
        try:
            self._link_into_place(tmp, target, rel)
        finally:
            tmp.unlink(missing_ok=True)

    def replace(self, path: str, data: bytes) -> None:
        target = self._base() / clean_path(path)
        tmp = self._write_temp(target, data)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise Unreachable(f"{self.describe()}: cannot write {path}: {exc}") from exc

    # ---- helpers

    def _base(self) -> Path:
        if not self.root.is_dir():
            raise Unreachable(f"workspace folder {self.root} is not reachable (not mounted or "
                              "not created: `autogolf workspace init PATH`)")
        return self.root

    def _write_temp(self, target: Path, data: bytes) -> Path:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise Unreachable(f"{self.describe()}: cannot write {target.name}: {exc}") from exc
        return Path(name)

    def _link_into_place(self, tmp: Path, target: Path, rel: str) -> None:
        try:
            os.link(tmp, target)  # atomic, and refuses an existing name
            return
        except FileExistsError:
            raise AlreadyExists(f"{rel} already exists in {self.describe()}; never "
                                "overwritten") from None
        except OSError:
            pass  # no hard links here: check, then rename (the name carries our agent id)
        if target.exists():
            raise AlreadyExists(f"{rel} already exists in {self.describe()}; never overwritten")
        try:
            os.rename(tmp, target)
        except OSError as exc:
            raise Unreachable(f"{self.describe()}: cannot write {rel}: {exc}") from exc
