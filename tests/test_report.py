"""`autogolf report`: the page a researcher reads in the morning, built from the ledger."""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest

from loop.config import Config
from loop.store.statuses import NAMES as STATUSES
from loop.ui import report, report_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LEDGER = FIXTURES / "ledger_all_statuses.jsonl"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KEPT_CHANGES = ("E0002", "E0014", "E0019")
IDEAS = [
    {"id": "I006", "status": "exhausted", "text": "Higher tied-embedding LR",
     "evidence": ["E0004 breadth delta=+0.0134 discard", "E0012 duplicate of E0004"]},
    SimpleNamespace(id="I008", status="promising", text="Lower Muon momentum",
                    evidence="E0019 breadth delta=-0.0065 keep"),
]


def load_rows() -> list[dict]:
    with LEDGER.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def by_id(rows: list[dict], exp_id: str) -> dict:
    return next(r for r in rows if r.get("id") == exp_id)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return load_rows()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The report of the fixture ledger, built once (charts take a few seconds)."""
    out = tmp_path_factory.mktemp("report")
    return report.build_report(load_rows(), out, ideas=IDEAS, repo=FIXTURES)


@pytest.fixture(scope="module")
def page(built: Path) -> str:
    return built.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the fixture


def test_fixture_has_every_status_and_row_kind(rows):
    exps = [r for r in rows if r["type"] == "experiment"]
    assert {r["status"] for r in exps} == set(STATUSES)
    assert {r["type"] for r in rows} == {"session", "experiment", "stop"}
    assert any(r["baseline"] for r in exps) and any(r["manual"] for r in exps)
    assert {p for r in exps if not r["manual"] for p in r["rungs"]} == {"breadth", "confirm"}


# --------------------------------------------------------------------------- files


def test_report_writes_index_html_and_summary_md(built):
    assert built.name == "index.html"
    assert built.read_text().startswith("<!DOCTYPE html>")
    assert (built.parent / "summary.md").read_text().startswith("# autogolf report")


class _Resources(HTMLParser):
    """Every attribute value and style text, where an external reference could hide."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str, str]] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [(tag, name, value or "") for name, value in attrs]
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def test_html_references_no_external_resource(page):
    parsed = _Resources()
    parsed.feed(page)
    external = re.compile(r"^\s*(https?:|//|ftp:)", re.IGNORECASE)
    assert [a for a in parsed.attributes if external.match(a[2])] == []
    assert "link" not in parsed.tags and "iframe" not in parsed.tags and "img" not in parsed.tags
    assert not any(name == "src" for _, name, _ in parsed.attributes)
    css = " ".join(parsed.styles) + " ".join(v for _, n, v in parsed.attributes if n == "style")
    assert "@import" not in css
    assert re.findall(r"url\(\s*['\"]?(?!#)", css) == []  # only in-page url(#id) references


def test_html_has_no_script(page):
    # Nothing to fail, nothing to block: the page is static and works from disk.
    assert "<script" not in page.lower()


def test_summary_md_lists_kept_changes_and_counts(built):
    summary = (built.parent / "summary.md").read_text()
    for exp_id in KEPT_CHANGES:
        assert f"| {exp_id} |" in summary
    assert "| metric_mismatch | 1 |" in summary


def test_the_report_shows_what_the_agent_spent_and_unknown_cost(built, page):
    summary = (built.parent / "summary.md").read_text()
    assert "## What the agent spent" in summary
    assert "4 attempt(s), 50s of agent time, 0 retries after rate limits" in summary
    assert "cost and tokens unknown" in summary
    assert "<h2>What the agent spent</h2>" in page
    assert '<td class="num unknown">unknown</td>' in page.split("What the agent spent")[1]


# --------------------------------------------------------------------------- kept changes


def test_kept_changes_embed_their_diff_html_escaped(page):
    for exp_id in KEPT_CHANGES:
        section = re.search(rf"<summary>diff of {exp_id} .*?</pre>", page, re.S).group(0)
        for line in (FIXTURES / "patches" / f"{exp_id}.diff").read_text().splitlines():
            assert html.escape(line, quote=True) in section, (exp_id, line)


def test_diff_text_is_never_raw_markup(page):
    raw = "if step < args.iterations - warmdown_steps and elapsed_ms >= 0:"
    assert raw not in page
    assert html.escape(raw) in page


def test_kept_changes_show_their_delta_against_the_incumbent(page):
    # E0014: confirm 1.95520007 against the incumbent 1.9590021.
    row = re.search(r'<tr id="kept-E0014">.*?</tr>', page, re.S).group(0)
    assert "confirm: 1.9552 vs 1.9590" in row and "(-0.0038)" in row


def test_kept_change_commit_shown_short_with_full_sha_on_hover(page, rows):
    commit = by_id(rows, "E0014")["commit"]
    assert f'<code title="{commit}">{commit[:10]}</code>' in page


def test_missing_patch_file_is_reported_not_fatal(tmp_path, rows):
    row = dict(by_id(rows, "E0002"), patch="no/such/patch.diff")
    index = report.build_report([row], tmp_path, repo=tmp_path)
    assert "patch file not found: no/such/patch.diff" in index.read_text()


def test_descriptions_are_html_escaped(tmp_path, rows):
    row = dict(by_id(rows, "E0002"), description='<b onclick="x()">MATRIX_LR</b>')
    text = report.build_report([row], tmp_path, repo=FIXTURES).read_text()
    assert "<b onclick" not in text and "&lt;b onclick=&quot;x()&quot;&gt;" in text


# --------------------------------------------------------------------------- unknown, never 0


def test_failed_runs_have_unknown_val_bpb_on_the_chart(rows):
    points = {p.id: p for p in report.series(rows)[(rows[0]["dataset"], "breadth")]}
    for exp_id in ("E0005", "E0006", "E0010", "E0011", "E0015"):
        assert points[exp_id].kind == "unknown" and points[exp_id].val_bpb is None, exp_id


def test_mismatched_metric_claim_is_shown_as_unknown(page, rows):
    # The extractor claimed 0.91; only the reason (which quotes it) may mention it.
    assert by_id(rows, "E0011")["rungs"]["breadth"]["val_bpb"] == 0.91
    row = re.search(r'<tr id="exp-E0011">.*?</tr>', page, re.S).group(0)
    assert ">breadth: unknown<" in row


def test_failed_run_artifact_size_is_unknown(page):
    # E0010's extractor printed a size, but a failed run's numbers are not results.
    row = re.search(r'<tr id="exp-E0010">.*?</tr>', page, re.S).group(0)
    assert '<td class="num unknown">unknown</td>' in row and "4,812,345" not in row


def test_failed_run_reads_unknown_in_the_experiment_table(page):
    row = re.search(r'<tr id="exp-E0005">.*?</tr>', page, re.S).group(0)
    assert "breadth: unknown" in row
    assert re.search(r">\s*0(\.0+)?\s*<", row) is None


def test_formatters_say_unknown_for_missing_values():
    assert report.fmt_bpb(None) == report.fmt_delta(None) == "unknown"
    assert report.fmt_bytes(None) == report.fmt_duration(None) == "unknown"


def test_non_numbers_are_unknown():
    for value in (None, float("nan"), float("inf"), "1.9", True):
        assert report.number(value) is None, value
    assert report.number(0) == 0.0


def test_chart_of_only_failures_has_no_value_scale(tmp_path, rows):
    crash = by_id(rows, "E0005")
    points = report.series([rows[0], crash])[(crash["dataset"], "breadth")]
    svg = report.render_chart(crash["dataset"], "breadth", points, Config().artifact_cap_bytes,
                              "t")
    assert "no valid val_bpb yet" in svg
    assert "unknown" in svg


# --------------------------------------------------------------------------- series


def test_profiles_get_separate_series(rows):
    assert set(report.series(rows)) == {(rows[0]["dataset"], "breadth"),
                                        (rows[0]["dataset"], "confirm")}


def test_datasets_are_never_mixed_in_one_series(rows):
    sample = by_id(rows, "E0002")
    real = dict(sample, id="E0100", dataset="fineweb10B_sp1024:0011223344556677")
    keys = set(report.series([sample, real]))
    assert keys == {(sample["dataset"], "breadth"), (sample["dataset"], "confirm"),
                    (real["dataset"], "breadth"), (real["dataset"], "confirm")}


def test_never_benchmarked_failures_are_marked_on_the_first_rung(rows):
    found = report.series(rows)
    breadth = {p.id for p in found[(rows[0]["dataset"], "breadth")]}
    confirm = {p.id for p in found[(rows[0]["dataset"], "confirm")]}
    assert {"E0007", "E0009"} <= breadth and not {"E0007", "E0009"} & confirm


def test_duplicates_and_manual_runs_are_not_charted(rows):
    charted = {p.id for points in report.series(rows).values() for p in points}
    assert "E0012" not in charted and "E0016" not in charted


def test_baselines_are_marked_as_baselines(rows):
    points = {p.id: p for p in report.series(rows)[(rows[0]["dataset"], "confirm")]}
    assert points["E0003"].kind == "baseline" and points["E0002"].kind == "kept"


def test_running_best_is_the_minimum_of_kept_and_baseline_points():
    def point(x, kind, value):
        return report.Point(x, f"E{x:04d}", "s", kind, value, None)

    points = [point(1, "baseline", 2.0), point(2, "discard", 1.5), point(3, "kept", 1.9),
              point(4, "baseline", 1.95), point(5, "unknown", None), point(6, "kept", 1.8)]
    assert report.running_best(points) == [(1, 2.0), (3, 1.9), (4, 1.9), (6, 1.8)]


def test_each_session_has_its_own_running_best(rows):
    points = report.series(rows)[(rows[0]["dataset"], "breadth")]
    assert [g[0].session for g in report.by_session(points)] == ["20261123-0105",
                                                                 "20261124-0030"]


def test_page_has_one_chart_per_series(page):
    assert page.count('<svg role="img" class="chart"') == 2


def test_chart_ids_do_not_collide_between_charts(page):
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


# --------------------------------------------------------------------------- counts, time


def test_counts_by_status(rows):
    expected = {status: 1 for status in STATUSES}
    expected.update(keep=3, discard=3, baseline=3, manual=1)
    assert report.count_by_category(rows) == Counter(expected)


def test_counts_table_shows_every_status(page):
    table = re.search(r"<h2>Experiments by status</h2>(.*?)</table>", page, re.S).group(1)
    counts = dict(re.findall(r'<td class="status">(\w+)</td><td class="num[^"]*">(\d+)</td>',
                             table))
    assert counts["discard"] == "3" and counts["keep"] == "3" and counts["duplicate"] == "1"
    assert set(STATUSES) <= set(counts)


def test_time_per_status_of_rows_without_time_s_is_the_sum_of_rung_wall_s(rows):
    times = report.time_by_category(rows)
    assert times["timeout"].seconds == 900.0
    assert times["discard"].seconds == pytest.approx(211.0 + 208.3 + 399.0 + 213.0)


def test_time_per_status_counts_every_run_a_decision_made(rows):
    row = dict(by_id(rows, "E0004"), time_s={"screen": 211.0, "repeats": 400.0,
                                             "incumbent": 600.0, "judge": 30.0})
    assert report.time_by_category([row])["discard"].seconds == pytest.approx(1211.0)


def test_status_without_a_benchmark_has_no_time_not_zero(rows):
    assert report.time_by_category(rows)["checks_failed"].text() == "no benchmark run"


def test_unknown_wall_time_is_counted_apart(rows):
    row = dict(by_id(rows, "E0004"))
    row["rungs"] = {"breadth": {"val_bpb": 1.98, "exit_code": 0}}
    spent = report.time_by_category([row])["discard"]
    assert spent.unknown == 1 and spent.text() == "unknown"


# --------------------------------------------------------------------------- the rest


def test_ideas_show_their_evidence_linked_to_experiments(page):
    assert "Lower Muon momentum" in page
    assert '<a href="#exp-E0004">E0004</a> breadth delta=+0.0134 discard' in page


def test_ideas_are_accepted_as_dicts_or_objects():
    views = [report.idea_view(i) for i in IDEAS]
    assert views[0]["evidence"][0].startswith("E0004") and views[1]["id"] == "I008"
    assert views[1]["evidence"] == ["E0019 breadth delta=-0.0065 keep"]


def test_evidence_records_read_like_the_backlog():
    record = SimpleNamespace(experiment="E0005", profile="breadth", delta=None, status="crash")
    assert report.evidence_text(record) == "E0005 breadth delta=unknown crash"
    assert report.evidence_text({"experiment": "E0004", "profile": "breadth", "delta": 0.0134,
                                 "status": "discard"}) == "E0004 breadth delta=+0.0134 discard"


def test_sessions_covered_with_their_stop_reasons(page):
    table = re.search(r"<h2>Sessions</h2>(.*?)</table>", page, re.S).group(1)
    assert "20261123-0105" in table and "stopped by SIGINT" in table
    assert "20261124-0030" in table and "reached --max-experiments 2" in table


def test_manual_runs_are_listed_separately(page):
    section = re.search(r"<h2>Manual runs</h2>(.*?)</table>", page, re.S).group(1)
    assert "E0016" in section and "smoke: 3.1041" in section
    kept = re.search(r"<h2>Kept changes</h2>(.*?)</table>", page, re.S).group(1)
    assert "E0016" not in kept


def test_baselines_are_not_listed_as_kept_changes(page):
    kept = re.search(r"<h2>Kept changes</h2>(.*?)</table>", page, re.S).group(1)
    assert re.findall(r'<tr id="kept-(E\d+)">', kept) == list(KEPT_CHANGES)


def test_report_of_a_ledger_without_experiments_still_builds(tmp_path, rows):
    text = report.build_report([rows[0]], tmp_path).read_text()
    assert "No benchmark results to chart yet." in text


# --------------------------------------------------------------------------- the CLI verb


def _report_args(**values) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    argv = [f"--{k}={v}" for k, v in values.items() if v is not True]
    argv += [f"--{k}" for k, v in values.items() if v is True]
    return parser.parse_args(argv)


def test_report_cli_prints_the_paths_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".autogolf").mkdir()
    shutil.copy(LEDGER, tmp_path / ".autogolf" / "ledger.jsonl")
    shutil.copytree(FIXTURES / "patches", tmp_path / "patches")
    assert report_cli.main(_report_args(out=tmp_path / "r")) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "r" / "index.html"), str(tmp_path / "r" / "summary.md")]
    assert "MATRIX_LR=0.05" in (tmp_path / "r" / "index.html").read_text()


def test_report_cli_includes_the_ideas_backlog(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "autoresearch.ideas.md").write_text(
        "- [I006] (exhausted) Higher tied-embedding LR.\n"
        "  knobs: TIED_EMBED_LR=0.08\n"
        "  evidence: E0004 breadth delta=+0.0134 discard\n")
    assert report_cli.main(_report_args(ledger=LEDGER, out=tmp_path / "r")) == 0
    text = (tmp_path / "r" / "index.html").read_text()
    assert '<a href="#exp-E0004">E0004</a> breadth delta=+0.0134 discard' in text


def test_report_cli_draws_the_configured_cap(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "autogolf.yaml").write_text("artifact_cap_bytes: 5000000\n")
    assert report_cli.main(_report_args(ledger=LEDGER, out=tmp_path / "r")) == 0
    assert "cap 5,000,000 bytes" in (tmp_path / "r" / "index.html").read_text()


def test_report_cli_missing_ledger_exits_2_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert report_cli.main(_report_args()) == 2
    assert "no ledger at" in capsys.readouterr().err


def test_report_cli_empty_ledger_exits_2_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps({"type": "session", "session": "s"}) + "\n")
    assert report_cli.main(_report_args(ledger=ledger)) == 2
    assert "no experiments yet" in capsys.readouterr().err


# --------------------------------------------------------------------------- headless browser

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def _browser_env() -> dict[str, str]:
    """The test run preloads OpenBLAS for MLX; Chromium's GPU process aborts with it loaded."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def test_report_opens_in_headless_chromium_without_console_errors(built, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,2400",
         f"--screenshot={shot}", "--dump-dom", built.resolve().as_uri()],
        capture_output=True, text=True, timeout=180, env=_browser_env())
    console = [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    assert done.returncode == 0, done.stderr[-2000:]
    assert console == []
    assert "<h1>autogolf report</h1>" in done.stdout
    assert done.stdout.count('class="chart"') == 2
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one


def _sequential_session() -> list[dict]:
    """A session whose keep E0002 is re-measured as E0003's incumbent at fresh seeds."""
    seq = {"seeds": [1337, 1338, 1339], "candidate": [1.00, 1.01, 1.02],
           "incumbent": [1.05, 1.06, 1.08], "diffs": [0.05, 0.05, 0.06], "decision": "keep",
           "estimate": {"val_bpb": 1.01, "runs": 3, "selected": True}}
    later = {"seeds": [1337, 2338, 2339], "candidate": [1.03, 1.04, 1.05],
             "incumbent": [1.00, 1.03, 1.05], "diffs": [-0.03, -0.01, 0.0],
             "decision": "discard", "incumbent_id": "E0002"}
    return [{"type": "session", "session": "S1", "timestamp": "2026-12-01T23:00:00+00:00"},
            {"type": "experiment", "id": "E0002", "session": "S1", "status": "keep",
             "rungs": {"breadth": {"val_bpb": 1.01, "sequential": seq}}},
            {"type": "experiment", "id": "E0003", "session": "S1", "status": "discard",
             "rungs": {"breadth": {"val_bpb": 1.04, "sequential": later}},
             "time_s": {"screen": 10.0, "repeats": 20.0, "incumbent": 20.0}}]


def test_report_says_what_each_profile_can_resolve_and_the_refreshed_keep(tmp_path):
    from loop.judge.sequential import SequentialRule

    rules = {"breadth": SequentialRule(0.002, max_runs=10)}
    index = report.build_report(_sequential_session(), tmp_path, rules=rules)
    text = (tmp_path / "summary.md").read_text()
    assert re.search(r"session S1: resolvable: breadth\s+smallest gain confirmable in 10 "
                     r"pairs: \d\.\d{4}; a gain of 0\.002 needs (\d+ pairs|more than any cap "
                     r"here) \(the spread of \d+ decisions?\)", text)
    # selected at 1.0100; measured again at the two seeds its keep never saw: (1.03+1.05)/2
    assert ("kept score: breadth  E0002: 1.0100 from its 3 selected runs; 1.0400 at 2 fresh "
            "seed(s) (+0.0300)") in text
    assert "where the time went: first runs" not in text  # largest first
    assert "where the time went: more seeds / re-runs 20s" in text
    assert "What the evidence can resolve" in index.read_text()


def test_a_report_given_no_cap_draws_the_configurations_default_cap(tmp_path, rows):
    text = report.build_report(rows, tmp_path / "r").read_text()
    assert f"cap {Config().artifact_cap_bytes:,} bytes" in text
