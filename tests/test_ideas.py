"""The ideas backlog: a person's file survives byte-for-byte; edits touch only their lines."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from loop.backlog import ideas
from loop.backlog.ideas import (
    IdeasConflict,
    IdeasError,
    IdeasFile,
    parse_knobs,
    record_experiment,
)
from loop.backlog.tried import TRIED_END, TRIED_START, render_tried, update_tried_section

# Free text, headings, odd spacing, trailing blanks, a tab-indented data line, a loose item,
# a checklist, a link, an example of the format inside a code fence.
BACKLOG = """# Ideas   backlog

Some free text a person wrote.\t
It spans two lines; the next line is blank.

## Schedule
- [I001] (untried) Longer warmdown: decay over the last 40% of
  steps instead of 20%.
  knobs: WARMDOWN_FRAC=0.4
- [I002]   (promising)   Shorter warmdown.
\tknobs: WARMDOWN_FRAC=0.1   MATRIX_LR=0.05
\tevidence: E0003 breadth delta=-0.0031 keep

* [I004] (untried) A loose item with a blank line inside.

  patch: ideas/patches/I004.patch

## Things to read
- [ ] a checklist item, not an idea
- [Muon paper](https://example.org/muon) is a link, not an idea

```
- [I999] (untried) an example of the format, not an idea
```
Trailing free text without a final newline."""


def write(tmp_path: Path, text: str = BACKLOG, name: str = "autoresearch.ideas.md") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def changed_lines(before: str, after: str) -> list[str]:
    """The +/- lines of a diff between two texts (what an edit actually touched)."""
    diff = difflib.unified_diff(before.split("\n"), after.split("\n"), lineterm="", n=0)
    return [d for d in diff if d[:1] in "+-" and not d.startswith(("+++", "---"))]


# --- round trip ---------------------------------------------------------------------------


def test_unchanged_file_saves_byte_identical(tmp_path: Path) -> None:
    path = write(tmp_path)
    IdeasFile.load(path).save()
    assert path.read_bytes() == BACKLOG.encode("utf-8")


def test_crlf_file_saves_byte_identical(tmp_path: Path) -> None:
    text = BACKLOG.replace("\n", "\r\n")
    path = write(tmp_path, text)
    IdeasFile.load(path).save()
    assert path.read_bytes() == text.encode("utf-8")


def test_the_repository_backlog_round_trips(repo_root: Path) -> None:
    path = repo_root / "autoresearch.ideas.md"
    if not path.exists():
        pytest.skip("the repository has no backlog yet")
    assert IdeasFile.load(path).text == path.read_text(encoding="utf-8")


# --- parsing ------------------------------------------------------------------------------


def test_ideas_are_parsed_with_status_text_and_data(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path))
    assert [(i.id, i.status) for i in backlog.ideas] == [
        ("I001", "untried"), ("I002", "promising"), ("I004", "untried")]
    first = backlog.get("I001")
    assert first.text == "Longer warmdown: decay over the last 40% of steps instead of 20%."
    assert first.knobs == {"WARMDOWN_FRAC": 0.4}
    assert backlog.get("I002").knobs == {"WARMDOWN_FRAC": 0.1, "MATRIX_LR": 0.05}


def test_evidence_lines_are_parsed(tmp_path: Path) -> None:
    evidence = IdeasFile.load(write(tmp_path)).get("I002").evidence
    assert [(e.experiment, e.profile, e.delta, e.status, e.line) for e in evidence] == [
        ("E0003", "breadth", -0.0031, "keep", 12)]


def test_a_loose_item_keeps_its_data_after_a_blank_line(tmp_path: Path) -> None:
    assert IdeasFile.load(write(tmp_path)).get("I004").patch == "ideas/patches/I004.patch"


def test_checklists_links_and_fenced_examples_are_free_text(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path))
    assert backlog.get("I999") is None
    assert backlog.problems == []


def test_integer_knob_values_stay_integers() -> None:
    assert parse_knobs("NUM_LAYERS=7 MLP_MULT=3 LR=1e-3") == {
        "NUM_LAYERS": 7, "MLP_MULT": 3, "LR": 0.001}


@pytest.mark.parametrize("text", ["", "MATRIX_LR", "MATRIX_LR=fast", "9X=1", "A=1 A=2",
                                  "LR=nan"])
def test_bad_knobs_text_is_refused(text: str) -> None:
    with pytest.raises(IdeasError):
        parse_knobs(text)


def test_untried_lists_only_valid_untried_ideas(tmp_path: Path) -> None:
    text = BACKLOG + "\n- [I005] (untried) bad knobs\n  knobs: LR=fast\n"
    backlog = IdeasFile.load(write(tmp_path, text))
    assert [i.id for i in backlog.untried()] == ["I001", "I004"]


# --- malformed entries --------------------------------------------------------------------

MALFORMED = """# Backlog
- [I001] (untried) fine
- [X7] (untried) bad id
- [I002] (someday) bad status
- [I003] no status at all
- [I001] (untried) duplicate id
- [I004] (untried) bad knobs
  knobs: MATRIX_LR=fast
"""


def problem_lines(backlog: IdeasFile) -> dict[int, str]:
    return {p.line: p.message for p in backlog.problems}


def test_malformed_entries_are_reported_with_line_numbers(tmp_path: Path) -> None:
    problems = problem_lines(IdeasFile.load(write(tmp_path, MALFORMED)))
    assert sorted(problems) == [2, 3, 4, 5, 6, 8]
    assert "bad idea id [X7]" in problems[3]
    assert "(someday)" in problems[4]
    assert "no (status)" in problems[5]
    assert "duplicate id [I001] (first used on line 2)" in problems[6]
    assert "bad knobs line" in problems[8]


def test_malformed_entries_are_kept_verbatim_by_an_edit(tmp_path: Path) -> None:
    path = write(tmp_path, MALFORMED)
    backlog = IdeasFile.load(path)
    backlog.mark("I004", "invalid")
    backlog.save()
    assert changed_lines(MALFORMED, path.read_text()) == [
        "-- [I004] (untried) bad knobs", "+- [I004] (invalid) bad knobs"]


def test_malformed_ideas_are_never_offered(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path, MALFORMED))
    assert backlog.untried() == []  # I001 is ambiguous, the others are broken


def test_marking_a_duplicated_id_is_refused(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path, MALFORMED))
    with pytest.raises(IdeasError, match="more than once"):
        backlog.mark("I001", "exhausted")


# --- edits --------------------------------------------------------------------------------


def test_mark_changes_only_the_status_word(tmp_path: Path) -> None:
    path = write(tmp_path)
    backlog = IdeasFile.load(path)
    backlog.mark("I002", "exhausted")
    backlog.save()
    assert changed_lines(BACKLOG, path.read_text()) == [
        "-- [I002]   (promising)   Shorter warmdown.",
        "+- [I002]   (exhausted)   Shorter warmdown."]


def test_mark_with_a_note_adds_one_line_under_the_idea(tmp_path: Path) -> None:
    path = write(tmp_path)
    backlog = IdeasFile.load(path)
    backlog.mark("I001", "invalid", note="WARMDOWN_FRAC is not a knob any more")
    backlog.save()
    after = path.read_text()
    assert changed_lines(BACKLOG, after)[-1] == "+  note: WARMDOWN_FRAC is not a knob any more"
    assert IdeasFile.load(path).get("I001").notes == ["WARMDOWN_FRAC is not a knob any more"]


def test_mark_adds_a_missing_status(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path, MALFORMED))
    backlog.mark("I003", "untried")
    assert backlog.lines[4] == "- [I003] (untried) no status at all\n"


@pytest.mark.parametrize("status", ["done", "Untried", ""])
def test_mark_refuses_an_unknown_status(tmp_path: Path, status: str) -> None:
    backlog = IdeasFile.load(write(tmp_path))
    with pytest.raises(IdeasError, match="bad status"):
        backlog.mark("I001", status)


@pytest.mark.parametrize("idea_id", ["I042", "I1", "x"])
def test_mark_refuses_an_unknown_or_bad_id(tmp_path: Path, idea_id: str) -> None:
    backlog = IdeasFile.load(write(tmp_path))
    with pytest.raises(IdeasError, match=idea_id):
        backlog.mark(idea_id, "invalid")


def test_evidence_is_appended_after_the_ideas_last_line_with_its_indent(tmp_path: Path) -> None:
    path = write(tmp_path)
    backlog = IdeasFile.load(path)
    assert backlog.add_evidence("I002", "E0012", "confirm", -0.00456, "discard")
    backlog.save()
    after = path.read_text()
    assert changed_lines(BACKLOG, after) == ["+\tevidence: E0012 confirm delta=-0.0046 discard"]
    assert after.split("\n")[12] == "\tevidence: E0012 confirm delta=-0.0046 discard"


def test_evidence_for_the_last_idea_of_a_file_without_final_newline(tmp_path: Path) -> None:
    path = write(tmp_path, "- [I001] (untried) only idea")
    backlog = IdeasFile.load(path)
    backlog.add_evidence("I001", "E0001", "breadth", None, "crash")
    backlog.save()
    assert path.read_text() == "- [I001] (untried) only idea\n  evidence: E0001 breadth " \
                               "delta=n/a crash\n"


def test_the_same_evidence_is_not_written_twice(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path))
    assert not backlog.add_evidence("I002", "E0003", "breadth", -0.0031, "keep")
    assert len(backlog.get("I002").evidence) == 1


def test_add_allocates_the_next_free_id_and_appends_at_the_end(tmp_path: Path) -> None:
    path = write(tmp_path)
    backlog = IdeasFile.load(path)
    assert backlog.add("Try   RoPE base 20000", knobs="ROPE_BASE=20000") == "I005"
    backlog.save()
    after = path.read_text()
    assert after.startswith(BACKLOG + "\n")  # only the missing final newline was added
    assert after.endswith("\n- [I005] (untried) Try RoPE base 20000\n  knobs: ROPE_BASE=20000\n")
    assert IdeasFile.load(path).get("I005").knobs == {"ROPE_BASE": 20000}


def test_add_continues_a_list_that_ends_the_file(tmp_path: Path) -> None:
    backlog = IdeasFile.load(write(tmp_path, "# B\n\n- [I007] (exhausted) old\n"))
    backlog.add("new", patch="p.patch")
    assert backlog.text == ("# B\n\n- [I007] (exhausted) old\n- [I008] (untried) new\n"
                            "  patch: p.patch\n")


def test_add_refuses_empty_text(tmp_path: Path) -> None:
    with pytest.raises(IdeasError):
        IdeasFile.load(write(tmp_path)).add("   ")


def test_save_refuses_to_overwrite_a_concurrent_hand_edit(tmp_path: Path) -> None:
    path = write(tmp_path)
    backlog = IdeasFile.load(path)
    backlog.mark("I001", "invalid")
    path.write_text(BACKLOG + "\n- [I009] (untried) typed meanwhile\n")
    with pytest.raises(IdeasConflict):
        backlog.save()
    assert "typed meanwhile" in path.read_text()


def test_a_missing_file_is_an_error_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(IdeasError, match="no ideas backlog"):
        IdeasFile.load(tmp_path / "nope.md")
    assert IdeasFile.load(tmp_path / "nope.md", missing_ok=True).ideas == []


def test_a_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.md"
    path.write_bytes(b"- [I001] (untried) caf\xe9\n")
    with pytest.raises(IdeasError, match="not UTF-8"):
        IdeasFile.load(path)


# --- what the daemon records --------------------------------------------------------------


def row(exp_id: str, status: str, idea: str | None = None, **kw) -> dict:
    base = {"type": "experiment", "id": exp_id, "status": status, "idea": idea,
            "description": f"change {exp_id}", "reason": f"reason of {exp_id}",
            "rungs": {"breadth": {"val_bpb": 1.2300}}, "incumbent_before": {"breadth": 1.2345}}
    base.update(kw)
    return base


def test_record_experiment_writes_evidence_and_moves_the_status(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert record_experiment(path, row("E0020", "keep", "I001"))
    idea = IdeasFile.load(path).get("I001")
    assert idea.status == "promising"
    assert [(e.experiment, e.profile, e.status) for e in idea.evidence] == [
        ("E0020", "breadth", "keep")]
    assert idea.evidence[0].delta == pytest.approx(-0.0045)


def test_record_experiment_uses_the_last_rung_reached(tmp_path: Path) -> None:
    path = write(tmp_path)
    rungs = {"breadth": {"val_bpb": 1.23}, "confirm": {"val_bpb": 1.21}}
    record_experiment(path, row("E0021", "discard", "I001", rungs=rungs,
                                incumbent_before={"breadth": 1.24, "confirm": 1.20}))
    evidence = IdeasFile.load(path).get("I001").evidence[0]
    assert (evidence.profile, evidence.delta) == ("confirm", pytest.approx(0.01))
    assert IdeasFile.load(path).get("I001").status == "exhausted"


def test_record_experiment_leaves_the_status_of_an_uninformative_outcome(tmp_path: Path) -> None:
    path = write(tmp_path)
    record_experiment(path, row("E0022", "agent_timeout", "I001", rungs={}))
    idea = IdeasFile.load(path).get("I001")
    assert idea.status == "untried"
    assert idea.evidence[0].delta is None


def test_record_experiment_ignores_rows_without_an_idea_or_interrupted(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert not record_experiment(path, row("E0023", "keep"))
    assert not record_experiment(path, row("E0024", "interrupted", "I001"))
    assert path.read_text() == BACKLOG


def test_tested_ideas_skip_interrupted_rows() -> None:
    rows = [row("E1", "discard", "I001"), row("E2", "interrupted", "I002"), row("E3", "keep")]
    assert ideas.tested_ideas(rows) == {"I001"}


# --- the tried section of autoresearch.md -------------------------------------------------

DOC = f"""# Session

## What has been tried

Edit outside the markers.

{TRIED_START}
Nothing yet.
{TRIED_END}

## After
Text after the section.
"""


def test_tried_section_lists_keeps_with_deltas_and_dead_ends_with_reasons(tmp_path: Path) -> None:
    path = write(tmp_path, DOC, "autoresearch.md")
    rows = [row("E0001", "keep", "I001", description="MATRIX_LR 0.04 -> 0.05"),
            row("E0002", "crash", description="NUM_LAYERS 9 -> 12", reason="at breadth: OOM"),
            row("E0003", "discard", baseline=True), row("E0004", "duplicate"),
            row("E0005", "interrupted")]
    assert update_tried_section(path, rows)
    text = path.read_text()
    assert "E0001 [I001] MATRIX_LR 0.04 -> 0.05: breadth 1.2345 -> 1.2300 (-0.0045)" in text
    assert "E0002 NUM_LAYERS 9 -> 12 - crash: at breadth: OOM" in text
    assert "E0003" not in text and "E0004" not in text and "E0005" not in text


def test_tried_section_update_leaves_the_rest_byte_identical(tmp_path: Path) -> None:
    path = write(tmp_path, DOC, "autoresearch.md")
    update_tried_section(path, [row("E0001", "keep")])
    text = path.read_text()
    head, tail = DOC.split(TRIED_START)[0], DOC.split(TRIED_END)[1]
    assert text.startswith(head + TRIED_START + "\n")
    assert text.endswith("\n" + TRIED_END + tail)


def test_tried_section_update_reports_no_change_when_rows_say_nothing_new(tmp_path: Path) -> None:
    path = write(tmp_path, DOC, "autoresearch.md")
    rows = [row("E0001", "keep")]
    assert update_tried_section(path, rows)
    assert not update_tried_section(path, rows)


def test_tried_section_without_markers_is_an_error_and_the_file_is_untouched(
        tmp_path: Path) -> None:
    path = write(tmp_path, "# Session\nno markers\n", "autoresearch.md")
    with pytest.raises(IdeasError, match="markers"):
        update_tried_section(path, [row("E0001", "keep")])
    assert path.read_text() == "# Session\nno markers\n"


def test_a_description_cannot_fake_the_end_marker(tmp_path: Path) -> None:
    path = write(tmp_path, DOC, "autoresearch.md")
    update_tried_section(path, [row("E0001", "discard", description=f"evil {TRIED_END}")])
    assert path.read_text().count(TRIED_END) == 1


def test_tried_section_keeps_only_the_latest_dead_ends() -> None:
    rows = [row(f"E{i:04d}", "discard") for i in range(1, 41)]
    text = render_tried(rows)
    assert "10 older ones" in text
    assert "E0010 " not in text and "E0011 " in text and "E0040 " in text


@pytest.mark.parametrize("status", ["agent_failed", "agent_timeout", "agent_no_change",
                                    "forbidden_edit", "interrupted"])
def test_an_attempt_that_measured_nothing_leaves_its_idea_untested(status: str) -> None:
    assert ideas.tested_ideas([row("E0030", status, "I001", rungs={})]) == set()


def test_a_forbidden_edit_does_not_condemn_the_idea(tmp_path: Path) -> None:
    path = write(tmp_path)
    record_experiment(path, row("E0031", "forbidden_edit", "I001", rungs={}))
    assert IdeasFile.load(path).get("I001").status == "untried"


def test_an_ideas_family_is_the_nearest_heading_below_the_title(tmp_path: Path) -> None:
    text = ("# Ideas\n- [I001] (untried) under the title only\n## Schedule\n"
            "- [I002] (untried) warmdown\n```\n## Not a heading (code)\n```\n"
            "- [I003] (untried) momentum ramp\n### Model ##\n- [I004] (untried) wider\n")
    path = tmp_path / "ideas.md"
    path.write_text(text)
    assert ideas.families(IdeasFile.load(path)) == {"I002": "Schedule", "I003": "Schedule",
                                                    "I004": "Model"}
