"""What `autogolf run` does with a shared workspace (SPEC section 10), in one object.

It subscribes to the loop's events - `proposing` (sync: read the board before choosing) and
`recording` (publish the result when the row is ready) - and the loop asks it two questions
after validating a change: `duplicate` (did another agent claim or measure it?) and `claim`
(post that this agent measures it). None of them ever raises: a workspace problem is a
warning, and the ledger row's `workspace` field says what happened to the posts ("sent",
"queued" - kept in .autogolf/workspace-outbox/ and sent later - or "error: ...").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loop.backlog import ideas
from loop.daemon.events import RunEvents
from loop.store import gitsession
from loop.store.statuses import names_where
from loop.workspace import board as wb
from loop.workspace import hfbucket
from loop.workspace.settings import WorkspaceConfig, agent_id, open_storage
from loop.workspace.storage import WorkspaceError

# A later post with one of these statuses releases the claim: nothing was measured.
NOT_MEASURED = names_where(says_about_change=False)
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
                 direction: str, out: Callable[[str], None] = print):
        self.board, self.ws, self.home, self.ideas_file = board, ws, home, ideas_file
        self.editable, self.ladder = editable, ladder
        self.metric, self.direction = metric, direction
        self.out = out
        self._keys: dict[str, str] = {}
        self._status: dict[str, list[str]] = {}
        self._leaderboard_stale = False
        self._posts: list[dict] = []

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
                   ladder=tuple(cfg.ladder),
                   metric=cfg.metric, direction=cfg.direction, out=out)

    @property
    def agent(self) -> str:
        return self.board.agent_id

    # ---- the loop's events

    def proposing(self, exp_id: str, proposer: str) -> None:
        self.sync()

    def recording(self, exp: Any, row: dict) -> None:
        if not row.get("baseline"):
            self.publish(exp, row)

    # ---- hooks (never raise)

    def sync(self) -> None:
        """Send queued posts, read the board, turn others' kept patches into ideas."""
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
        """Why another agent's claim or result makes this experiment a duplicate, or None."""
        try:
            key = self._code_key(exp)
        except Exception as exc:  # noqa: BLE001 - no key: nothing to compare, not a stop
            self.out(f"warning: workspace: cannot name the incumbent: {_describe(exc)}")
            return None
        for post in self._standing_posts():
            if (post["author"] != self.agent and post.get("diff_hash") == exp.diff_hash
                    and post.get("incumbent") == key and post.get("dataset") == exp.dataset):
                verb = "claimed" if post["type"] == "experiment-proposal" else "measured"
                what = f"{post.get('experiment')}, {post['status']}" if post.get(
                    "status") else post.get("experiment")
                return (f"{verb} by agent {post['author']} ({what}) in the shared workspace: "
                        f"same change on incumbent {key}; not re-run")
        return None

    def claim(self, exp: Any) -> None:
        """An experiment-proposal post, so that other agents skip this change."""
        try:
            meta = self._meta("experiment-proposal", exp)
            body = (f"Claim: agent {self.agent} is measuring {exp.id} ({exp.description}) on "
                    f"incumbent {meta['incumbent']}, ladder {' -> '.join(self.ladder)}.")
            self._put(exp.id, self._post_path("claim", exp.id), wb.render_post(meta, body))
        except Exception as exc:  # noqa: BLE001
            self._failed(exp.id, exc)

    def publish(self, exp: Any, row: dict) -> None:
        """After the decision: the result post, results JSON and kept patch; sets row field."""
        status = row.get("status")
        claimed = exp.id in self._status
        if status == "keep" or (self.ws.publish_every_experiment and claimed) or (
                claimed and status in NOT_MEASURED):
            try:
                self._publish_result(exp, row)
            except Exception as exc:  # noqa: BLE001 - e.g. the local patch file is gone
                self._failed(exp.id, exc)
        if exp.id in self._status:
            row["workspace"] = self._summary(self._status.pop(exp.id))

    # ---- publishing

    def _publish_result(self, exp: Any, row: dict) -> None:
        base = f"{exp.session}-{exp.id}"
        patch, patch_bytes = self._publish_patch(exp, row, base)
        results = self._publish_results(exp, row, base, patch)
        meta = self._meta("result", exp)
        meta.update(status=row.get("status"), score=_last_score(row), patch=patch,
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

    def _publish_results(self, exp: Any, row: dict, base: str, patch: str | None) -> list[str]:
        """One results JSON per rung the daemon scored; returns their workspace paths."""
        if not status_measured(row):
            return []
        paths = []
        for profile, rung in (row.get("rungs") or {}).items():
            if isinstance(rung.get("val_bpb"), (int, float)):
                path = f"{wb.RESULTS}/{wb.file_name(f'{base}-{profile}', self.agent, 'json')}"
                self._put(exp.id, path, _json(self._result_record(exp, row, profile, rung,
                                                                  patch)))
                paths.append(path)
        return paths

    def _result_record(self, exp: Any, row: dict, profile: str, rung: dict,
                       patch: str | None) -> dict:
        return {
            "agent_id": self.agent, "experiment": exp.id, "score": rung["val_bpb"],
            "timestamp": row.get("timestamp") or _now(),
            "model": f"benchmark/train_gpt_mlx.py@{str(row.get('trainer_hash'))[:12]}",
            "test_samples": rung.get("val_tokens"),
            "notes": f"{exp.description}; {row.get('status')}: {row.get('reason')}",
            "metric": self.metric, "direction": self.direction, "profile": profile,
            "total_bytes": rung.get("total_bytes"), "dataset": exp.dataset,
            "commit": row.get("commit"), "patch": patch, "status": row.get("status"),
            "diff_hash": exp.diff_hash, "incumbent": self._keys.get(exp.head or ""),
            "session": exp.session,
        }

    def _regenerate(self) -> None:
        try:
            self.board.regenerate_leaderboard()
            self._leaderboard_stale = False
        except WorkspaceError as exc:
            self.out(f"warning: workspace: LEADERBOARD.md not regenerated (later): {exc}")

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
        return {"type": kind, "agent_id": self.agent, "timestamp": _now(),
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

    def _standing_posts(self) -> list[dict]:
        """Each agent's latest post per experiment, unless it says nothing was measured."""
        latest: dict[tuple[str, str], dict] = {}
        for post in self._posts:
            if post["type"] in ("experiment-proposal", "result"):
                latest[(post["author"], str(post.get("experiment")))] = post
        return [p for p in latest.values() if p.get("status") not in NOT_MEASURED]

    def _offer_patch(self, post: dict) -> None:
        """Another agent's kept patch -> a credited idea in the local backlog, once."""
        patch = post.get("patch")
        if (post["author"] == self.agent or post["type"] != "result"
                or post.get("status") != "keep" or not patch):
            return
        local = self.home / PATCHES / patch.rsplit("/", 1)[-1]
        if local.exists():
            return  # offered before
        data = self.board.read(patch)
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        text = (f"{post.get('description') or 'kept change'} (credit: agent {post['author']}, "
                f"kept as {post.get('experiment')}, {self.metric} {post.get('score')} at "
                f"{post.get('profile')}; from the shared workspace)")
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


def status_measured(row: dict) -> bool:
    return row.get("status") not in NOT_MEASURED and not row.get("baseline")


def _last_score(row: dict) -> float | None:
    rungs = list((row.get("rungs") or {}).values())
    return rungs[-1].get("val_bpb") if rungs else None


def _json(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _describe(exc: Exception) -> str:
    known = (WorkspaceError, OSError, ideas.IdeasError, gitsession.GitError)
    return str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
