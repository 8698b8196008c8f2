"""The one place proposers are built from autogolf.yaml (`proposer:` and its settings).

`make_proposer` returns the proposer `proposer:` names, or a Rotation when `proposer:` lists
several (`rotation:`). A new proposer is one entry in `BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loop.backlog import ideas
from loop.config import Config
from loop.data import datasets
from loop.errors import UserError
from loop.proposers.agent import AgentConfigError, AgentProposer
from loop.proposers.base import Proposer
from loop.proposers.ideas import IdeasProposer
from loop.proposers.optuna_search import ModelSearchProposer, SearchStorageError, default_storage
from loop.proposers.rotation import Rotation
from loop.proposers.sandbox import SandboxError, choose
from loop.proposers.search import SearchProposer, read_knobs
from loop.store import pilog
from loop.store.ledger import Ledger

IDEAS_FILE = "autoresearch.ideas.md"


class Context:
    """What a builder may need: the config, the repo, and the live session's pieces.

    `worktree()` gives the session worktree once it exists (the ideas proposer reads the
    backlog there); `stop()` ends a running agent early (a stop signal); `asked_to_stop()`
    also counts the stop file (it ends a wait, not a run); `token` goes into the agent's
    environment so a resumed daemon kills an agent its killed predecessor left.
    """

    def __init__(self, cfg: Config, repo: Path, worktree: Callable[[], Path] | None = None,
                 stop: Callable[[], bool] | None = None, token: str | None = None,
                 asked_to_stop: Callable[[], bool] | None = None):
        self.cfg, self.repo = cfg, Path(repo)
        self.worktree = worktree or (lambda: self.repo)
        self.stop, self.token = stop, token
        self.asked_to_stop = asked_to_stop or stop


def _search(ctx: Context) -> Proposer:
    cfg = ctx.cfg
    if not cfg.knobs:
        raise UserError("the search proposer has no knobs: declare some under `knobs:` in "
                        "autogolf.yaml")
    # A knob whose file or line is missing is refused now, naming both, not after a baseline.
    read_knobs(ctx.repo, list(cfg.knobs))
    if cfg.search_strategy == "local":
        return SearchProposer(list(cfg.knobs), seed=cfg.proposer_seed,
                              cap_bytes=cfg.artifact_cap_bytes, profile=cfg.ladder[0])
    try:
        return ModelSearchProposer(
            list(cfg.knobs), strategy=cfg.search_strategy, ladder=cfg.ladder,
            storage=cfg.search_storage or default_storage(ctx.repo / ".autogolf"),
            cap_bytes=cfg.artifact_cap_bytes, seed=cfg.proposer_seed)
    except SearchStorageError as exc:
        raise UserError(str(exc)) from None


def _ideas(ctx: Context) -> Proposer:
    return IdeasProposer(lambda: ideas.IdeasFile.load(ctx.worktree() / IDEAS_FILE,
                                                      missing_ok=True), ctx.cfg.knobs)


def _agent(ctx: Context) -> Proposer:
    cfg = ctx.cfg
    if not cfg.agent_command:
        raise UserError("the agent proposer has no command: set `agent: command: [...]` in "
                        "autogolf.yaml (docs/AGENT_NIGHT.md has recipes for claude and pi)")
    try:
        sandbox = choose(cfg.agent_sandbox_mode, cfg.agent_sandbox_network,
                         cfg.agent_sandbox_writable, hidden=_holdout_folders(ctx))
    except SandboxError as exc:
        raise UserError(str(exc)) from None
    try:
        return AgentProposer(cfg.agent_command, cfg.agent_timeout_s,
                             ctx.repo / ".autogolf" / "agent", editable=cfg.editable,
                             protected=cfg.protected, last_rows=cfg.agent_last_rows,
                             grace_s=cfg.kill_grace_s, stop=ctx.stop,
                             wait_stop=ctx.asked_to_stop,
                             env={"AUTOGOLF_DAEMON_TOKEN": ctx.token} if ctx.token else None,
                             imported=lambda: _imported(ctx.repo), sandbox=sandbox,
                             limits=cfg.agent_limits(), cap_bytes=cfg.artifact_cap_bytes,
                             rotate_after_losses=cfg.agent_rotate_after_losses,
                             home=ctx.repo)
    except AgentConfigError as exc:
        raise UserError(f"agent.command: {exc}") from None


def _holdout_folders(ctx: Context) -> list[Path]:
    """What a confined agent must not read: the dataset's folder (the judge's holdout is its
    validation split) and the repo's data caches."""
    folders = [ctx.repo / "data", ctx.repo / ".upstream"]
    try:
        folders.append(datasets.resolve(ctx.cfg.dataset, datasets.cache_root(ctx.repo)).data_path)
    except datasets.DatasetError:
        pass  # the daemon refuses to start without its dataset anyway
    return folders


def _imported(repo: Path) -> list[dict]:
    """The pi runs `autogolf import` put in the ledger (re-read: an import may come later)."""
    return pilog.imported_rows(Ledger(repo / ".autogolf" / "ledger.jsonl").rows())


BUILDERS: dict[str, Callable[[Context], Proposer]] = {
    "search": _search, "ideas": _ideas, "agent": _agent}


def make_proposer(cfg: Config, repo: Path, worktree: Callable[[], Path] | None = None,
                  stop: Callable[[], bool] | None = None, token: str | None = None,
                  asked_to_stop: Callable[[], bool] | None = None) -> Proposer:
    """The proposer `autogolf.yaml` names (or its rotation), built from its settings."""
    ctx = Context(cfg, repo, worktree, stop, token, asked_to_stop)
    names = cfg.proposer_rotation or (cfg.proposer,)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise UserError(f"proposer: unknown {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    built = {name: BUILDERS[name](ctx) for name in dict.fromkeys(names)}
    return built[names[0]] if len(names) == 1 else Rotation([built[n] for n in names])
