"""`autogolf show ID`: one experiment, every number labelled with what measured it and on which
tokens, and for a keep what to do with it in the morning.

Two scores appear and they are different things: **the judge's score** (val_bpb of the
exported artifact on the holdout, the front of the validation split, which the trainer never
sees: what decides) and **the trainer's printout** (the val_bpb the trainer and its METRIC lines
print, computed on its printout slice: the front of the *train* split, a claim the judge checks
on the same tokens). A field that does not apply is left out (the calibrated margin under the
sequential rule); nothing is printed as a raw dict.

For a keep: the command that takes it into your branch, its step-time change against the
incumbent (a slower step trains fewer steps under a wall-clock cap, like the challenge's ten
minutes), its score at fresh seeds (the runs it won on were selected, so optimistic), and the
next untried ideas of its family in the backlog.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from loop.backlog.ideas import IdeasError, IdeasFile, families
from loop.store import rows as rows_view
from loop.store.gitsession import diff_hash
from loop.ui import evidence

# Rung fields shown in the table, in this order, with what they are. The others (logs, the
# judge's, the protocol's and the sequential rule's records) get lines of their own.
LABELS: dict[str, str] = {
    "printed_val_bpb": "val_bpb the trainer printed (its printout slice)",
    "pre_quant_val_bpb": "trainer's val_bpb before int8+zlib (printout slice)",
    "delta_bpb_roundtrip": "what int8+zlib cost (trainer's printout)",
    "total_bytes": "artifact + code, bytes (measured by the judge)",
    "model_bytes": "compressed model, bytes (printed)",
    "code_bytes": "code, bytes (printed)",
    "artifact_headroom_bytes": "bytes left under the cap (printed)",
    "artifact_cap_used_pct": "% of the cap used (printed)",
    "model_params": "model parameters (printed)",
    "step_ms": "step time, ms (trainer's step_avg)",
    "train_steps": "training steps done",
    "train_tokens_consumed": "training tokens read",
    "train_shards_touched_est": "train shards read (estimate)",
    "train_shard_coverage_pct": "% of the train split read (> 100: repeated)",
    "eval_ms": "trainer's own final evaluation, ms",
    "wall_s": "wall time of the run, s",
}
# Records shown in words below the table, and bookkeeping nobody needs to read.
_NOT_IN_TABLE = {"val_bpb", "log", "run_logs", "judge", "protocol", "sequential", "runs",
                 "first_val_bpb", "timed_out", "exit_code", "early_abort", "metric_val_bpb",
                 "log_val_bpb"}
_KNOB_LINE = re.compile(r"^\+([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def show(row: dict, rows: list[dict], repo: Path, out: Callable[[str], None] = print) -> None:
    """Print experiment `row` (one of `rows`, the whole ledger) of the checkout at `repo`."""
    for line in header_lines(row):
        out(line)
    for line in rung_lines(row):
        out(line)
    if row.get("status") == "keep" and not row.get("baseline"):
        for line in keep_lines(row, rows, repo):
            out(line)


def header_lines(row: dict) -> list[str]:
    kind = " (baseline)" if row.get("baseline") else " (manual)" if row.get("manual") else ""
    lines = [f"{row['id']}{kind}  {row.get('status')}  session {row.get('session') or '-'}  "
             f"{row.get('timestamp')}",
             f"change:       {row.get('description') or '-'}",
             f"decision:     {row.get('status')}: {row.get('reason')}"]
    if row.get("noise"):  # the calibrated margin decided (keep_rule.enabled: false)
        source = f" ({row['margin_source']})" if row.get("margin_source") else ""
        lines.append(f"margin:       {_num(row.get('margin'))}{source}: the calibrated margin "
                     "rule's, max(min_improvement, k x noise)")
    before = {p: v for p, v in (row.get("incumbent_before") or {}).items() if v is not None}
    if before and not row.get("baseline"):
        lines.append("incumbent:    " + ", ".join(f"{p} {_bpb(v)}" for p, v in before.items())
                     + " (the judge's scores before this experiment)")
    idea = f", idea {row['idea']}" if row.get("idea") else ""
    lines.append(f"proposed by:  {row.get('proposer')}{idea}")
    commit = row.get("commit")
    lines.append(f"commit:       {commit[:10] if commit else 'none (not kept)'} on "
                 f"{str(row.get('base_commit'))[:10]}")
    lines.append(f"dataset:      {row.get('dataset')}; trainer file sha256 "
                 f"{str(row.get('trainer_hash'))[:12]}")
    return lines


def rung_lines(row: dict) -> list[str]:
    rungs = {p: r for p, r in (row.get("rungs") or {}).items() if isinstance(r, dict)}
    if not rungs:
        return ["", "not benchmarked"]
    lines = []
    for profile, rung in rungs.items():
        lines += ["", f"{profile}:"]
        lines += [f"  {line}" for line in _score_lines(rung)]
    names = [n for n in LABELS if any(n in r for r in rungs.values())]
    names += sorted({n for r in rungs.values() for n, v in r.items()
                     if n not in LABELS and n not in _NOT_IN_TABLE
                     and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if names:
        width = max(len(LABELS.get(n, n)) for n in names)
        lines += ["", "  " + " " * width + "".join(f" {p:>14}" for p in rungs)]
        for name in names:
            lines.append("  " + f"{LABELS.get(name, name):<{width}}"
                         + "".join(f" {_value(r.get(name)):>14}" for r in rungs.values()))
    for profile, rung in rungs.items():
        protocol = rung.get("protocol")
        if isinstance(protocol, dict) and any(v is not None for v in protocol.values()):
            shown = ", ".join(f"{k} {_short_hash(v)}" for k, v in protocol.items()
                              if v is not None)
            lines.append(f"  protocol at {profile} (as the trainer printed it): {shown}")
    return lines


def _score_lines(rung: dict) -> list[str]:
    """The judge's score (on which tokens), the trainer's printout (on which tokens), and the
    evidence the keep rule collected, in words."""
    judge = rung.get("judge") if isinstance(rung.get("judge"), dict) else {}
    holdout = judge.get("holdout") if isinstance(judge.get("holdout"), dict) else {}
    lines = []
    if "val_bpb" in rung or holdout:
        tokens = holdout.get("tokens")
        where = (f"{tokens:,} held-out tokens, the front of the validation split, never "
                 "given to the trainer") if isinstance(tokens, int) else "the holdout"
        runs = rung.get("runs") if isinstance(rung.get("runs"), list) else []
        many = (f"; the mean of {len(runs)} runs, the first {_bpb(rung.get('first_val_bpb'))}"
                if len(runs) > 1 else "")
        lines.append(f"the judge's score:  val_bpb {_bpb(rung.get('val_bpb'))} on {where}{many}")
    slice_ = holdout.get("trainer_slice")
    printed = rung.get("printed_val_bpb", rung.get("metric_val_bpb"))
    if printed is not None or slice_:
        on = (f"its printout slice, the first {slice_[1] - slice_[0]:,} tokens of the train "
              "split" if isinstance(slice_, list) and len(slice_) == 2
              else "the trainer's own validation tokens")
        lines.append(f"trainer's printout: val_bpb {_bpb(printed)} on {on} (a claim the judge "
                     "checks on the same tokens; never compared with the judge's score)")
    seq = rung.get("sequential")
    if isinstance(seq, dict) and seq.get("seeds"):
        lines.append(_sequential_line(seq))
    if rung.get("early_abort"):
        lines.append(f"stopped early: {rung['early_abort']}")
    if rung.get("timed_out"):
        lines.append("timed out")
    elif rung.get("exit_code") not in (0, None):
        lines.append(f"the benchmark exited {rung['exit_code']}")
    if rung.get("log"):
        lines.append(f"log: {rung['log']}" + (f" (+{len(rung['run_logs'])} more runs)"
                                               if rung.get("run_logs") else ""))
    return lines


def _sequential_line(seq: dict) -> str:
    seeds = seq["seeds"]
    diffs = [d for d in seq.get("diffs") or [] if isinstance(d, (int, float))]
    cand = [c for c in seq.get("candidate") or [] if isinstance(c, (int, float))]
    inc = [i for i in seq.get("incumbent") or [] if isinstance(i, (int, float))]
    span = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    text = f"sequential rule:    {len(seeds)} paired run(s) at {span}"
    if cand and inc and diffs:
        text += (f": candidate {_bpb(sum(cand) / len(cand))}, incumbent "
                 f"{_bpb(sum(inc) / len(inc))}"
                 f"{' (' + str(seq['incumbent_id']) + ')' if seq.get('incumbent_id') else ''}, "
                 f"mean gain {sum(diffs) / len(diffs):+.4f}")
    return text + (f" -> {seq['status']}" if seq.get("status") else "")


# --------------------------------------------------------------------------- a keep


def keep_lines(row: dict, rows: list[dict], repo: Path) -> list[str]:
    """What to do with a keep in the morning."""
    session = row.get("session")
    lines = ["", "to take it into your branch:"]
    earlier = [r["id"] for r in rows_view.session_experiments(rows, session)
               if r.get("status") == "keep" and not r.get("baseline")
               and r.get("id") != row.get("id") and _before(r, row)]
    commit = str(row.get("commit") or "")[:10]
    lines.append(f"  git cherry-pick {commit}    # this change alone"
                 + (f" (it builds on {', '.join(earlier)}: cherry-pick those first)"
                    if earlier else ""))
    lines.append(f"  git merge autogolf/{session}    # every keep of the session, with its "
                 "backlog notes")
    lines += _step_time_lines(row, rows)
    lines += _fresh_seed_lines(row, rows)
    lines += _next_ideas_lines(row, repo)
    return lines


def _before(a: dict, b: dict) -> bool:
    return str(a.get("id")) < str(b.get("id"))


def incumbent_row(row: dict, rows: list[dict], profile: str) -> dict | None:
    """The measurement this candidate was compared with at `profile`: the session's latest
    keep or baseline of its base code (the tree without the backlog's bookkeeping commits;
    its commit for rows without code hashes) that was measured there."""
    found = None
    for other in rows_view.session_experiments(rows, row.get("session")):
        if other.get("id") == row.get("id"):
            break
        same_code = (other.get("code") == row["base_code"] if other.get("code")
                     and row.get("base_code") else other.get("commit") == row.get("base_commit"))
        if other.get("status") == "keep" and same_code and profile in (other.get("rungs") or {}):
            found = other
    return found


def _step_time_lines(row: dict, rows: list[dict]) -> list[str]:
    lines = []
    for profile, rung in (row.get("rungs") or {}).items():
        mine = rung.get("step_ms") if isinstance(rung, dict) else None
        inc = incumbent_row(row, rows, profile)
        theirs = ((inc or {}).get("rungs") or {}).get(profile, {}).get("step_ms")
        if not isinstance(mine, (int, float)) or not isinstance(theirs, (int, float)) or (
                theirs <= 0):
            lines.append(f"step time at {profile}: unknown against the incumbent")
            continue
        change = (mine - theirs) / theirs * 100
        note = (" - slower steps: under a wall-clock cap (the challenge's 10 minutes on 8xH100)"
                " it trains fewer steps, so this gain may not transfer") if change > 2 else ""
        lines.append(f"step time at {profile}: {mine:.1f} ms vs the incumbent's "
                     f"{theirs:.1f} ms ({inc['id']}): {change:+.1f}%{note}")
    return lines


def _fresh_seed_lines(row: dict, rows: list[dict]) -> list[str]:
    found = [k for k in evidence.refreshed(rows_view.session_experiments(rows, row.get("session")))
             if k.id == row.get("id")]
    if not found:
        return []
    lines = []
    for kept in found:
        fresh = ("not re-measured yet: the next decision at this profile runs it at fresh "
                 "seeds (`autogolf status` shows it then)" if kept.fresh is None else
                 f"{kept.fresh:.4f} at {kept.fresh_runs} fresh seed(s) "
                 f"({kept.fresh - kept.selected:+.4f})")
        lines.append(f"fresh-seed estimate at {kept.profile}: {kept.selected:.4f} from the "
                     f"{kept.selected_runs} runs it won on is optimistic; {fresh}")
    return lines


def _next_ideas_lines(row: dict, repo: Path) -> list[str]:
    backlog = _backlog(repo, row.get("session"))
    if backlog is None:
        return []
    family_of = families(backlog)
    family = family_of.get(str(row.get("idea")))
    if family is None:  # a knob search's keep: the families of the knobs it moved
        patch = repo / row["patch"] if row.get("patch") else None
        moved = set(_KNOB_LINE.findall(patch.read_text(errors="replace"))) if (
            patch and patch.is_file()) else set()
        owners = [i for i in backlog.ideas if moved & set(i.knobs)]
        family = next((family_of[i.id] for i in owners if i.id in family_of), None)
    if family is None:
        return ["next ideas: none of the backlog's families matches this change "
                "(`autogolf ideas` lists them)"]
    nxt = [i for i in backlog.untried() if family_of.get(i.id) == family
           and i.id != row.get("idea")][:3]
    if not nxt:
        return [f"next ideas in its family ({family}): none untried; add one with "
                "`autogolf ideas add`"]
    return [f"next ideas in its family ({family}):",
            *(f"  [{i.id}] {_first_sentence(i.text)}" for i in nxt)]


def _backlog(repo: Path, session: str | None) -> IdeasFile | None:
    """The session's live backlog (its worktree copy), else your checkout's."""
    for path in (repo / ".autogolf" / "worktrees" / str(session) / "autoresearch.ideas.md",
                 repo / "autoresearch.ideas.md"):
        if path.is_file():
            try:
                return IdeasFile.load(path)
            except (IdeasError, OSError):
                continue
    return None


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    cut = text.find(". ")
    return text if cut < 0 or cut > 100 else text[: cut + 1]


# --------------------------------------------------------------------------- the patch


def patch_lines(row: dict, text: str) -> list[str]:
    lines = ["", f"diff ({row['patch']}):", text.rstrip() or "(empty)"]
    if row.get("diff_hash") and diff_hash(text) != row["diff_hash"]:
        # A kill or a full disk while it was written, or an edit since: say so, show anyway.
        lines.append(f"warning: {row['patch']} does not match the diff recorded in the ledger "
                     "(cut short or edited since the run); the diff above may be incomplete")
    return lines


# --------------------------------------------------------------------------- numbers


def _bpb(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "unknown"


def _short_hash(value: object) -> str:
    text = str(value)
    return f"{text[:12]}..." if re.fullmatch(r"[0-9a-f]{40,}", text) else text


def _num(value: object) -> str:
    return "unknown" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # METRIC values are floats; counts read as whole numbers
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) < 0.001:
            return f"{value:.1e}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)
