"""Byte counts behind val_bpb (SPEC section 3), on hand-picked pieces and on real text."""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece as spm

from loop.data import tokenbytes
from loop.data.tokenbytes import ByteTables, build_byte_tables, count_target_bytes

BOS = 1


@pytest.fixture(scope="module")
def sp(sample_dataset) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(sample_dataset.tokenizer_path))


@pytest.fixture(scope="module")
def tables(sp) -> ByteTables:
    return build_byte_tables(sp, 1024)


def piece(sp, text: str) -> int:
    token = sp.piece_to_id(text)
    assert sp.id_to_piece(token) == text, f"{text!r} is not a piece of the sample tokenizer"
    return token


def test_tables_cover_the_whole_vocabulary(tables):
    assert [t.shape for t in tables] == [(1024,)] * 3
    assert tables.base_bytes.dtype == np.int16


def test_control_and_unknown_pieces_are_zero_byte_boundaries(sp, tables):
    for token in (0, 1, 2, 3):  # pad, bos, eos, unk
        assert tables.is_boundary[token]
        assert tables.base_bytes[token] == 0
        assert not tables.has_leading_space[token]


def test_byte_fallback_piece_is_one_byte(sp, tables):
    token = piece(sp, "<0xE2>")
    assert (tables.base_bytes[token], tables.has_leading_space[token]) == (1, False)


def test_ascii_piece_counts_its_characters(sp, tables):
    token = piece(sp, "ing")
    assert (tables.base_bytes[token], tables.has_leading_space[token]) == (3, False)


def test_word_mark_is_not_counted_in_the_base_bytes(sp, tables):
    token = piece(sp, "\u2581the")
    assert (tables.base_bytes[token], tables.has_leading_space[token]) == (3, True)


def test_word_start_after_an_ordinary_token_counts_the_space(sp, tables):
    the = piece(sp, "\u2581the")
    assert count_target_bytes([piece(sp, "ing")], [the], tables) == 4


def test_word_start_right_after_bos_counts_no_space(sp, tables):
    the = piece(sp, "\u2581the")
    assert count_target_bytes([BOS], [the], tables) == 3


def test_bare_word_mark_is_a_space_before_a_byte_fallback_character(sp, tables):
    mark = piece(sp, "\u2581")
    assert count_target_bytes([piece(sp, "ing")], [mark], tables) == 1


def test_ids_beyond_the_tokenizer_are_zero_byte_boundaries(sp):
    wide = build_byte_tables(sp, 1100)
    assert wide.is_boundary[1024:].all() and not wide.base_bytes[1024:].any()


def test_a_tokenizer_larger_than_the_vocab_is_refused(sp):
    with pytest.raises(ValueError, match="1024 pieces, more than vocab_size 512"):
        build_byte_tables(sp, 512)


def test_tables_can_be_built_from_the_model_path(sample_dataset, tables):
    from_path = build_byte_tables(sample_dataset.tokenizer_path, 1024)
    assert all(np.array_equal(a, b) for a, b in zip(from_path, tables, strict=True))


def test_prev_and_target_of_different_shapes_are_refused(tables):
    with pytest.raises(ValueError, match="differ in shape"):
        count_target_bytes([1, 2], [5], tables)


def test_counts_use_the_previous_token_of_each_position():
    # Hand-made tables: id 4 = "▁ab" (2 bytes + mark), id 5 = "c" (1 byte), id 1 = BOS.
    base = np.array([0, 0, 0, 0, 2, 1], dtype=np.int16)
    leading = np.array([0, 0, 0, 0, 1, 0], dtype=bool)
    boundary = np.array([1, 1, 1, 1, 0, 0], dtype=bool)
    tables = ByteTables(base, leading, boundary)
    # BOS ▁ab c ▁ab  ->  "ab" + "c" + " ab" = 6 bytes
    assert count_target_bytes([1, 4, 5], [4, 5, 4], tables) == 6


@pytest.mark.parametrize(
    "text",
    [
        "Return the value of x, or None if it is missing.",
        "naïve café: 3 × 4 = 12 — déjà vu",
        "日本語のテキスト and Ελληνικά",
        "emoji 🙂🚀 fall back to bytes",
        "digits 1234567890 split one by one",
    ],
    ids=["ascii", "latin-accents", "cjk-greek", "emoji", "digits"],
)
def test_counted_bytes_of_a_document_equal_its_utf8_length(sp, tables, text):
    ids = sp.encode(text)
    assert sp.decode(ids) == text  # normalization-stable, so the count is well defined
    assert tokenbytes.count_document_bytes(ids, tables, bos_id=BOS) == len(text.encode("utf-8"))


def test_counted_bytes_of_the_val_shard_equal_its_decoded_utf8_length(sp, tables,
                                                                      sample_dataset):
    from loop.data import shards

    tokens = shards.load_tokens(shards.shard_files(sample_dataset.data_path, "val")[0])
    starts = np.flatnonzero(tokens == BOS)
    docs = np.split(tokens, starts[1:])[:50]
    for doc in docs:
        ids = doc[1:].tolist()
        expected = len(sp.decode(ids).encode("utf-8"))
        assert tokenbytes.count_document_bytes(ids, tables, bos_id=BOS) == expected
