"""What `autogolf run` does with a shared workspace (SPEC section 10), in one object.

It subscribes to the loop's events and answers two questions the loop asks after validating
a change. None of it ever raises: a workspace problem is a warning, and the ledger row's
`workspace` field says what happened to the posts - "sent", "queued" (kept in
.autogolf/workspace-outbox/ and sent later) or "error: ...":

- `joined(session, dataset)` (event `session_opened`): a status-update post (who, the plan);
- `sync()` (event `proposing`), before choosing an experiment: read the board; others' kept
  patches become ideas (implausible scores set aside);
- `duplicate(exp)` after the proposal: another agent's live claim or judged result;
- `claim(exp)` before the checks: an experiment-proposal post with a lease, renewed by a
  background thread until the result (loop/workspace/lease.py);
- `publish(exp, row)` (event `recording`), when the row is ready, for EVERY finished
  experiment (a duplicate of another's claim excepted): stops the renewals, then the result
  post (which releases the claim) with status and reason, the results JSON, a kept patch;
- `left(reason)` (event `stopped`) when the run ends, also on an error: stops the renewals,
  a status-update post.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loop.backlog import ideas
from loop.events import RunEvents
from loop.store import gitsession
from loop.store.ledger import Ledger
from loop.store.statuses import names_where
from loop.workspace import board as wb
from loop.workspace import hfbucket, lease, records
from loop.workspace.settings import WorkspaceConfig, agent_id, open_storage
from loop.workspace.storage import WorkspaceError

# Results that judged the change itself, the same on any machine: they keep blocking others.
# Every other status (crash, timeout, checks_failed, the agent's outcomes, interrupted...) is
# often machine-local, so its result releases the claim (the status table's `judged`).
JUDGED = names_where(judged=True)
OUTBOX = "workspace-outbox"
PATCHES = "workspace-patches"


def code_key(repo: Path, head: str, editable: Callable[[str], bool]) -> str:
    """The incumbent as code: a hash of the editable files at `head`. The same in every
    clone, unlike a commit sha (which differs between machines that kept the same change) or
    a whole-tree hash (which differs with each machine's autogolf.yaml)."""
    listing = gitsession.git(repo, "ls-tree", "-r", head)
    lines = sorted(ln for ln in listing.splitlines()
                   if "\t" in ln and editable(ln.split("\t", 1)[1]))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


class WorkspaceHook(RunEvents):
    def __init__(self, board: wb.Board, ws: WorkspaceConfig, *, home: Path,
                 ideas_file: Callable[[], Path],
                 editable: Callable[[str], bool], ladder: tuple[str, ...], metric: str,
                 direction: str, out: Callable[[str], None] = print, proposer: str = "?"):
        self.board, self.ws, self.home, self.ideas_file = board, ws, home, ideas_file
        self.editable, self.ladder = editable, ladder
        self.metric, self.direction, self.proposer = metric, direction, proposer
        self.out = out
        # Two runs of one session can join or leave within the same second (names have a
        # one-second stamp): each run's status posts carry their own run id.
        self._run = uuid.uuid4().hex[:6]
        self._keys: dict[str, str] = {}
        self._status: dict[str, list[str]] = {}
        self._leaderboard_stale = False
        self._posts: list[dict] = []
        # The renewal thread writes too: one lock around every use of the board.
        self._lock = threading.RLock()
        self._lease: lease.Renewer | None = None
        self._leased: str | None = None  # the experiment whose claim is renewed
        self._renewals = 0
        self._session: str | None = None
        self._dataset: str | None = None
        self._counts: dict[str, int] = {}
        self._set_aside: set[str] = set()  # implausible posts, warned about once
        self._left = False

    @classmethod
    def create(cls, cfg: Any, repo: Path, ideas_file: Callable[[], Path],
               ignore: tuple[str, ...] = (),
               out: Callable[[str], None] = print) -> WorkspaceHook | None:
        """The hook for `cfg.workspace`, or None when the config has no workspace.

        `ideas_file` gives the live backlog; `ignore`: editable files that are bookkeeping
        (the backlog, the session document), not code, so not part of the incumbent's key.
        """
        ws = getattr(cfg, "workspace", None)
        if ws is None:
            return None
        from loop.config import ConfigError, is_editable

        home = Path(repo) / ".autogolf"
        try:
            me = agent_id(ws)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if ws.backend == "hf-bucket" and not hfbucket.client_available():
            raise ConfigError(f"workspace.backend: hf-bucket: {hfbucket.INSTALL_HINT}")
        board = wb.Board(open_storage(ws, repo), me, home / OUTBOX,
                         warn=lambda m: out(f"warning: {m}"))
        return cls(board, ws, home=home, ideas_file=ideas_file,
                   editable=lambda p: p not in ignore and is_editable(cfg, p),
                   ladder=tuple(cfg.ladder), metric=cfg.metric, direction=cfg.direction,
                   out=out, proposer=str(getattr(cfg, "proposer", "?")))

    @property
    def agent(self) -> str:
        return self.board.agent_id

    @property
    def renewing(self) -> bool:
        """Whether a claim's lease is being renewed now."""
        return self._lease is not None and self._lease.alive

    # ---- the loop's events

    def session_opened(self, session: str, dataset: str | None) -> None:
        self.joined(session, dataset)

    def proposing(self, exp_id: str, proposer: str) -> None:
        self.sync()

    def recording(self, exp: Any, row: dict) -> None:
        if not row.get("baseline"):
            self.publish(exp, row)

    def stopped(self, reason: str) -> None:
        self.left(reason)

    # ---- hooks (never raise)

    def joined(self, session: str, dataset: str | None) -> None:
        """A status-update post: this agent joined, with its plan (SPEC 10: announce yourself)."""
        self._session, self._dataset, self._left = session, dataset, False
        meta = {"type": "status-update", "event": "joined", "agent_id": self.agent,
                "timestamp": lease.iso(lease.utc_now()), "session": session,
                "dataset": dataset, "profile": ",".join(self.ladder),
                "proposer": self.proposer, "lease_s": f"{self.ws.lease_s:g}"}
        body = (f"Agent {self.agent} joined (session {session}). Plan: proposer "
                f"{self.proposer}, ladder {' -> '.join(self.ladder)}, dataset {dataset}; "
                f"claims hold {self.ws.lease_s:g} s unless renewed; a result is posted after "
                "every experiment.")
        self._status_post("joined", meta, body)

    def sync(self) -> None:
        """Send queued posts, read the board, turn others' kept patches into ideas."""
        with self._lock:
            try:
                self.board.flush()
                self._posts = self.board.posts()
                for post in self._posts:
                    self._offer_patch(post)
                if self._leaderboard_stale and not self.board.queued():
                    self._regenerate()
            except Exception as exc:  # noqa: BLE001 - the local loop never stops for the board
                self.out(f"warning: workspace sync failed ({self.board.storage.describe()}): "
                         f"{_describe(exc)}")

    def duplicate(self, exp: Any) -> str | None:
        """Why another agent's live claim or judged result makes this experiment a duplicate."""
        with self._lock:
            try:
                key = self._code_key(exp)
            except Exception as exc:  # noqa: BLE001 - no key: nothing to compare, not a stop
                self.out(f"warning: workspace: cannot name the incumbent: {_describe(exc)}")
                return None
            for post in self._standing_posts(lease.utc_now()):
                if (post["author"] != self.agent and post.get("diff_hash") == exp.diff_hash
                        and post.get("incumbent") == key
                        and post.get("dataset") == exp.dataset):
                    return _taken_reason(post, key)
            return None

    def claim(self, exp: Any) -> None:
        """An experiment-proposal post with a lease, renewed in the background until publish."""
        self._end_lease()
        with self._lock:
            try:
                meta = self._lease_meta(exp)
                body = (f"Claim: agent {self.agent} is measuring {exp.id} ({exp.description}) "
                        f"on incumbent {meta['incumbent']}, ladder {' -> '.join(self.ladder)}; "
                        f"held until {meta['lease_expires']} unless renewed.")
                self._put(exp.id, self._post_path("claim", exp.id), wb.render_post(meta, body))
            except Exception as exc:  # noqa: BLE001
                self._failed(exp.id, exc)
                return
            self._leased, self._renewals = exp.id, 0
            self._lease = lease.Renewer(lambda stopped: self._renew(exp, stopped),
                                        self.ws.renew_interval_s,
                                        warn=lambda m: self.out(f"warning: {m}"),
                                        name=f"autogolf-lease-{exp.id}").start()

    def publish(self, exp: Any, row: dict) -> None:
        """After the decision, for every finished experiment: the result post (it releases our
        claim), the results JSON and a kept patch; sets row["workspace"]."""
        self._end_lease()
        with self._lock:
            claimed = exp.id in self._status
            skipped = row.get("status") == "duplicate" and not claimed
            if not row.get("baseline") and not skipped:  # a skip: the other's post says it all
                try:
                    self._publish_result(exp, row)
                except Exception as exc:  # noqa: BLE001 - e.g. the local patch file is gone
                    self._failed(exp.id, exc)
                status = str(row.get("status"))
                self._counts[status] = self._counts.get(status, 0) + 1
            if exp.id in self._status:
                row["workspace"] = self._summary(self._status.pop(exp.id))

    def left(self, reason: str) -> None:
        """The run ended (any way): stop renewing, a status-update post. A claim still held
        (an error ended the run mid-experiment) is not released: its lease expires."""
        self._end_lease()
        if self._left:
            return
        self._left = True
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self._counts.items())) or "none"
        meta = {"type": "status-update", "event": "left", "agent_id": self.agent,
                "timestamp": lease.iso(lease.utc_now()), "session": self._session,
                "dataset": self._dataset, "reason": records.short(reason),
                "experiments": counts}
        body = (f"Agent {self.agent} stopped (session {self._session}): {reason}. "
                f"Experiments published this run: {counts}.")
        self._status_post("left", meta, body)

    # ---- leases

    def _lease_meta(self, exp: Any) -> dict[str, object]:
        now = lease.utc_now()  # one reading: the expiry is exactly lease_s after the post
        meta = self._meta("experiment-proposal", exp)
        meta.update(timestamp=lease.iso(now), lease_s=f"{self.ws.lease_s:g}",
                    lease_expires=lease.expires_at(now, self.ws.lease_s))
        return meta

    def _renew(self, exp: Any, stopped: Callable[[], bool]) -> None:
        """One renewal post (runs on the renewal thread); none once the result is near."""
        with self._lock:
            if stopped() or self._leased != exp.id:
                return
            self._renewals += 1
            meta = self._lease_meta(exp)
            meta["renewal"] = self._renewals
            body = (f"Lease renewal {self._renewals} of {exp.id}: held until "
                    f"{meta['lease_expires']}.")
            path = self._post_path(f"renew{self._renewals}", exp.id)
            self.board.put_now(path, wb.render_post(meta, body).encode())

    def _end_lease(self) -> None:
        """Stop the renewals (never while holding the lock: a renewal may be waiting on it)."""
        renewer, self._lease = self._lease, None
        if renewer is not None and not renewer.stop():
            self.out("warning: workspace: a lease renewal is still in flight; the result "
                     "post that follows releases the claim anyway")
        self._leased = None

    # ---- publishing

    def _publish_result(self, exp: Any, row: dict) -> None:
        base = f"{exp.session}-{exp.id}"
        patch, patch_bytes = self._publish_patch(exp, row, base)
        results, scored = self._publish_results(exp, row, base, patch)
        meta = self._meta("result", exp)
        meta.update(status=row.get("status"), reason=records.short(row.get("reason")),
                    score=_last_score(row), incumbent_score=scored.get("incumbent_score"),
                    baseline_score=scored.get("baseline_score"), gain=scored.get("gain"),
                    metric=self.metric, direction=self.direction, patch=patch,
                    patch_bytes=patch_bytes, results=",".join(results) or None,
                    commit=row.get("commit"))
        body = (f"Result: {exp.id} ({exp.description}) {row.get('status')}: {row.get('reason')}"
                + (f"\n\nPatch: {patch} ({patch_bytes} bytes)" if patch else ""))
        self._put(exp.id, self._post_path("result", exp.id), wb.render_post(meta, body))
        if results:
            self._leaderboard_stale = True
            self._regenerate()

    def _publish_patch(self, exp: Any, row: dict, base: str) -> tuple[str | None, int | None]:
        """The kept patch under artifacts/scripts/: (workspace path, size) or (None, None)."""
        if row.get("status") != "keep" or not exp.patch:
            return None, None
        path = f"{wb.SCRIPTS}/{wb.file_name(base + '-patch', self.agent, 'diff')}"
        data = (self.home.parent / exp.patch).read_bytes()
        self._put(exp.id, path, data)
        return path, len(data)

    def _publish_results(self, exp: Any, row: dict, base: str,
                         patch: str | None) -> tuple[list[str], dict]:
        """One results JSON per rung reached (one for none); (their paths, the last record)."""
        if row.get("status") != "keep" and not self.ws.publish_every_experiment:
            return [], {}
        rows = Ledger(self.home / "ledger.jsonl").rows()
        paths, record = [], {}
        for profile, rung in records.rungs_to_publish(row):
            baseline = records.own_baseline(rows, exp, profile, rung) if profile else None
            record = records.result_record(
                exp, row, profile, rung, agent=self.agent, metric=self.metric,
                direction=self.direction, patch=patch, incumbent=self._keys.get(exp.head or ""),
                baseline=baseline)
            record["timestamp"] = record["timestamp"] or lease.iso(lease.utc_now())
            name = f"{base}-{profile or 'unmeasured'}"
            path = f"{wb.RESULTS}/{wb.file_name(name, self.agent, 'json')}"
            self._put(exp.id, path, _json(record))
            paths.append(path)
        return paths, record

    def _regenerate(self) -> None:
        try:
            self.board.regenerate_leaderboard()
            self._leaderboard_stale = False
        except WorkspaceError as exc:
            self.out(f"warning: workspace: LEADERBOARD.md not regenerated (later): {exc}")

    def _status_post(self, event: str, meta: dict[str, object], body: str) -> None:
        with self._lock:
            try:
                path = self._post_path(f"status-{event}",
                                       f"{self._session or 'run'}-{self._run}")
                self.board.put(path, wb.render_post(meta, body).encode())
            except Exception as exc:  # noqa: BLE001 - never raises into the loop
                self.out(f"warning: workspace: status-update not posted: {_describe(exc)}")

    def _put(self, exp_id: str, path: str, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        try:
            outcome = self.board.put(path, data)
        except (WorkspaceError, OSError) as exc:
            outcome = f"error: {exc}"
            self.out(f"warning: workspace: {exc}")
        self._status.setdefault(exp_id, []).append(outcome)

    def _failed(self, exp_id: str, exc: Exception) -> None:
        self.out(f"warning: workspace: {_describe(exc)}")
        self._status.setdefault(exp_id, []).append(f"error: {_describe(exc)}")

    def _meta(self, kind: str, exp: Any) -> dict[str, object]:
        return {"type": kind, "agent_id": self.agent,
                "timestamp": lease.iso(lease.utc_now()), "session": exp.session,
                "experiment": exp.id, "description": exp.description,
                "diff_hash": exp.diff_hash, "incumbent": self._safe_key(exp),
                "profile": ",".join(self.ladder), "dataset": exp.dataset}

    def _post_path(self, kind: str, exp_id: str) -> str:
        return f"{wb.POSTS}/{wb.file_name(f'{wb.stamp()}-{kind}-{exp_id}', self.agent, 'md')}"

    @staticmethod
    def _summary(outcomes: list[str]) -> str:
        errors = [o for o in outcomes if o.startswith("error")]
        if errors:
            return errors[0]
        return "queued" if "queued" in outcomes else "sent"

    # ---- learning

    def _standing_posts(self, now: Any) -> list[dict]:
        """What still blocks: per agent and experiment, its latest result when it judged the
        change (JUDGED), else - no result yet - its claim while the lease holds at `now`."""
        claims: dict[tuple, dict] = {}
        results: dict[tuple, dict] = {}
        for post in self._posts:
            key = (post["author"], post.get("session"), str(post.get("experiment")))
            if post["type"] == "result":
                results[key] = post  # posts are oldest first: the last one stands
            elif post["type"] == "experiment-proposal":
                expiry = lease.claim_expiry(post)
                if expiry is not None and expiry > now:
                    held = claims.get(key)
                    if held is None or lease.claim_expiry(held) < expiry:
                        claims[key] = {**post, "held_until": lease.iso(expiry)}
        standing = [p for p in results.values()
                    if p.get("status", "keep") in JUDGED and self._believable(p)]
        return standing + [p for k, p in claims.items() if k not in results]

    def _believable(self, post: dict) -> bool:
        """A post's score passes the plausibility bounds (no score: nothing to doubt)."""
        if post.get("score") is None:
            return True
        return wb.implausible(post["score"], post.get("metric") or self.metric,
                              post.get("direction") or self.direction,
                              post.get("incumbent_score")) is None

    def _offer_patch(self, post: dict) -> None:
        """Another agent's kept patch -> a credited idea in the local backlog, once, unless its
        score is implausible (board.implausible: the bounds and why)."""
        patch = post.get("patch")
        if (post["author"] == self.agent or post["type"] != "result"
                or post.get("status") != "keep" or not patch):
            return
        local = self.home / PATCHES / patch.rsplit("/", 1)[-1]
        if local.exists() or post["path"] in self._set_aside:
            return  # offered (or set aside) before
        why = wb.implausible(post.get("score"), post.get("metric") or self.metric,
                             post.get("direction") or self.direction,
                             post.get("incumbent_score"))  # a keep without a score: doubted
        if why:
            self._set_aside.add(post["path"])
            self.out(f"warning: workspace: agent {post['author']}'s {post.get('experiment')} "
                     f"not offered as an idea, its score is implausible: {why}")
            return
        data = self.board.read(patch)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        text = (f"{post.get('description') or 'kept change'} (credit: agent {post['author']}, "
                f"kept as {post.get('experiment')}, {self.metric} {post.get('score')} at "
                f"{post.get('profile')}"
                + (f", gain {post['gain']} over its own baseline" if post.get("gain") else "")
                + "; from the shared workspace)")
        # The backlog lives in the session worktree; the copy stays outside it (absolute).
        backlog = ideas.IdeasFile.load(self.ideas_file(), missing_ok=True)
        idea_id = backlog.add(text, patch=str(local.resolve()))
        backlog.save()
        self.out(f"workspace: agent {post['author']}'s kept patch is idea {idea_id}")

    def _code_key(self, exp: Any) -> str:
        head = exp.head or ""
        if head not in self._keys:  # the main checkout shares the worktree's objects
            self._keys[head] = code_key(self.home.parent, head, self.editable)
        return self._keys[head]

    def _safe_key(self, exp: Any) -> str | None:
        try:
            return self._code_key(exp)
        except gitsession.GitError:
            return None


def _taken_reason(post: dict, key: str) -> str:
    if post["type"] == "experiment-proposal":
        return (f"claimed by agent {post['author']} ({post.get('experiment')}, lease held "
                f"until {post['held_until']}) in the shared workspace: same change on "
                f"incumbent {key}; not re-run")
    return (f"measured by agent {post['author']} ({post.get('experiment')}, "
            f"{post.get('status', 'keep')}) in the shared workspace: same change on "
            f"incumbent {key}; not re-run")


def _last_score(row: dict) -> float | None:
    rungs = list((row.get("rungs") or {}).values())
    return records.score_of(rungs[-1]) if rungs else None


def _json(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _describe(exc: Exception) -> str:
    known = (WorkspaceError, OSError, ideas.IdeasError, gitsession.GitError)
    return str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"


