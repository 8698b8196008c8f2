"""Tamper evidence (issue 15): the files that decide a keep must not change behind our back.

A proposer (a coding agent) and a benchmark run as the user, so nothing stops them from
writing the daemon's own code, `autogolf.yaml`, the ledger or the validation data the
holdout is cut from. The loop fingerprints those files before each proposer and each
benchmark and compares after: a change stops the run, with a stop row that says which file
changed and when. It is evidence, not prevention (the agent's sandbox is
loop/proposers/sandbox.py; without one this is all there is): nothing that ran after the
change is kept. The checks (`autoresearch.checks.sh`, editable) are fingerprinted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import loop
from loop.data import datasets
from loop.store.files import file_hash


class Tampered(Exception):
    """A protected file changed while a proposer or a benchmark ran."""


class Fingerprint:
    """sha256 of each protected file (None: absent), taken and compared on demand."""

    def __init__(self, files: Iterable[Path], root: Path, watched: Iterable[Path] = ()):
        self.files = sorted(set(Path(f) for f in files))
        self.root = root
        self.watched = sorted(set(Path(d) for d in watched))  # folders: any new *.pth counts

    @classmethod
    def of_protected(cls, repo: Path, dataset: datasets.DatasetInfo) -> Fingerprint:
        """The daemon's code (the imported package and the checkout's `loop/`, which an
        editable install imports on the next start), its configuration, ledger and state
        file, and the holdout's source data."""
        files = [p for code in _code_dirs(repo) for p in code.rglob("*.py")
                 if "__pycache__" not in p.parts]
        home = repo / ".autogolf"
        files += [repo / "autogolf.yaml", home / "ledger.jsonl", home / "state.json",
                  dataset.tokenizer_path]
        files += sorted(Path(dataset.data_path).glob("fineweb_val_*.bin"))
        hooks, folders = python_hooks()
        return cls(files + hooks, repo, folders)

    def take(self) -> dict[str, str | None]:
        found = {str(path): file_hash(path) for path in self.files}
        for folder in self.watched:
            found.update((str(p), file_hash(p)) for p in folder.glob("*.pth"))
        return found

    def check(self, before: dict[str, str | None], during: str) -> None:
        """Raise Tampered naming every file whose content differs from `before`."""
        now = self.take()
        changed = [self._show(Path(p)) for p, digest in before.items() if now.get(p) != digest]
        changed += [self._show(Path(p)) for p in now if p not in before]
        if changed:
            raise Tampered(f"tamper evidence: {', '.join(changed)} changed during {during}; "
                           "nothing from it is kept - check these files before running again")

    def _show(self, path: Path) -> str:
        for base in (self.root, Path(loop.__file__).resolve().parent.parent):
            try:
                return str(path.relative_to(base))
            except ValueError:
                continue
        return str(path)


def python_hooks() -> tuple[list[Path], list[Path]]:
    """What Python runs at every start of this interpreter: its `.pth` files and the
    site/user customize modules (a hook there could slow the incumbent's runs), and the
    folders where a new `.pth` file would run. The sealed benchmark and model server cannot
    write them; an unconfined agent or an unsealed run could, and that is caught here."""
    import site

    dirs = [Path(d) for d in site.getsitepackages()]
    user = site.getusersitepackages()
    dirs += [Path(user)] if isinstance(user, str) else []
    found: list[Path] = []
    for d in dirs:
        if d.is_dir():
            found += sorted(d.glob("*.pth"))
        found += [d / "sitecustomize.py", d / "usercustomize.py"]
    return found, [d for d in dirs if d.is_dir()]


def _code_dirs(repo: Path) -> list[Path]:
    """The imported `loop` package and, when it is another folder, the checkout's."""
    imported = Path(loop.__file__).resolve().parent
    checkout = (Path(repo) / "loop").resolve()
    return [imported] + ([checkout] if checkout != imported and checkout.is_dir() else [])
