"""The offline sample dataset (SPEC section 2): what it contains, that it is reproducible, and
that a machine with too little text fails loudly instead of building a toy dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm

from loop.data import sample_data, shards
from loop.data.sample_data import BuildOptions, Document, SampleDataError

# ----------------------------------------------------------------------------- the real sample


@pytest.fixture(scope="module")
def manifest(sample_dataset) -> dict:
    return json.loads(sample_dataset.manifest_path.read_text())


@pytest.fixture(scope="module")
def sp(sample_dataset) -> spm.SentencePieceProcessor:
    return spm.SentencePieceProcessor(model_file=str(sample_dataset.tokenizer_path))


def test_sample_has_at_least_1_5m_train_tokens(sample_dataset):
    files = shards.shard_files(sample_dataset.data_path, "train")
    assert sum(shards.validate_shard(p) for p in files) >= 1_500_000


def test_sample_has_at_least_100k_val_tokens(sample_dataset):
    files = shards.shard_files(sample_dataset.data_path, "val")
    assert sum(shards.validate_shard(p) for p in files) >= 100_000


def test_sample_has_more_than_one_train_shard(sample_dataset):
    assert len(shards.shard_files(sample_dataset.data_path, "train")) >= 2


def test_manifest_says_it_is_the_sample(manifest):
    assert manifest["kind"] == "sample"
    assert manifest["name"] == "sample_sp1024"
    assert manifest["vocab_size"] == 1024


def test_manifest_has_every_field_of_the_design(manifest):
    expected = {"name", "kind", "source", "python_version", "vocab_size", "tokenizer",
                "tokenizer_sha256", "shards", "train_tokens", "val_tokens", "content_hash"}
    assert expected <= set(manifest)


def test_manifest_token_totals_match_the_shards(manifest, sample_dataset):
    train = sum(shards.validate_shard(p)
                for p in shards.shard_files(sample_dataset.data_path, "train"))
    val = sum(shards.validate_shard(p)
              for p in shards.shard_files(sample_dataset.data_path, "val"))
    assert (manifest["train_tokens"], manifest["val_tokens"]) == (train, val)


def test_built_sample_validates(repo_root, sample_dataset):
    assert sample_data.validate_sample(repo_root) == []


def test_every_split_starts_with_bos(sample_dataset):
    for split in ("train", "val"):
        first = shards.shard_files(sample_dataset.data_path, split)[0]
        assert shards.load_tokens(first)[0] == 1


def test_no_document_ends_with_eos(sample_dataset):
    for path in sorted(sample_dataset.data_path.glob("*.bin")):
        assert not np.any(shards.load_tokens(path) == 2), path


def test_every_token_id_is_below_the_vocab_size(sample_dataset):
    for path in sorted(sample_dataset.data_path.glob("*.bin")):
        shards.load_tokens(path, vocab_size=1024)  # raises on an id >= 1024


def test_documents_are_many_and_packed_back_to_back(manifest, sample_dataset):
    val = shards.load_tokens(shards.shard_files(sample_dataset.data_path, "val")[0])
    assert int(np.sum(val == 1)) == manifest["documents"]["val"] > 10


def test_tokenizer_has_the_spec_special_ids(sp):
    assert sp.get_piece_size() == 1024
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)


def test_tokenizer_falls_back_to_bytes(sp):
    assert sp.piece_to_id("<0x41>") != sp.unk_id()
    assert sp.is_byte(sp.piece_to_id("<0xE2>"))


def test_tokenizer_splits_digits(sp):
    assert sp.encode("2024", out_type=str) == ["2", "0", "2", "4"]


def test_tokenizer_adds_no_dummy_prefix(sp):
    assert not sp.encode("Return", out_type=str)[0].startswith("\u2581")


def test_tokenizer_uses_nmt_nfkc(sp):
    assert sp.encode("\uff21", out_type=str) == sp.encode("A", out_type=str)  # fullwidth A


# ----------------------------------------------------------------------------- reduced builds


@pytest.fixture(scope="module")
def mini_stdlib(tmp_path_factory) -> Path:
    """A small stand-in standard library: a few real modules and a trap of a topics file."""
    real = Path(sysconfig.get_paths()["stdlib"])
    lib = tmp_path_factory.mktemp("minilib")
    shutil.copytree(real / "json", lib / "json", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("textwrap.py", "argparse.py", "shlex.py"):
        shutil.copy(real / name, lib / name)
    (lib / "site-packages/evil").mkdir(parents=True)
    (lib / "site-packages/evil/__init__.py").write_text('"""Not the standard library."""\n')
    (lib / "pydoc_data").mkdir()
    (lib / "pydoc_data/topics.py").write_text(
        "raise SystemExit('the sample builder must not import this')\n"
        "topics = {'with': 'The with statement wraps a block.', 'if': 'Conditional text.'}\n"
    )
    return lib


def small(lib: Path, **overrides) -> BuildOptions:
    settings = dict(stdlib=lib, min_train_tokens=10_000, min_val_tokens=1_000,
                    val_tokens=5_000, shard_tokens=40_000)
    settings.update(overrides)
    return BuildOptions(**settings)


def file_digests(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_builds_are_byte_identical(mini_stdlib, tmp_path):
    sample_data.build_sample(tmp_path / "a", small(mini_stdlib))
    sample_data.build_sample(tmp_path / "b", small(mini_stdlib))
    a, b = file_digests(tmp_path / "a"), file_digests(tmp_path / "b")
    assert len(a) == 6  # 3 shards, manifest, model, vocab
    assert a == b


def test_two_builds_in_processes_with_different_hash_seeds_are_identical(mini_stdlib, tmp_path):
    code = ("import sys; from pathlib import Path; from loop.data import sample_data as s; "
            "s.build_sample(Path(sys.argv[1]), s.BuildOptions(stdlib=Path(sys.argv[2]), "
            "min_train_tokens=10_000, min_val_tokens=1_000, val_tokens=5_000))")
    for name, seed in (("a", "1"), ("b", "2")):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys_executable(), "-c", code, str(tmp_path / name), str(mini_stdlib)],
                       env=env, check=True, capture_output=True)
    assert file_digests(tmp_path / "a") == file_digests(tmp_path / "b")


def sys_executable() -> str:
    import sys

    return sys.executable


def test_reduced_build_writes_train_shards_of_the_asked_size(mini_stdlib, tmp_path):
    manifest = sample_data.build_sample(tmp_path, small(mini_stdlib, shard_tokens=20_000))
    train = sorted(n for n in manifest["shards"] if n.startswith("fineweb_train_"))
    assert len(train) >= 2
    assert all(manifest["shards"][n]["tokens"] == 20_000 for n in train[:-1])


def test_too_little_text_fails_naming_the_token_counts(mini_stdlib, tmp_path):
    with pytest.raises(SampleDataError) as err:
        sample_data.build_sample(tmp_path, small(mini_stdlib, min_train_tokens=10**9))
    message = str(err.value)
    assert "yields only" in message and "train and" in message
    assert "1,000,000,000" in message
    assert not (tmp_path / "data/datasets/sample_sp1024").exists()


def test_corrupted_shard_is_reported_by_validation(mini_stdlib, tmp_path):
    sample_data.build_sample(tmp_path, small(mini_stdlib))
    val = tmp_path / "data/datasets/sample_sp1024/fineweb_val_000000.bin"
    data = bytearray(val.read_bytes())
    data[-1] ^= 1
    val.write_bytes(bytes(data))
    assert sample_data.validate_sample(tmp_path) == [f"{val}: sha256 differs from the manifest"]


def test_replaced_tokenizer_is_reported_by_validation(mini_stdlib, tmp_path):
    sample_data.build_sample(tmp_path, small(mini_stdlib))
    model = tmp_path / "data/tokenizers/sample_1024_bpe.model"
    model.write_bytes(model.read_bytes() + b"\0")
    problems = sample_data.validate_sample(tmp_path)
    assert problems == [f"{model}: tokenizer differs from the one the shards were made with"]


def test_missing_manifest_is_reported_by_validation(tmp_path):
    problems = sample_data.validate_sample(tmp_path)
    assert len(problems) == 1 and "cannot read manifest" in problems[0]


def test_check_command_fails_when_there_is_no_sample(tmp_path, capsys):
    assert sample_data.main(["--root", str(tmp_path), "--check"]) == 1
    assert "NOT valid" in capsys.readouterr().out


def test_build_command_is_a_no_op_when_the_sample_is_valid(repo_root, sample_dataset, capsys):
    before = sample_dataset.manifest_path.stat().st_mtime_ns
    assert sample_data.main(["--root", str(repo_root)]) == 0
    assert sample_dataset.manifest_path.stat().st_mtime_ns == before
    assert "valid" in capsys.readouterr().out


def test_bootstrap_sample_is_a_no_op_when_valid(repo_root, sample_dataset):
    before = sample_dataset.manifest_path.stat().st_mtime_ns
    out = subprocess.run(["bash", "scripts/bootstrap-parameter-golf.sh", "--sample"],
                         cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sample_dataset.manifest_path.stat().st_mtime_ns == before


# ----------------------------------------------------------------------------- text extraction


def test_topics_are_read_without_importing_the_file(mini_stdlib):
    docs = sample_data.pydoc_topics(mini_stdlib)
    assert [d.key for d in docs] == ["pydoc_topics/if", "pydoc_topics/with"]


def test_site_packages_are_not_the_standard_library(mini_stdlib):
    names = [rel for rel, _ in sample_data.source_files(mini_stdlib)]
    assert not any("site-packages" in n for n in names)
    assert names == sorted(names)


def test_comment_blocks_join_consecutive_lines_and_drop_pragmas():
    source = "#!/usr/bin/env python\n# first line\n# second line\nx = 1\n# noqa: E501\n# later\n"
    assert sample_data.comment_texts(source) == [(2, "first line\nsecond line"),
                                                 (6, "later")]


def test_trailing_comments_after_code_are_taken():
    assert sample_data.comment_texts("x = 1  # the answer\n") == [(1, "the answer")]


def test_a_hash_inside_a_string_is_not_a_comment():
    assert sample_data.comment_texts("x = 'a # b'  # tail\ny = \"#x\"\n") == []


def test_docstrings_and_prose_messages_are_taken_once_each():
    import ast

    tree = ast.parse('def f():\n    """Do the thing well."""\n'
                     '    raise ValueError("the value must be positive")\n    return "%s=%d"\n')
    assert sample_data.tree_texts(tree) == [(2, "Do the thing well."),
                                            (3, "the value must be positive")]


def test_text_that_is_not_utf8_safe_is_cleaned():
    assert Document("k", "bad \udc80 text").text == "bad ? text"


def test_document_order_depends_on_keys_not_on_input_order():
    docs = [Document(f"k{i}", "x") for i in range(20)]
    assert sample_data.mix(docs) == sample_data.mix(list(reversed(docs)))


def test_val_split_takes_the_fewest_docs_reaching_the_target():
    encoded = [np.zeros(n, dtype=np.uint16) for n in (4, 4, 4, 4)]
    assert sample_data.split_encoded(encoded, 5) == 2


def test_builtin_module_text_does_not_depend_on_how_python_started(repo_root):
    """`site` adds help/license/... to builtins; the sample must not pick them up."""
    code = ("import hashlib; from loop.data import sample_data as s; "
            "print(hashlib.sha256(repr(s.builtin_documents()).encode()).hexdigest())")
    path = os.pathsep.join([str(repo_root), str(Path(np.__file__).parents[1])])
    env = dict(os.environ, PYTHONPATH=path)
    digests = {
        subprocess.run([sys_executable(), *flags, "-c", code], env=env, check=True,
                       capture_output=True, text=True).stdout
        for flags in ([], ["-S"])
    }
    assert len(digests) == 1
