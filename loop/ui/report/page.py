"""The report as one self-contained HTML page: inline CSS and SVG, no script, no network."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loop.ui.report.charts import inline_svg, render_chart
from loop.ui.report.fmt import (
    fmt_bpb,
    fmt_bytes,
    fmt_delta,
    fmt_duration,
    fmt_time,
    idea_view,
    rung_summary,
    session_count,
    short_commit,
)
from loop.ui.report.rows import (
    FAILED,
    UNKNOWN,
    benchmark_seconds,
    categories,
    category,
    experiments,
    is_kept_change,
    loop_experiments,
    manual_runs,
    patch_text,
    rungs,
)
from loop.ui.report.views import (
    agent_spent,
    count_by_category,
    deltas,
    evidence_lines,
    first_total_bytes,
    progress,
    series,
    sessions,
    time_by_category,
)

CSS = """
body{font:15px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Helvetica,Arial,sans-serif;
 margin:0;background:#f5f6f8;color:#1d232a}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;
 border-bottom:1px solid #d8dde3;padding-bottom:4px}
.sub{color:#5b6570;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:10px 16px;
 min-width:150px}
.card b{display:block;font-size:22px}.card span{color:#5b6570;font-size:13px}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13.5px}
th,td{border:1px solid #e1e5ea;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4}td.num{text-align:right;font-variant-numeric:tabular-nums;
 white-space:nowrap}
.unknown{color:#b03a2e;font-style:italic}.good{color:#1e7d46}.bad{color:#b03a2e}
.zero{color:#a0a8b0}
.chart-box{background:#fff;border:1px solid #d8dde3;border-radius:8px;padding:8px;
 margin:12px 0}
svg.chart{width:100%;height:auto;display:block}
details{margin:4px 0}summary{cursor:pointer;color:#1f5fa8}
pre.diff{background:#0f1720;color:#e6edf3;padding:10px;border-radius:6px;overflow:auto;
 max-height:520px;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.status{font-weight:600}.note{color:#5b6570;font-size:13px}
pre.diff .add{color:#7ee787}pre.diff .del{color:#ffa198}pre.diff .hunk{color:#79c0ff}
pre.diff .file{color:#d2a8ff}table.fixed{table-layout:fixed}
tr.diff-row td{border-top:none;padding-top:0}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _cell(text: str, cls: str = "") -> str:
    if text == UNKNOWN:
        cls = (cls + " unknown").strip()
    return f'<td class="{cls}">{esc(text)}</td>' if cls else f"<td>{esc(text)}</td>"


def _table(head: list[str], body: list[str]) -> str:
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cards(rows: list[dict]) -> str:
    loop = loop_experiments(rows)
    changes = [r for r in loop if not r.get("baseline")]
    failed = sum(1 for r in changes if r.get("status") in FAILED)
    seconds = sum(benchmark_seconds(r)[0] for r in experiments(rows))
    cards = [(len(changes), "experiments (baselines apart)"),
             (sum(1 for r in changes if is_kept_change(r)), "kept"),
             (failed, "failed"), (fmt_duration(seconds), "benchmark time"),
             (len(sessions(rows)), "sessions")]
    inner = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(t)}</span></div>'
                    for v, t in cards)
    return f'<div class="cards">{inner}</div>'


def _progress_html(rows: list[dict]) -> str:
    body = []
    for p in progress(rows):
        cls = "good" if p.delta is not None and p.delta < 0 else ""
        body.append("<tr>" + _cell(p.profile) + _cell(p.dataset)
                    + _cell(f"{fmt_bpb(p.start)} ({p.start_id or '-'})", "num")
                    + _cell(f"{fmt_bpb(p.best)} ({p.best_id or '-'})", "num")
                    + _cell(fmt_delta(p.delta), f"num {cls}") + _cell(str(p.kept), "num")
                    + "</tr>")
    if not body:
        return '<p class="note">No measurements yet.</p>'
    return _table(["profile", "dataset", "start", "best", "best - start", "kept"], body)


def _charts_html(rows: list[dict], cap_bytes: int) -> str:
    parts = []
    for n, ((dataset, profile), points) in enumerate(sorted(series(rows).items()), start=1):
        svg = render_chart(dataset, profile, points, cap_bytes, salt=f"{dataset}/{profile}")
        parts.append(f'<div class="chart-box" id="chart-{n}">'
                     f"{inline_svg(svg, f'c{n}')}</div>")
    if not parts:
        return '<p class="note">No benchmark results to chart yet.</p>'
    return "".join(parts)


def _diff_line(line: str) -> str:
    """One escaped diff line, coloured by what it does."""
    if line.startswith(("+++", "---")):
        kind = "file"
    elif line.startswith("@@"):
        kind = "hunk"
    else:
        kind = {"+": "add", "-": "del"}.get(line[:1], "")
    return f'<span class="{kind}">{esc(line)}</span>' if kind else esc(line)


def _diff_html(row: dict, repo: Path | None) -> str:
    text, note = patch_text(row, repo)
    if text is None:
        return f'<span class="note">{esc(note)}</span>'
    lines = "\n".join(_diff_line(line) for line in text.split("\n"))
    return (f"<details><summary>diff of {esc(row.get('id'))} ({esc(note)})</summary>"
            f'<pre class="diff">{lines}</pre></details>')


def _deltas_html(row: dict) -> str:
    lines = []
    for profile, val, base, delta in deltas(row):
        cls = "good" if delta is not None and delta < 0 else "unknown" if delta is None else ""
        lines.append(f"{esc(profile)}: {esc(fmt_bpb(val))} vs {esc(fmt_bpb(base))} "
                     f'<span class="{cls}">({esc(fmt_delta(delta))})</span>')
    return "<br>".join(lines) or '<span class="unknown">unknown</span>'


KEPT_COLUMNS = (("id", "7%"), ("change", "38%"), ("val_bpb vs incumbent (delta)", "30%"),
                ("total_bytes", "12%"), ("commit", "13%"))


def _kept_html(rows: list[dict], repo: Path | None) -> str:
    body = []
    for row in experiments(rows):
        if not is_kept_change(row):
            continue
        body.append(f'<tr id="kept-{esc(row.get("id"))}">' + _cell(str(row.get("id")))
                    + _cell(str(row.get("description") or "")) + f"<td>{_deltas_html(row)}</td>"
                    + _cell(fmt_bytes(first_total_bytes(row)), "num")
                    + f'<td><code title="{esc(row.get("commit") or "")}">'
                    f"{esc(short_commit(row.get('commit')))}</code></td></tr>"
                    # The diff gets the table's full width on a row of its own.
                    + f'<tr class="diff-row"><td colspan="{len(KEPT_COLUMNS)}">'
                    f"{_diff_html(row, repo)}</td></tr>")
    if not body:
        return '<p class="note">No change has been kept yet.</p>'
    cols = "".join(f'<col style="width:{width}">' for _, width in KEPT_COLUMNS)
    head = "".join(f"<th>{esc(name)}</th>" for name, _ in KEPT_COLUMNS)
    return (f'<table class="fixed"><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _status_html(rows: list[dict]) -> str:
    counts, times = count_by_category(rows), time_by_category(rows)
    names = categories() + sorted(set(counts) - set(categories()))
    body = []
    for name in names:
        count = counts.get(name, 0)
        spent = times[name].text() if count else "-"
        body.append("<tr>" + _cell(name, "status") + _cell(str(count), "num zero" if not count
                                                           else "num")
                    + _cell(spent, "num") + "</tr>")
    return _table(["status", "experiments", "benchmark time (sum of rung wall_s)"], body)


def _agent_html(rows: list[dict]) -> str:
    spent = agent_spent(rows)
    if spent is None:
        return "<p>No experiment was proposed by the agent.</p>"
    cells = [("attempts", str(spent.attempts)), ("tries (with retries)", str(spent.tries)),
             ("agent time", fmt_duration(spent.wall_s)),
             ("retries after rate limits", str(spent.retries)),
             ("waited for rate limits", fmt_duration(spent.waited_s)),
             ("reported cost", f"${spent.cost_usd:.2f}" if spent.cost_usd is not None
              else UNKNOWN),
             ("reported tokens", f"{spent.tokens:,}" if spent.tokens is not None else UNKNOWN),
             ("attempts that reported no usage", str(spent.unreported))]
    return _table(["", "the agent proposer"],
                  ["<tr>" + _cell(k) + _cell(v, "num unknown" if v == UNKNOWN else "num")
                   + "</tr>" for k, v in cells])


def _link_ids(text: str, known: set[str]) -> str:
    """Escaped text with experiment ids turned into in-page links."""
    def link(match: re.Match[str]) -> str:
        exp_id = match.group(0)
        return f'<a href="#exp-{exp_id}">{exp_id}</a>' if exp_id in known else exp_id

    return re.sub(r"\bE\d{4,}\b", link, esc(text))


def _ideas_html(ideas: list | None, rows: list[dict]) -> str:
    if ideas is None:
        return '<p class="note">No ideas backlog was given to the report.</p>'
    known = {str(r.get("id")) for r in experiments(rows)}
    body = []
    for idea in map(idea_view, ideas):
        evidence = "<br>".join(_link_ids(e, known) for e in idea["evidence"]) or "-"
        body.append("<tr>" + _cell(idea["id"]) + _cell(idea["status"], "status")
                    + _cell(idea["text"]) + f"<td>{evidence}</td></tr>")
    if not body:
        return '<p class="note">The ideas backlog is empty.</p>'
    return _table(["id", "status", "idea", "evidence"], body)


def _sessions_html(rows: list[dict]) -> str:
    body = []
    for s in sessions(rows):
        header = s["header"]
        stops = "<br>".join(f"{esc(fmt_time(r.get('timestamp')))}: {esc(r.get('reason') or '')}"
                            for r in s["stops"]) or "no stop recorded (running, or killed)"
        ladder = header.get("ladder")
        body.append("<tr>" + _cell(s["name"]) + _cell(fmt_time(header.get("timestamp")))
                    + _cell(str(header.get("dataset") or UNKNOWN))
                    + _cell(" -> ".join(ladder) if isinstance(ladder, list) else UNKNOWN)
                    + _cell(str(header.get("proposer") or UNKNOWN))
                    + _cell(session_count(s), "num")
                    + f"<td>{stops}</td></tr>")
    if not body:
        return '<p class="note">No session in the ledger.</p>'
    return _table(["session", "started", "dataset", "ladder", "proposer", "experiments",
                   "stopped"], body)


def _manual_html(rows: list[dict]) -> str:
    body = ["<tr>" + _cell(str(r.get("id"))) + _cell(fmt_time(r.get("timestamp")))
            + _cell(rung_summary(r)) + _cell(fmt_bytes(first_total_bytes(r)), "num")
            + _cell(str(r.get("status") or UNKNOWN), "status") + _cell(str(r.get("reason") or ""))
            + _cell(short_commit(r.get("commit"))) + "</tr>" for r in manual_runs(rows)]
    if not body:
        return '<p class="note">No manual runs.</p>'
    return ('<p class="note">Runs of <code>autogolf bench</code>: recorded, never compared with '
            "the loop's incumbents and not on the charts above.</p>"
            + _table(["id", "when", "val_bpb", "total_bytes", "status", "reason", "commit"],
                     body))


def _all_html(rows: list[dict]) -> str:
    body = []
    for n, row in enumerate(loop_experiments(rows), start=1):
        seconds, unknown = benchmark_seconds(row)
        spent = fmt_duration(seconds) if rungs(row) and not unknown else (
            UNKNOWN if unknown else "-")
        body.append(f'<tr id="exp-{esc(row.get("id"))}">' + _cell(str(n), "num")
                    + _cell(str(row.get("id"))) + _cell(str(row.get("session") or "-"))
                    + _cell(category(row), "status") + _cell(rung_summary(row))
                    + _cell(fmt_bytes(first_total_bytes(row)) if rungs(row) else "-", "num")
                    + _cell(spent, "num") + _cell(str(row.get("description") or ""))
                    + _cell(str(row.get("reason") or "")) + "</tr>")
    return (f"<details><summary>All {len(body)} experiments of the loop</summary>"
            + _table(["#", "id", "session", "status", "val_bpb", "total_bytes", "time",
                      "change", "reason"], body) + "</details>")


def _evidence_html(rows: list[dict], rules: Mapping[str, Any] | None,
                   max_pooled_dof: float) -> str:
    lines = evidence_lines(rows, rules, max_pooled_dof)
    if not lines:
        return ('<p class="note">No sequential decision, keep or timed experiment yet.</p>')
    return "<ul>" + "".join(f"<li><code>{esc(line)}</code></li>" for line in lines) + "</ul>"


def render_html(rows: list[dict], ideas: list | None, repo: Path | None,
                cap_bytes: int, generated: str, rules: Mapping[str, Any] | None = None,
                max_pooled_dof: float = 10.0) -> str:
    sections = [
        ("Progress per profile", _progress_html(rows)),
        ("val_bpb and artifact size per experiment", _charts_html(rows, cap_bytes)),
        ("Kept changes", _kept_html(rows, repo)),
        ("What the evidence can resolve", _evidence_html(rows, rules, max_pooled_dof)),
        ("Experiments by status", _status_html(rows)),
        ("What the agent spent", _agent_html(rows)),
        ("Ideas and their evidence", _ideas_html(ideas, rows)),
        ("Sessions", _sessions_html(rows)),
        ("Manual runs", _manual_html(rows)),
        ("Every experiment", _all_html(rows)),
    ]
    body = "".join(f"<h2>{esc(title)}</h2>{content}" for title, content in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>autogolf report</title><style>{CSS}</style></head><body><main>"
            f"<h1>autogolf report</h1><p class=\"sub\">generated {esc(generated)} from "
            f"{len(experiments(rows))} experiments in the ledger · unknown values are shown as "
            f"<span class=\"unknown\">unknown</span>, never as 0</p>{_cards(rows)}{body}"
            "</main></body></html>\n")
