"""Docs that match the code: every key the configuration accepts is in autogolf.yaml with its
default, every verb answers `-h`, and the documents a user reads cite no file they do not have
(the planning folder's SPEC.md and LESSONS.md, issue numbers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from loop.config import Config, ConfigError, load_config
from loop.ui import cli

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED = REPO_ROOT / "autogolf.yaml"
PROBE = "zz_probe"
# Keys without a built-in value: autogolf.yaml shows them commented out (`# key: example`).
NO_DEFAULT = {"agent.command", "agent.budget_s", "agent.budget_usd", "agent.budget_tokens",
              "search.storage", "proposer.rotation", "workspace"}
# Sections whose keys are names the user chooses (profiles, knobs) or profile names: their
# fixed keys are probed one level down instead.
NESTED_PROBES = {"profiles": ("profiles", "smoke"), "agent.sandbox": ("agent", "sandbox")}


def allowed_keys(data: dict, where: str, tmp_path: Path) -> list[str]:
    """The keys the loader lists as allowed when `where` holds an unknown key."""
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    line = next((p for p in refused.value.problems if f"{where}: unknown key" in p), None)
    if line is None:
        return []
    return [k.strip() for k in line.rsplit("(allowed: ", 1)[1].rstrip(")").split(",")]


def nest(path: tuple[str, ...], leaf: dict) -> dict:
    for key in reversed(path):
        leaf = {key: leaf}
    return leaf


def accepted_keys(tmp_path: Path) -> set[str]:
    """Every key path autogolf.yaml accepts, as the loader's own refusals name them."""
    keys: set[str] = set()
    for top in allowed_keys({PROBE: 1}, PROBE, tmp_path):
        keys.add(top)
        for key in allowed_keys({top: {PROBE: 1}}, f"{top}.{PROBE}", tmp_path):
            keys.add(f"{top}.{key}")
    for name, path in NESTED_PROBES.items():
        where = ".".join(path)
        for key in allowed_keys(nest(path, {PROBE: 1}), f"{where}.{PROBE}", tmp_path):
            keys.add(f"{name}.{key}")
    return keys


def active(data: dict, dotted: str) -> bool:
    """Is `dotted` (e.g. agent.sandbox.mode, profiles.timeout_s) set in the parsed file?"""
    head, _, rest = dotted.partition(".")
    if head == "profiles" and rest:
        return all(rest in (v or {}) for v in (data.get("profiles") or {}).values())
    if head not in data:
        return False
    return not rest or (isinstance(data[head], dict) and active(data[head], rest))


def test_the_probe_finds_the_keys_the_loader_accepts(tmp_path: Path) -> None:
    keys = accepted_keys(tmp_path)
    assert {"dataset", "keep_rule.max_runs", "agent.sandbox.writable", "profiles.timeout_s",
            "judge.claim_tolerance", "workspace.lease_s"} <= keys


def test_every_key_the_configuration_accepts_is_in_autogolf_yaml(tmp_path: Path) -> None:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    text = SHIPPED.read_text(encoding="utf-8")
    missing = []
    for key in sorted(accepted_keys(tmp_path)):
        optional = key in NO_DEFAULT or key.split(".")[0] in NO_DEFAULT
        leaf = key.rsplit(".", 1)[-1]
        commented = re.search(rf"(?m)^\s*#[\s#]*{re.escape(leaf)}:", text) is not None
        if not (active(data, key) or (optional and commented)):
            missing.append(key)
    assert missing == [], f"autogolf.yaml lacks: {', '.join(missing)}"


def test_every_value_in_autogolf_yaml_is_the_default() -> None:
    assert load_config(SHIPPED) == Config()


@pytest.mark.parametrize("verb", sorted(cli.build_parser()._subparsers._group_actions[0].choices))
def test_every_verb_answers_dash_h(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args([verb, "-h"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: autogolf {verb}")


# What a user reads; the design notes (docs/DESIGN.md, docs/THREAT_MODEL.md) are for people
# working on autogolf itself.
USER_DOCS = ["README.md", "autogolf.yaml", "autoresearch.md", *sorted(
    str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "docs").glob("*.md")
    if p.name not in ("DESIGN.md", "THREAT_MODEL.md"))]


@pytest.mark.parametrize("name", USER_DOCS)
def test_user_documents_cite_no_file_a_user_does_not_have(name: str) -> None:
    text = (REPO_ROOT / name).read_text(encoding="utf-8")
    for pattern in (r"SPEC\.md", r"LESSONS\.md", r"\bSPEC section", r"\bissue \d+\b"):
        assert re.search(pattern, text) is None, f"{name} cites {pattern}"


@pytest.mark.parametrize("name", USER_DOCS)
def test_user_documents_link_only_files_that_exist(name: str) -> None:
    text = (REPO_ROOT / name).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (REPO_ROOT / Path(name).parent / target).exists(), f"{name} links {target}"
