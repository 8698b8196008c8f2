"""The report as Markdown (`summary.md`): the same facts as the page, no charts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loop.ui.report.fmt import (
    fmt_bpb,
    fmt_delta,
    idea_view,
    rung_summary,
    session_count,
    short_commit,
)
from loop.ui.report.rows import categories, experiments, is_kept_change, manual_runs
from loop.ui.report.views import (
    agent_spent,
    count_by_category,
    deltas,
    evidence_lines,
    progress,
    sessions,
    time_by_category,
)


def md_cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(head: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in body]
    return lines


def render_markdown(rows: list[dict], ideas: list | None, generated: str,
                    rules: Mapping[str, Any] | None = None, max_pooled_dof: float = 10.0) -> str:
    lines = [f"# autogolf report ({generated})", ""]
    for s in sessions(rows):
        stop = s["stops"][-1].get("reason") if s["stops"] else "no stop recorded"
        lines.append(f"- session {s['name']}: {session_count(s)}; last stop: {stop}")
    lines += ["", "## Progress per profile", ""]
    lines += _md_table(["profile", "dataset", "start", "best", "best - start", "kept"],
                       [[p.profile, p.dataset, f"{fmt_bpb(p.start)} ({p.start_id or '-'})",
                         f"{fmt_bpb(p.best)} ({p.best_id or '-'})", fmt_delta(p.delta),
                         str(p.kept)] for p in progress(rows)])
    lines += ["", "## Kept changes", ""]
    lines += _md_table(["id", "change", "val_bpb (delta)", "commit", "patch"],
                       [[str(r.get("id")), str(r.get("description") or ""),
                         "; ".join(f"{p} {fmt_bpb(v)} ({fmt_delta(d)})"
                                   for p, v, _, d in deltas(r)),
                         short_commit(r.get("commit")), str(r.get("patch") or "-")]
                        for r in experiments(rows) if is_kept_change(r)])
    found = evidence_lines(rows, rules, max_pooled_dof)
    if found:
        lines += ["", "## What the evidence can resolve", ""] + [f"- {line}" for line in found]
    counts, times = count_by_category(rows), time_by_category(rows)
    lines += ["", "## Experiments by status", ""]
    names = [n for n in categories() if n in counts] + sorted(set(counts) - set(categories()))
    lines += _md_table(["status", "experiments", "benchmark time"],
                       [[name, str(counts[name]), times[name].text()] for name in names])
    spent = agent_spent(rows)
    if spent is not None:
        lines += ["", "## What the agent spent", "", spent.text()]
    manual = manual_runs(rows)
    if manual:
        lines += ["", "## Manual runs (not compared with the loop)", ""]
        lines += _md_table(["id", "val_bpb", "status"], [[str(r.get("id")), rung_summary(r),
                                                          str(r.get("status"))] for r in manual])
    if ideas is not None:
        lines += ["", "## Ideas", ""]
        lines += _md_table(["id", "status", "idea", "evidence"],
                           [[i["id"], i["status"], i["text"], "; ".join(i["evidence"])]
                            for i in map(idea_view, ideas)])
    return "\n".join(lines) + "\n"
