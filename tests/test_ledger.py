"""The append-only ledger: durable appends, tolerant reads, ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loop.store.ledger import Ledger
from loop.store.rows import next_id


def _experiment(n: int, **extra) -> dict:
    row = {"type": "experiment", "id": f"E{n:04d}", "status": "discard", "val_bpb": 1.5}
    row.update(extra)
    return row


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / ".autogolf" / "ledger.jsonl")


def test_missing_file_reads_as_empty(ledger: Ledger) -> None:
    assert ledger.rows() == []
    assert ledger.problems == []


def test_append_creates_the_folder_and_writes_one_line_per_row(ledger: Ledger) -> None:
    ledger.append({"type": "session", "session": "s1"})
    ledger.append(_experiment(1))
    lines = ledger.path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["id"] == "E0001"


def test_rows_come_back_in_file_order(ledger: Ledger) -> None:
    for n in (1, 2, 3):
        ledger.append(_experiment(n))
    assert [row["id"] for row in ledger.rows()] == ["E0001", "E0002", "E0003"]


def test_append_never_rewrites_existing_bytes(ledger: Ledger) -> None:
    ledger.append(_experiment(1))
    before = ledger.path.read_bytes()
    ledger.append(_experiment(2))
    assert ledger.path.read_bytes().startswith(before)


def test_append_fsyncs_the_file(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    import loop.store.ledger as module

    synced: list[int] = []
    real_fsync = module.os.fsync
    monkeypatch.setattr(module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    ledger.append(_experiment(1))  # creation: file + directory
    ledger.append(_experiment(2))  # later appends: the file
    assert len(synced) == 3


def test_strings_with_newlines_stay_on_one_line(ledger: Ledger) -> None:
    ledger.append(_experiment(1, description="two\nlines"))
    assert len(ledger.path.read_text().splitlines()) == 1
    assert ledger.rows()[0]["description"] == "two\nlines"


def test_non_finite_numbers_are_written_as_null(ledger: Ledger) -> None:
    ledger.append(_experiment(1, val_bpb=float("nan"), rungs={"breadth": {"x": float("inf")}}))
    row = ledger.rows()[0]
    assert row["val_bpb"] is None
    assert row["rungs"]["breadth"]["x"] is None
    assert "NaN" not in ledger.path.read_text()


def test_unserialisable_row_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    ledger.append(_experiment(1))
    before = ledger.path.read_bytes()
    with pytest.raises(TypeError):
        ledger.append(_experiment(2, path=object()))
    assert ledger.path.read_bytes() == before


def test_torn_last_line_is_ignored_and_reported(ledger: Ledger) -> None:
    ledger.append(_experiment(1))
    with ledger.path.open("ab") as handle:
        handle.write(b'{"type": "experiment", "id": "E00')
    assert [row["id"] for row in ledger.rows()] == ["E0001"]
    assert len(ledger.problems) == 1
    assert "line 2" in ledger.problems[0] and "torn" in ledger.problems[0]


def test_complete_last_row_without_newline_is_read(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text(json.dumps(_experiment(1)))
    assert [row["id"] for row in ledger.rows()] == ["E0001"]
    assert ledger.problems == []


def test_append_after_a_torn_line_keeps_the_new_row_whole(ledger: Ledger) -> None:
    ledger.append(_experiment(1))
    with ledger.path.open("ab") as handle:
        handle.write(b'{"type": "exp')
    ledger.append(_experiment(2))
    assert [row["id"] for row in ledger.rows()] == ["E0001", "E0002"]
    assert len(ledger.problems) == 1 and "line 2" in ledger.problems[0]


def test_corrupt_middle_line_is_skipped_and_reported_with_its_number(ledger: Ledger) -> None:
    ledger.append(_experiment(1))
    with ledger.path.open("ab") as handle:
        handle.write(b"this is not json\n")
    ledger.append(_experiment(2))
    assert [row["id"] for row in ledger.rows()] == ["E0001", "E0002"]
    assert len(ledger.problems) == 1
    assert "line 2" in ledger.problems[0] and "not valid JSON" in ledger.problems[0]


def test_a_json_value_that_is_not_an_object_is_reported(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text('[1, 2]\n{"type": "session"}\n')
    assert ledger.rows() == [{"type": "session"}]
    assert "line 1" in ledger.problems[0] and "not a JSON object" in ledger.problems[0]


def test_one_line_holding_two_objects_is_reported(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text('{"type": "session"}\n{"a": 1}, {"b": 2}\n{"type": "stop"}\n')
    assert ledger.rows() == [{"type": "session"}, {"type": "stop"}]
    assert len(ledger.problems) == 1 and "line 2" in ledger.problems[0]


def test_blank_lines_are_skipped_silently(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text('{"type": "session"}\n\n{"type": "stop"}\n')
    assert len(ledger.rows()) == 2 and ledger.problems == []


def test_invalid_utf8_line_is_reported_not_fatal(ledger: Ledger) -> None:
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_bytes(b'{"a": "\xff\xfe"}\n{"type": "session"}\n')
    assert ledger.rows() == [{"type": "session"}]
    assert "line 1" in ledger.problems[0]


def test_experiments_are_the_rows_of_type_experiment(ledger: Ledger) -> None:
    ledger.append({"type": "session", "session": "s1"})
    ledger.append(_experiment(1))
    ledger.append({"type": "stop", "reason": "max experiments"})
    assert [row["id"] for row in ledger.experiments()] == ["E0001"]


def test_next_id_of_an_empty_ledger_is_E0001(ledger: Ledger) -> None:
    assert next_id(ledger.rows()) == "E0001"


def test_next_id_follows_the_highest_id_present(ledger: Ledger) -> None:
    ledger.append(_experiment(3))
    ledger.append(_experiment(1))
    ledger.append({"type": "session", "id": "not-an-experiment-id"})
    assert next_id(ledger.rows()) == "E0004"


def test_next_id_grows_past_four_digits(ledger: Ledger) -> None:
    ledger.append(_experiment(9999))
    assert next_id(ledger.rows()) == "E10000"


def test_ten_thousand_rows_are_all_read_back_in_order(ledger: Ledger) -> None:
    row = _experiment(
        1,
        session="20261123-1412",
        description="MATRIX_LR 0.04 -> 0.05",
        knobs={"MATRIX_LR": 0.05, "SCALAR_LR": 0.04, "WARMDOWN_ITERS": 1200},
        rungs={"breadth": {"val_bpb": 1.23, "total_bytes": 15_000_000, "wall_s": 201.3}},
        diff_hash="0" * 64,
    )
    lines = []
    for n in range(1, 10_001):
        row["id"] = f"E{n:04d}"
        lines.append(json.dumps(row))
    ledger.path.parent.mkdir(parents=True)
    ledger.path.write_text("\n".join(lines) + "\n")
    # How fast is bench/loop_overhead.py's figure, not a timed assertion here.
    rows = ledger.rows()
    assert [r["id"] for r in rows] == [f"E{n:04d}" for n in range(1, 10_001)]
    assert ledger.problems == []
