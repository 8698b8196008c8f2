"""Where the judge finds a run's artifact (issue 25).

The daemon asks every trainer to write its model to `AUTOGOLF_ARTIFACT_PATH` (a path the
daemon chose, outside the worktree); ours does. Upstream's MLX trainer, at every version,
ignores that variable and writes `<OUT_DIR>/<RUN_ID>_mlx_model.int8.ptz`, and
autoresearch.sh sets OUT_DIR to `logs/autoresearch`, so that file lands in the run's
`logs/` outputs: `<outputs>/autoresearch/<RUN_ID>_mlx_model.int8.ptz`, where `outputs` is
the run's own output folder when the benchmark runs sealed (bind-mounted at `logs/`), and the
worktree's `logs/` otherwise. The daemon names RUN_ID and the output folder too, and removes
a stale file at either path before the run, so both are the daemon's choices: a trainer
cannot point the judge at a file of its own choosing.
"""

from __future__ import annotations

from pathlib import Path

OUT_SUBDIR = "autoresearch"  # autoresearch.sh's OUT_DIR, relative to logs/
UPSTREAM_SUFFIX = "_mlx_model.int8.ptz"
MODEL_PATTERNS = ("*.ptz", "*.int8*", "*.pt", "*.npz", "*.bin")


def upstream_path(outputs: Path, run_id: str) -> Path:
    """Where upstream's trainer writes the run's int8 export (OUT_DIR + RUN_ID)."""
    return Path(outputs) / OUT_SUBDIR / f"{run_id}{UPSTREAM_SUFFIX}"


def find_artifact(asked: Path, outputs: Path, run_id: str) -> tuple[Path | None, str]:
    """(the artifact, how it was found) or (None, what was looked for and the fix).

    `asked` is AUTOGOLF_ARTIFACT_PATH; `outputs` where the run's `logs/` writes went; run_id
    the RUN_ID the benchmark was given.
    """
    asked, upstream = Path(asked), upstream_path(outputs, run_id)
    if asked.is_file():
        return asked, f"the artifact the daemon asked for ({asked})"
    if upstream.is_file():
        return upstream, f"upstream's export under OUT_DIR ({upstream})"
    others = _other_model_files(Path(outputs), {asked, upstream})
    seen = (f"; model files it did write, which the judge does not score: "
            f"{', '.join(str(p) for p in others)}" if others else "")
    return None, (
        f"no artifact: neither {asked} (AUTOGOLF_ARTIFACT_PATH) nor {upstream} (upstream's "
        f"<OUT_DIR>/<RUN_ID>{UPSTREAM_SUFFIX}) exists after the run{seen}. Fix: write the "
        f"int8 export to $AUTOGOLF_ARTIFACT_PATH, or under $OUT_DIR as "
        f"$RUN_ID{UPSTREAM_SUFFIX}, and keep autoresearch.sh from deleting it")


def _other_model_files(outputs: Path, skip: set[Path], limit: int = 3) -> list[Path]:
    if not outputs.is_dir():
        return []
    found = sorted({p for pattern in MODEL_PATTERNS for p in outputs.rglob(pattern)
                    if p.is_file() and p not in skip})
    return found[:limit]
