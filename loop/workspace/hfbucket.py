"""The `hf-bucket` backend: a Hugging Face storage bucket through huggingface_hub's bucket API.

The same bucket a person browses with `hf buckets list`. huggingface_hub is an optional extra
(`pip install 'autogolf[hf]'`), imported only when this backend is used. The token comes from
the usual places (`HF_TOKEN`, or `hf auth login`).

HfApi calls used (and nothing else, so a stand-in object can replace the client in tests):
- `list_bucket_tree(bucket_id, prefix=..., recursive=True)` -> entries with `.type`, `.path`
- `get_bucket_paths_info(bucket_id, [path])` -> entries for the paths that exist
- `download_bucket_files(bucket_id, files=[(path, local)], raise_on_missing_files=True)`
- `batch_bucket_files(bucket_id, add=[(bytes, path)])`

An upload only becomes visible once complete, so a half-written file is never seen. "Never
overwrite" is a check before the upload: a bucket has no create-if-absent, but every file a
daemon writes carries its own agent id, so the only writer that could race is itself.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loop.workspace.storage import AlreadyExists, Unreachable, WorkspaceError, clean_path

INSTALL_HINT = "the hf-bucket workspace needs huggingface_hub: pip install 'autogolf[hf]'"


def _default_api() -> Any:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise WorkspaceError(INSTALL_HINT) from exc
    return HfApi()


# Tests replace this with a factory of a local stand-in (the hub is unreachable there).
make_api: Callable[[], Any] = _default_api


def client_available() -> bool:
    """Whether an HfApi client can be made (huggingface_hub installed, or a stand-in set)."""
    return make_api is not _default_api or importlib.util.find_spec("huggingface_hub") is not None


class HfBucketStore:
    def __init__(self, bucket_id: str, api: Any = None):
        self.bucket_id = bucket_id.removeprefix("hf://buckets/").strip("/")
        self._api = api

    def describe(self) -> str:
        return f"hf-bucket {self.bucket_id}"

    @property
    def api(self) -> Any:
        if self._api is None:
            self._api = make_api()
        return self._api

    def list(self, prefix: str = "") -> list[str]:
        prefix = clean_path(prefix) if prefix else ""
        entries = self._call("list", lambda: list(self.api.list_bucket_tree(
            self.bucket_id, prefix=prefix or None, recursive=True)))
        paths = [e.path for e in entries if getattr(e, "type", "file") == "file"]
        inside = [p for p in paths if not prefix or p.startswith(prefix.rstrip("/") + "/")]
        return sorted(p for p in inside if not any(s.startswith(".") for s in p.split("/")))

    def read(self, path: str) -> bytes:
        rel = clean_path(path)
        if not self.exists(rel):
            raise FileNotFoundError(f"{rel} is not in {self.describe()}")
        with tempfile.TemporaryDirectory(prefix="autogolf-hf-") as tmp:
            local = Path(tmp) / "file"
            self._call(f"read {rel}", lambda: self.api.download_bucket_files(
                self.bucket_id, files=[(rel, str(local))], raise_on_missing_files=True))
            return local.read_bytes()

    def exists(self, path: str) -> bool:
        rel = clean_path(path)
        found = self._call(f"look up {rel}", lambda: list(
            self.api.get_bucket_paths_info(self.bucket_id, [rel])))
        return any(getattr(e, "path", rel) == rel for e in found)

    def write_new(self, path: str, data: bytes) -> None:
        rel = clean_path(path)
        if self.exists(rel):
            raise AlreadyExists(f"{rel} already exists in {self.describe()}; never overwritten")
        self._upload(rel, data)

    def replace(self, path: str, data: bytes) -> None:
        self._upload(clean_path(path), data)

    def _upload(self, rel: str, data: bytes) -> None:
        self._call(f"write {rel}", lambda: self.api.batch_bucket_files(
            self.bucket_id, add=[(bytes(data), rel)]))

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        """Run one hub call; any failure of the transport or the hub reads as unreachable."""
        try:
            return call()
        except WorkspaceError:
            raise
        except Exception as exc:  # hub errors are many types (HTTP, auth, timeouts)
            raise Unreachable(f"{self.describe()}: cannot {what}: "
                              f"{type(exc).__name__}: {exc}") from exc
