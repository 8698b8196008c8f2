"""What `autogolf run` says when it stops: a few lines, and a macOS notification.

`end_of_run_summary(rows, session)` reads only ledger rows: experiments run and kept, the
best val_bpb per profile against the session's start, the benchmark time used, where the
session's time went (row field `time_s`) beside the experiments per hour, what the agent
proposer spent (when it ran: time, retries, the cost and tokens its CLI reported), and why
it stopped. Unknown values read
"unknown", never 0.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

from loop.ui import report

NOTIFY_TIMEOUT_S = 10


def _session_rows(rows: list[dict], session: str | None) -> tuple[str | None, list[dict]]:
    """The session's name (default: the latest) and its rows, manual runs excluded."""
    if session is None:
        names = list(report.session_headers(rows))
        session = names[-1] if names else None
    mine = [r for r in rows if isinstance(r, dict) and r.get("session") == session
            and not r.get("manual")]
    return session, mine


def _profile_lines(rows: list[dict]) -> list[str]:
    datasets = {p.dataset for p in report.progress(rows)}
    lines = []
    for p in report.progress(rows):
        where = f" [{p.dataset}]" if len(datasets) > 1 else ""
        lines.append(f"  {p.profile}{where}: best {report.fmt_bpb(p.best)} "
                     f"({p.best_id or '-'}) vs start {report.fmt_bpb(p.start)} "
                     f"({p.start_id or '-'}): {report.fmt_delta(p.delta)}")
    return lines or ["  no valid val_bpb measured"]


def _time_line(exps: list[dict]) -> str:
    spent = report.TimeSpent()
    for row in exps:
        seconds, unknown = report.benchmark_seconds(row)
        spent.seconds += seconds
        spent.unknown += unknown
        spent.rungs += len(report.rungs(row))
    return f"  time used: {spent.text()} (benchmark runs: every seed, the incumbent's too)"


def _night(rows: list[dict]) -> str:
    """'; 7h 58m from start to stop' when the session's header and stop row say when."""
    header = next((r for r in rows if r.get("type") == "session"), None)
    stop = next((r for r in reversed(rows) if r.get("type") == "stop"), None)
    start = report.parse_time((header or {}).get("timestamp"))
    end = report.parse_time((stop or {}).get("timestamp"))
    if start is None or end is None or end < start:
        return ""
    return f"; {report.fmt_duration((end - start).total_seconds())} from start to stop"


def _outcomes(changes: list[dict]) -> str:
    """e.g. "3 discard, 1 crash": every outcome other than keep, most frequent first."""
    counts = Counter(str(r.get("status") or report.UNKNOWN) for r in changes)
    counts.pop("keep", None)
    return ", ".join(f"{n} {status}" for status, n in counts.most_common())


def end_of_run_summary(rows: list[dict], session: str | None) -> str:
    """A few lines for the terminal and the notification; `session` None = the latest."""
    session, mine = _session_rows(rows, session)
    exps = report.experiments(mine)
    changes = [r for r in exps if not r.get("baseline")]
    kept = sum(1 for r in changes if report.is_kept_change(r))
    others = _outcomes(changes)
    lines = [f"session {session or report.UNKNOWN}: {len(changes)} experiments run, "
             f"{kept} kept" + (f" ({others})" if others else "")
             + f"; {len(exps) - len(changes)} baseline run(s)"]
    lines += _profile_lines(mine)
    lines.append(_time_line(exps))
    split = report.time_split_text(exps)
    if split:
        header = next((r for r in mine if r.get("type") == "session"), None)
        stop = next((r for r in reversed(mine) if r.get("type") == "stop"), None)
        rate = report.fmt_rate(report.experiments_per_hour(header, exps, stop))
        lines.append(f"  where the time went: {split}{_night(mine)}; {rate}")
    spent = report.agent_spent(mine)
    if spent is not None:
        lines.append(f"  agent: {spent.text()}")
    stops = [r for r in mine if r.get("type") == "stop"]
    if stops:
        lines.append(f"  stopped: {stops[-1].get('reason') or report.UNKNOWN}")
    return "\n".join(lines)


def _applescript_string(text: str) -> str:
    """`text` as an AppleScript string literal (backslashes and quotes escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _on_macos() -> bool:
    return sys.platform == "darwin"


def notify(title: str, text: str) -> None:
    """A macOS notification through osascript; silently nothing elsewhere or on failure.

    Notifying is a courtesy: it must never stop or delay the end of a run.
    """
    if not _on_macos():
        return
    osascript = shutil.which("osascript")
    if osascript is None:
        return
    script = (f"display notification {_applescript_string(text)} "
              f"with title {_applescript_string(title)}")
    try:
        subprocess.run([osascript, "-e", script], capture_output=True,
                       timeout=NOTIFY_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return
