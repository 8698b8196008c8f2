"""`autogolf workspace init PATH` and `autogolf workspace status`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loop.repo import find_repo, repo_config
from loop.workspace import board as wb
from loop.workspace.settings import agent_id, open_storage, storage_for
from loop.workspace.storage import Storage, WorkspaceError

LAST_POSTS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    verbs = parser.add_subparsers(dest="workspace_verb", metavar="ACTION", required=True)
    init = verbs.add_parser("init", help="create the shared layout with README files")
    init.add_argument("path", help="a folder every machine can reach, or hf://buckets/NS/NAME")
    status = verbs.add_parser("status", help="agents, their last posts, the leaderboard")
    status.add_argument("path", nargs="?",
                        help="the workspace (default: `workspace:` in autogolf.yaml)")
    status.add_argument("--config", metavar="PATH", help="config file (default: autogolf.yaml)")


def main(args: argparse.Namespace) -> int:
    try:
        if args.workspace_verb == "init":
            return _init(args.path)
        return _status(args)
    except WorkspaceError as exc:  # a user error: one line, exit 2 (as loop.ui.cli does)
        print(f"autogolf: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


def _init(location: str) -> int:
    if not location.startswith("hf://"):
        Path(location).expanduser().mkdir(parents=True, exist_ok=True)
    storage = storage_for(location)
    created = wb.init_layout(storage)
    print(f"workspace {storage.describe()}: "
          + (f"created {', '.join(created)}" if created else "already initialised"))
    print("point each daemon at it in autogolf.yaml:\n  workspace:\n    agent_id: <unique id>")
    if location.startswith("hf://"):
        print(f"    backend: hf-bucket\n    bucket: {location.removeprefix('hf://buckets/')}")
    else:
        print(f"    backend: dir\n    path: {Path(location).expanduser().resolve()}")
    return 0


def _status(args: argparse.Namespace) -> int:
    storage, me = _storage_from(args)
    board = wb.Board(storage, me or "status", Path("/nonexistent-outbox"))
    print(f"workspace {storage.describe()}" + (f" (this agent: {me})" if me else ""))
    posts = board.posts()
    agents = board.agents()
    print(f"agents: {', '.join(agents) or 'none yet'}")
    for agent in agents:
        mine = [p for p in posts if p["author"] == agent][-LAST_POSTS:]
        print(f"  {agent}: {len([p for p in posts if p['author'] == agent])} post(s)")
        for post in mine:
            print(f"    {post.get('timestamp', '?')}  {post['type']:<19} "
                  f"{post.get('experiment', '-')}  {_what(post)}")
    print()
    print(wb.render_leaderboard(board.results()).rstrip())
    return 0


def _storage_from(args: argparse.Namespace) -> tuple[Storage, str | None]:
    if args.path:
        return storage_for(args.path), None
    repo = find_repo(Path.cwd(), require_commit=False)
    cfg = repo_config(repo, args.config)
    if cfg.workspace is None:
        raise WorkspaceError("no `workspace:` section in autogolf.yaml; give a PATH or add "
                             "one (see docs/WORKSPACE.md)")
    return open_storage(cfg.workspace, repo), agent_id(cfg.workspace)


def _what(post: dict) -> str:
    if post["type"] == "status-update":
        return f"{post.get('event', '')} {post.get('reason') or post.get('proposer') or ''}"
    if post.get("lease_expires"):
        return f"{post.get('description', '')}  (lease until {post['lease_expires']})"
    if post["type"] == "result":
        score = post.get("score", "?")
        return f"{post.get('status', '?')} score={score}  {post.get('description', '')}"
    return str(post.get("description", ""))
