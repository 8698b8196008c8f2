"""The METRIC line grammar (SPEC section 4): what counts as a metric, and what is unknown."""

from __future__ import annotations

import pytest

from loop.measure.metrics import parse_decimal, parse_metric_lines


def test_reads_one_metric_per_line():
    text = "METRIC val_bpb=1.23456789\nMETRIC total_bytes=15000000\n"
    assert parse_metric_lines(text) == {"val_bpb": 1.23456789, "total_bytes": 15000000.0}


def test_ignores_trainer_output_around_the_metrics():
    text = "step:1/10 train_loss:6.9\nsome prose val_bpb=9\nMETRIC val_bpb=1.5\ndone\n"
    assert parse_metric_lines(text) == {"val_bpb": 1.5}


def test_last_duplicate_wins():
    assert parse_metric_lines("METRIC val_bpb=1.5\nMETRIC val_bpb=1.4\n") == {"val_bpb": 1.4}


def test_a_last_non_finite_duplicate_makes_the_metric_unknown():
    # The script's final word is "unknown": the earlier number must not survive it.
    assert parse_metric_lines("METRIC val_bpb=1.5\nMETRIC val_bpb=nan\n") == {}


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
def test_non_finite_values_are_omitted_not_zero(value):
    assert parse_metric_lines(f"METRIC val_bpb={value}\n") == {}


@pytest.mark.parametrize("value", ["", "abc", "1.2.3", "0x10", "1_000", " 1.5", "1.5 ", "١٢"])
def test_values_that_are_not_decimals_are_omitted(value):
    assert parse_metric_lines(f"METRIC val_bpb={value}\n") == {}


@pytest.mark.parametrize("line", [
    " METRIC val_bpb=1.5",        # not at line start
    "METRIC  val_bpb=1.5",        # two spaces
    "METRIC\tval_bpb=1.5",        # tab instead of the space
    "metric val_bpb=1.5",         # keyword is case-sensitive
    "METRIC val-bpb=1.5",         # '-' is not allowed in a name
    "METRIC =1.5",                # empty name
    "METRIC val_bpb 1.5",         # no '='
    "prefix METRIC val_bpb=1.5",
])
def test_lines_outside_the_grammar_are_not_metrics(line):
    assert parse_metric_lines(line + "\n") == {}


def test_text_after_the_value_makes_the_metric_unknown():
    assert parse_metric_lines("METRIC val_bpb=1.5 # comment\n") == {}


@pytest.mark.parametrize("text, expected", [
    ("-0.25", -0.25), ("+3", 3.0), (".5", 0.5), ("5.", 5.0), ("1.6e7", 16_000_000.0),
    ("2E-3", 0.002), ("0", 0.0),
])
def test_decimal_forms_accepted(text, expected):
    assert parse_decimal(text) == expected


def test_names_may_contain_dots_digits_and_underscores():
    assert parse_metric_lines("METRIC eval.v2_ms=12\n") == {"eval.v2_ms": 12.0}


def test_windows_line_endings_are_accepted():
    assert parse_metric_lines("METRIC val_bpb=1.5\r\nMETRIC step_ms=3\r\n") == {
        "val_bpb": 1.5, "step_ms": 3.0}


def test_empty_output_has_no_metrics():
    assert parse_metric_lines("") == {}
