"""`editable:` and `protected:`: which repository paths a proposer may change (SPEC section 1).

Globs match repo-relative posix paths: `*`, `?` and `[..]` stay inside one path segment, `**`
spans any number of segments (also none), and a trailing `/` means everything under. A path
is editable when an editable glob matches and no protected one does, nor ALWAYS_PROTECTED.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any, Protocol

from loop.settings.reader import Reader

DEFAULT_EDITABLE: tuple[str, ...] = (
    "autoresearch.sh",
    "autoresearch.checks.sh",
    "autoresearch.md",
    "autoresearch.ideas.md",
    "benchmark/train_gpt_mlx.py",
    "scripts/extract_parameter_golf_metrics.py",
)
DEFAULT_PROTECTED: tuple[str, ...] = (
    "pyproject.toml",
    "autogolf.yaml",
    "benchmark/UPSTREAM_COMMIT.txt",
    "scripts/bootstrap-parameter-golf.sh",
    "scripts/run-pi-autoresearch.sh",
    "scripts/tmux-pi-autoresearch.sh",
    "loop/**",
    "tests/**",
    "README.md",
    "Justfile",
    ".upstream/**",
    ".autogolf/**",
    "logs/**",
    "data/**",
    "**/*.model",
    "**/*.vocab",
)
# Protected whatever the configuration says: the daemon's own state, its code (the judge)
# and its configuration (the keep rule). A proposer editing these could grade itself.
ALWAYS_PROTECTED: tuple[str, ...] = (".git/**", ".autogolf/**", "autogolf.yaml", "loop/**")
_GLOBS_ALLOWED = "a list of repo-relative globs, e.g. [autoresearch.sh, 'benchmark/*.py']"


class EditableSets(Protocol):
    """What is_editable reads (a loop.config.Config has both)."""

    editable: tuple[str, ...]
    protected: tuple[str, ...]


def is_editable(cfg: EditableSets, relpath: str) -> bool:
    """True when a proposer may change `relpath`: an editable glob matches and no protected
    one (nor ALWAYS_PROTECTED) does. Paths outside the repository are never editable."""
    path = normalise(relpath)
    if path is None:
        return False
    if any(glob_match(g, path) for g in (*cfg.protected, *ALWAYS_PROTECTED)):
        return False
    return any(glob_match(g, path) for g in cfg.editable)


def glob_match(pattern: str, relpath: str) -> bool:
    """Match a repo-relative posix path (the rules in this module's docstring)."""
    return glob_regex(pattern).fullmatch(relpath) is not None


def normalise(relpath: str) -> str | None:
    """A clean repo-relative posix path, or None if it is absolute or climbs out (`..`)."""
    # Posix, as git reports paths: a backslash is part of a file name, not a separator.
    if not relpath or relpath.startswith("/"):
        return None
    parts = [p for p in PurePosixPath(relpath).parts if p != "."]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a glob; re.error for an unclosed `[`."""
    if pattern.startswith("./"):
        pattern = pattern[2:]
    if pattern.endswith("/"):
        pattern += "**"
    regex = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex.append("(?:.*/)?")  # zero or more whole segments
            i += 3
        elif pattern.startswith("**", i):
            regex.append(".*")
            i += 2
        elif pattern[i] in "*?":
            regex.append("[^/]*" if pattern[i] == "*" else "[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                raise re.error("unclosed [")
            body = pattern[i + 1 : end]
            regex.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            regex.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(regex))


def read_globs(reader: Reader, top: dict) -> dict[str, Any]:
    """The `editable:` and `protected:` lists (Config fields of the same names)."""
    kw: dict[str, Any] = {}
    for key in ("editable", "protected"):
        if key in top:
            reader.put(kw, key, _glob_list(reader, top[key], key))
    return kw


def _glob_list(reader: Reader, value: Any, where: str) -> tuple[str, ...] | None:
    if not isinstance(value, list):
        reader.fail(where, f"expected a list, got {type(value).__name__}", _GLOBS_ALLOWED)
        return None
    globs = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip() or normalise(item) is None:
            reader.fail(f"{where}[{i}]", f"got {item!r}", _GLOBS_ALLOWED)
            continue
        try:
            glob_regex(item)
        except re.error as exc:
            reader.fail(f"{where}[{i}]", f"bad glob {item!r} ({exc})", _GLOBS_ALLOWED)
            continue
        globs.append(item)
    return tuple(globs)
