"""`autogolf report`: the morning page, built from the ledger alone.

`build_report(rows, out_dir)` writes `index.html` (self-contained: inline CSS and inline SVG
charts, no script, no network, works opened from disk) and `summary.md` into `out_dir`
(normally `.autogolf/report/`).

What a point on a chart means (SPEC sections 4, 6 and 9):
- one chart per (dataset, profile): results from different datasets or profiles are never
  put in one series;
- x is the experiment's position in the ledger (chronological), so one x is the same
  experiment on every chart; kept changes are labelled with their id;
- a failed run (crash, timeout, checks, forbidden edit, invalid or mismatched metric,
  interrupted) has no trustworthy val_bpb: it is marked on the top edge as "unknown", never
  plotted as a number; a run that never reached a benchmark (checks_failed, forbidden_edit)
  is marked on the chart of its session's first rung;
- duplicates were not run and appear only in the tables; manual runs (`autogolf bench`)
  are never compared with the loop and are listed on their own.

One module per job: `rows` (reading ledger rows), `fmt` (values as text), `views` (the
numbers), `charts` (SVG), `page` (HTML), `markdown`; the names callers use are re-exported
here. The artifact cap drawn on the charts is the configuration's (`artifact_cap_bytes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loop.config import Config
from loop.ui.report.charts import render_chart
from loop.ui.report.fmt import (
    evidence_text,
    fmt_bpb,
    fmt_bytes,
    fmt_delta,
    fmt_duration,
    fmt_rate,
    idea_view,
)
from loop.ui.report.markdown import render_markdown
from loop.ui.report.page import render_html
from loop.ui.report.rows import (
    FAILED,
    UNKNOWN,
    benchmark_seconds,
    experiments,
    is_kept_change,
    loop_experiments,
    number,
    parse_time,
    rungs,
    session_headers,
    trusted_val_bpb,
    wall_seconds,
)
from loop.ui.report.views import (
    Point,
    TimeSpent,
    agent_spent,
    by_session,
    count_by_category,
    experiments_per_hour,
    progress,
    running_best,
    series,
    time_by_category,
    time_split_text,
)

__all__ = [  # what the CLI, the end-of-run summary and the tests read
    "FAILED", "UNKNOWN", "Point", "TimeSpent", "agent_spent", "benchmark_seconds",
    "build_report", "by_session",
    "count_by_category", "evidence_text", "experiments", "experiments_per_hour", "fmt_bpb",
    "fmt_bytes", "fmt_delta", "fmt_duration", "fmt_rate", "idea_view", "is_kept_change",
    "loop_experiments", "number", "parse_time", "progress", "render_chart", "rungs",
    "running_best", "series", "session_headers", "time_by_category", "time_split_text",
    "trusted_val_bpb", "wall_seconds",
]  # fmt: skip


def build_report(ledger_rows: list[dict], out_dir: Path, ideas: list | None = None,
                 repo: Path | None = None, cap_bytes: int | None = None,
                 rules: Mapping[str, Any] | None = None, max_pooled_dof: float = 10.0) -> Path:
    """Write `index.html` and `summary.md` into `out_dir`; returns the HTML path.

    Relative patch paths in the rows are read from `repo` (default: the current folder).
    `cap_bytes`: the artifact cap drawn on the charts (default: the configuration's default).
    `rules`: the sequential keep rule per profile (Config.sequential_rule), for what each
    profile can resolve; without it that line is left out.
    """
    rows = [r for r in ledger_rows if isinstance(r, dict)]
    cap_bytes = Config().artifact_cap_bytes if cap_bytes is None else cap_bytes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    index = out_dir / "index.html"
    index.write_text(render_html(rows, ideas, repo, cap_bytes, generated, rules,
                                 max_pooled_dof), encoding="utf-8")
    (out_dir / "summary.md").write_text(render_markdown(rows, ideas, generated, rules,
                                                        max_pooled_dof), encoding="utf-8")
    return index
