"""Dataset paths, names and ids (DESIGN.md, data layout): one module knows where data lives."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from loop.data import datasets, shards
from loop.data.datasets import DatasetError


def fake_dataset(root: Path, name: str = "sample", manifest: dict | None = None):
    """The files of a dataset laid out where resolve() looks, with made-up content."""
    spec = datasets.DATASETS[name]
    folder = root / spec.data_dir
    folder.mkdir(parents=True)
    shards.write_shard(folder / "fineweb_val_000000.bin", [1, 2, 3])
    shards.write_shard(folder / "fineweb_train_000000.bin", [1, 4, 5, 6])
    (root / spec.tokenizer).parent.mkdir(parents=True, exist_ok=True)
    (root / spec.tokenizer).write_bytes(b"not really a model")
    if manifest is not None:
        spec_manifest = root / spec.manifest
        spec_manifest.parent.mkdir(parents=True, exist_ok=True)
        spec_manifest.write_text(json.dumps(manifest))
    return folder


def test_sample_fixture_resolves_to_the_sample_layout(sample_dataset, repo_root):
    assert sample_dataset.name == "sample_sp1024"
    assert sample_dataset.kind == "sample"
    assert sample_dataset.data_path == repo_root / "data/datasets/sample_sp1024"
    assert sample_dataset.tokenizer_path == repo_root / "data/tokenizers/sample_1024_bpe.model"
    assert sample_dataset.manifest_path.is_file()


def test_missing_sample_names_the_bootstrap_fix(tmp_path):
    with pytest.raises(DatasetError) as err:
        datasets.resolve("sample", tmp_path)
    assert "bash scripts/bootstrap-parameter-golf.sh --sample" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_missing_real_data_names_the_download_and_the_sample(tmp_path):
    with pytest.raises(DatasetError) as err:
        datasets.resolve("fineweb", tmp_path)
    assert "--train-shards N" in str(err.value)
    assert "sample" in str(err.value)


def test_sample_without_manifest_counts_as_an_incomplete_build(tmp_path):
    fake_dataset(tmp_path, "sample", manifest=None)
    with pytest.raises(DatasetError, match="incomplete build"):
        datasets.resolve("sample", tmp_path)


def test_missing_tokenizer_is_named(tmp_path):
    fake_dataset(tmp_path, "sample", manifest={})
    (tmp_path / datasets.DATASETS["sample"].tokenizer).unlink()
    with pytest.raises(DatasetError, match="no tokenizer .*sample_1024_bpe.model"):
        datasets.resolve("sample", tmp_path)


def test_missing_val_shard_is_named(tmp_path):
    folder = fake_dataset(tmp_path, "sample", manifest={})
    (folder / "fineweb_val_000000.bin").unlink()
    with pytest.raises(DatasetError, match="no val shard"):
        datasets.resolve("sample", tmp_path)


def test_unknown_dataset_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetError,
                       match="unknown dataset .imagenet.*fineweb, .*sample, sample_sp4096"):
        datasets.resolve("imagenet", tmp_path)


def test_directory_name_is_accepted_as_the_dataset_name(tmp_path):
    fake_dataset(tmp_path, "sample", manifest={})
    assert datasets.resolve("sample_sp1024", tmp_path).name == "sample_sp1024"


def test_real_data_needs_no_manifest(tmp_path):
    fake_dataset(tmp_path, "fineweb")
    info = datasets.resolve("fineweb", tmp_path)
    assert (info.kind, info.name) == ("real", "fineweb10B_sp1024")


def test_sample_id_is_name_and_manifest_content_hash(tmp_path):
    fake_dataset(tmp_path, "sample", manifest={"content_hash": "ab" * 32})
    info = datasets.resolve("sample", tmp_path)
    assert datasets.dataset_id(info) == "sample_sp1024:" + "ab" * 8


def test_sample_id_without_content_hash_asks_for_a_rebuild(tmp_path):
    fake_dataset(tmp_path, "sample", manifest={})
    with pytest.raises(DatasetError, match="--sample --force"):
        datasets.dataset_id(datasets.resolve("sample", tmp_path))


def test_built_sample_id_matches_its_files(sample_dataset):
    paths = sorted(sample_dataset.data_path.glob("*.bin"))
    digest = datasets.content_hash(sample_dataset.tokenizer_path, paths)
    assert datasets.dataset_id(sample_dataset) == f"sample_sp1024:{digest[:16]}"


def test_real_id_changes_with_the_val_shard(tmp_path):
    folder = fake_dataset(tmp_path, "fineweb")
    info = datasets.resolve("fineweb", tmp_path)
    before = datasets.dataset_id(info)
    shards.write_shard(folder / "fineweb_val_000000.bin", [1, 2, 9])
    assert datasets.dataset_id(info) != before


def test_real_id_changes_with_the_train_shard_list(tmp_path):
    folder = fake_dataset(tmp_path, "fineweb")
    info = datasets.resolve("fineweb", tmp_path)
    before = datasets.dataset_id(info)
    shards.write_shard(folder / "fineweb_train_000001.bin", [1, 2])
    assert datasets.dataset_id(info) != before


def test_real_id_reads_train_shard_names_and_sizes_only(tmp_path):
    folder = fake_dataset(tmp_path, "fineweb")
    info = datasets.resolve("fineweb", tmp_path)
    before = datasets.dataset_id(info)
    shards.write_shard(folder / "fineweb_train_000000.bin", [1, 7, 7, 7])  # same size
    assert datasets.dataset_id(info) == before


# ----------------------------------------------------------------------------- a folder on disk


def upstream_layout(root: Path, vocab: int = 1024) -> Path:
    """Upstream's download layout under `root`: datasets/fineweb10B_sp<V>/ and tokenizers/."""
    folder = root / "datasets" / f"fineweb10B_sp{vocab}"
    folder.mkdir(parents=True)
    shards.write_shard(folder / "fineweb_val_000000.bin", [1, 2, 3])
    shards.write_shard(folder / "fineweb_train_000000.bin", [1, 4, 5, 6])
    (root / "tokenizers").mkdir()
    (root / "tokenizers" / f"fineweb_{vocab}_bpe.model").write_bytes(b"not really a model")
    return folder


def test_a_folder_anywhere_is_used_where_it_is(tmp_path):
    folder = upstream_layout(tmp_path / "my data")
    tokenizer = tmp_path / "my data" / "tokenizers" / "fineweb_1024_bpe.model"
    info = datasets.resolve(datasets.DatasetFolder(str(folder), str(tokenizer)), tmp_path / "repo")
    assert (info.data_path, info.tokenizer_path) == (folder, tokenizer)
    assert (info.name, info.kind, info.vocab_size) == ("fineweb10B_sp1024", "real", 1024)


def test_a_folder_in_upstreams_layout_finds_its_tokenizer_beside_it(tmp_path):
    folder = upstream_layout(tmp_path, vocab=4096)
    info = datasets.resolve(datasets.DatasetFolder(str(folder)), tmp_path)
    assert info.tokenizer_path == tmp_path / "tokenizers" / "fineweb_4096_bpe.model"
    assert info.vocab_size == 4096


def test_a_relative_folder_is_taken_from_the_repository_root(tmp_path):
    upstream_layout(tmp_path / "repo" / "mydata")
    info = datasets.resolve(datasets.DatasetFolder("mydata/datasets/fineweb10B_sp1024"),
                            tmp_path / "repo")
    assert info.data_path == tmp_path / "repo" / "mydata/datasets/fineweb10B_sp1024"


def test_a_folder_that_does_not_exist_is_an_error_naming_the_key_and_the_path(tmp_path):
    with pytest.raises(DatasetError) as err:
        datasets.resolve(datasets.DatasetFolder("/nowhere/fineweb10B_sp1024"), tmp_path)
    assert "dataset.path '/nowhere/fineweb10B_sp1024'" in err.value.problem
    assert "no folder /nowhere/fineweb10B_sp1024" in err.value.problem
    assert "dataset: {path:" in err.value.fix


def test_a_folder_without_a_tokenizer_outside_upstreams_layout_asks_for_one(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    with pytest.raises(DatasetError, match="no dataset.tokenizer given"):
        datasets.resolve(datasets.DatasetFolder(str(folder)), tmp_path)


def test_a_folder_without_val_shards_is_named(tmp_path):
    folder = upstream_layout(tmp_path)
    (folder / "fineweb_val_000000.bin").unlink()
    with pytest.raises(DatasetError, match="no val shard"):
        datasets.resolve(datasets.DatasetFolder(str(folder)), tmp_path)


def test_the_same_files_give_the_same_id_wherever_they_live(tmp_path):
    fake_dataset(tmp_path / "cache", "fineweb")
    named = datasets.dataset_id(datasets.resolve("fineweb", tmp_path / "cache"))
    shutil.copytree(tmp_path / "cache" / ".upstream/parameter-golf/data", tmp_path / "copy")
    folder = datasets.DatasetFolder(str(tmp_path / "copy/datasets/fineweb10B_sp1024"))
    assert datasets.dataset_id(datasets.resolve(folder, tmp_path)) == named


def test_a_folder_with_other_content_gets_another_id(tmp_path):
    first, second = upstream_layout(tmp_path / "a"), upstream_layout(tmp_path / "b")
    shards.write_shard(second / "fineweb_val_000000.bin", [1, 2, 9])
    ids = {datasets.dataset_id(datasets.resolve(datasets.DatasetFolder(str(f)), tmp_path))
           for f in (first, second)}
    assert len(ids) == 2


def test_a_copy_of_the_sample_in_a_folder_is_still_the_sample(sample_dataset, tmp_path):
    copy = tmp_path / "sample_sp1024"
    shutil.copytree(sample_dataset.data_path, copy)
    info = datasets.resolve(datasets.DatasetFolder(str(copy), str(sample_dataset.tokenizer_path)),
                            tmp_path)
    assert info.kind == "sample"
    assert datasets.dataset_id(info) == datasets.dataset_id(sample_dataset)


@pytest.mark.parametrize(("value", "expected"), [
    ("sample", "sample"),
    ("fineweb", "fineweb"),
    ("/data/fineweb10B_sp1024", datasets.DatasetFolder("/data/fineweb10B_sp1024")),
    ("~/data/x", datasets.DatasetFolder("~/data/x")),
    ({"path": "/d", "tokenizer": "/t.model"}, datasets.DatasetFolder("/d", "/t.model")),
])
def test_the_dataset_setting_is_a_name_a_path_or_a_folder_mapping(value, expected):
    assert datasets.from_setting(value) == expected


@pytest.mark.parametrize("value", [{"tokenizer": "/t"}, {"path": ""}, {"path": "/d", "x": 1},
                                   {"path": "/d", "tokenizer": 3}])
def test_a_malformed_dataset_mapping_is_refused_with_the_shape_to_use(value):
    with pytest.raises(DatasetError) as err:
        datasets.from_setting(value)
    assert "dataset: {path:" in err.value.fix


def test_the_shell_command_prints_a_configured_folder(tmp_path, monkeypatch, capsys):
    folder = upstream_layout(tmp_path / "elsewhere")
    (tmp_path / "autogolf.yaml").write_text(f"dataset: {{path: '{folder}'}}\n")
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(tmp_path))
    assert datasets.main(["--shell"]) == 0
    assert f"DATA_PATH={shlex.quote(str(folder))}" in capsys.readouterr().out.splitlines()


def test_cache_root_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(tmp_path))
    assert datasets.cache_root(Path("/")) == tmp_path.resolve()


def test_cache_root_outside_git_is_the_start(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOGOLF_CACHE_ROOT", raising=False)
    assert datasets.cache_root(tmp_path) == tmp_path.resolve()


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd, check=True, capture_output=True,
    )


def test_cache_root_of_a_worktree_is_the_main_checkout(tmp_path, monkeypatch):
    monkeypatch.delenv("AUTOGOLF_CACHE_ROOT", raising=False)
    main = tmp_path / "main"
    main.mkdir()
    git("init", "-q", cwd=main)
    git("commit", "-q", "--allow-empty", "-m", "root", cwd=main)
    git("worktree", "add", "-q", str(main / ".autogolf/worktrees/s1"), cwd=main)
    inside = main / ".autogolf/worktrees/s1"
    assert datasets.cache_root(inside) == main.resolve()
    assert datasets.cache_root(main) == main.resolve()


def test_shell_lines_can_be_evaluated_by_bash(tmp_path):
    fake_dataset(tmp_path / "with space", "sample", manifest={"content_hash": "cd" * 32})
    info = datasets.resolve("sample", tmp_path / "with space")
    script = "\n".join(datasets.shell_lines(info)) + '\nprintf "%s|%s" "$DATA_PATH" "$DATASET_ID"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == f"{info.data_path}|sample_sp1024:{'cd' * 8}"


def test_configured_dataset_defaults_to_the_sample(tmp_path):
    assert datasets.configured_name(tmp_path) == "sample"


def test_configured_dataset_is_read_from_autogolf_yaml(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("dataset: fineweb\n")
    assert datasets.configured_name(tmp_path) == "fineweb"


def test_shell_command_reports_a_missing_dataset_with_its_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(tmp_path))
    assert datasets.main(["--shell", "sample"]) == 2
    assert "--sample" in capsys.readouterr().err


def test_shell_command_prints_all_four_variables(tmp_path, monkeypatch, capsys):
    fake_dataset(tmp_path, "sample", manifest={"content_hash": "ef" * 32})
    monkeypatch.setenv("AUTOGOLF_CACHE_ROOT", str(tmp_path))
    assert datasets.main(["--shell"]) == 0
    names = [shlex.split(line)[0].split("=")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["DATA_PATH", "TOKENIZER_PATH", "DATASET_NAME", "DATASET_ID"]


# ----------------------------------------------------------------------------- real-data bootstrap

FAKE_DOWNLOADER = '''\
"""Stand-in for upstream's data/cached_challenge_fineweb.py: writes tiny shards locally."""
import argparse, pathlib, struct
parser = argparse.ArgumentParser()
parser.add_argument("--variant")
parser.add_argument("--train-shards", type=int)
args = parser.parse_args()
root = pathlib.Path(__file__).resolve().parent
folder = root / "datasets" / "fineweb10B_sp1024"
folder.mkdir(parents=True, exist_ok=True)
def shard(path, tokens):
    if path.exists():  # like upstream: an existing file is never fetched again
        return
    header = struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253))
    path.write_bytes(header + struct.pack(f"<{len(tokens)}H", *tokens))
shard(folder / "fineweb_val_000000.bin", [1, 5, 6, 7])
for i in range(args.train_shards):
    shard(folder / f"fineweb_train_{i:06d}.bin", [1, 8, 9])
(root / "tokenizers").mkdir(exist_ok=True)
(root / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"model")
print("fake download done")
'''


@pytest.fixture()
def fake_upstream(tmp_path) -> tuple[Path, str]:
    """A local git repository standing in for openai/parameter-golf: (url, commit)."""
    repo = tmp_path / "upstream"
    (repo / "data").mkdir(parents=True)
    (repo / "data/cached_challenge_fineweb.py").write_text(FAKE_DOWNLOADER)
    git("init", "-q", cwd=repo)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "fake upstream", cwd=repo)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout.strip()
    return repo, head


def bootstrap(repo_root: Path, cache: Path, *args: str, **env: str):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGOLF_")}
    full_env.update(AUTOGOLF_CACHE_ROOT=str(cache), **env)
    return subprocess.run(["bash", "scripts/bootstrap-parameter-golf.sh", *args],
                          cwd=repo_root, env=full_env, capture_output=True, text=True,
                          timeout=120)


def offline_env(fake_upstream) -> dict[str, str]:
    url, commit = fake_upstream
    return {"AUTOGOLF_UPSTREAM_URL": str(url), "AUTOGOLF_UPSTREAM_COMMIT": commit,
            "AUTOGOLF_HUB_URL": "file:///dev/null"}


def test_bootstrap_real_fetches_downloads_and_verifies(repo_root, tmp_path, fake_upstream):
    done = bootstrap(repo_root, tmp_path / "cache", "--train-shards", "2",
                     **offline_env(fake_upstream))
    assert done.returncode == 0, done.stderr
    assert "2 train shards (6 tokens), 1 val shards (4 tokens), 0 problems" in done.stdout
    info = datasets.resolve("fineweb", tmp_path / "cache")
    assert len(shards.shard_files(info.data_path, "train")) == 2


def test_bootstrap_real_is_a_no_op_when_complete(repo_root, tmp_path, fake_upstream):
    env = offline_env(fake_upstream)
    bootstrap(repo_root, tmp_path / "cache", "--train-shards", "2", **env)
    again = bootstrap(repo_root, tmp_path / "cache", "--train-shards", "2", **env)
    assert again.returncode == 0, again.stderr
    assert "already complete" in again.stdout
    assert "fake download done" not in again.stdout


def test_bootstrap_real_refuses_a_corrupt_download_naming_the_file(repo_root, tmp_path,
                                                                   fake_upstream):
    env = offline_env(fake_upstream)
    bootstrap(repo_root, tmp_path / "cache", "--train-shards", "1", **env)
    bad = (tmp_path / "cache" / datasets.DATASETS["fineweb"].data_dir
           / "fineweb_train_000000.bin")
    bad.write_bytes(bad.read_bytes()[:-2])
    again = bootstrap(repo_root, tmp_path / "cache", "--train-shards", "1", **env)
    assert again.returncode != 0
    assert f"{bad}: truncated body" in again.stderr


def test_bootstrap_real_without_network_fails_fast_pointing_to_the_sample(repo_root, tmp_path):
    done = bootstrap(repo_root, tmp_path, "--train-shards", "1",
                     AUTOGOLF_UPSTREAM_URL=str(tmp_path / "unreachable"))
    assert done.returncode == 1
    assert "bootstrap-parameter-golf.sh --sample" in done.stderr
    assert not (tmp_path / ".upstream/parameter-golf/.git").exists()


def test_bootstrap_real_gives_up_on_a_silent_network_within_the_timeout(repo_root, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "git").write_text("#!/bin/bash\nsleep 30 & wait\n")  # a child holds on
    (fake_bin / "git").chmod(0o755)
    path = f"{fake_bin}:{os.environ['PATH']}"
    started = time.monotonic()
    done = bootstrap(repo_root, tmp_path, "--train-shards", "1",
                     AUTOGOLF_NET_TIMEOUT="1", PATH=path)
    assert time.monotonic() - started < 25  # the fake git's child sleeps 30 s
    assert done.returncode == 1
    assert "no answer within 1s" in done.stderr


def test_bootstrap_refuses_an_unknown_argument(repo_root, tmp_path):
    done = bootstrap(repo_root, tmp_path, "--shards", "3")
    assert done.returncode == 1
    assert "unknown argument: --shards" in done.stderr


def test_unreadable_autogolf_yaml_is_a_dataset_error_naming_it(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("dataset: [unclosed\n")
    with pytest.raises(DatasetError, match="autogolf.yaml: not valid YAML"):
        datasets.configured_name(tmp_path)


def test_the_daemon_runs_on_a_folder_named_in_autogolf_yaml(repo, sample_dataset, tmp_path):
    from scheduler_helpers import candidates, commit_files, rows, run_daemon

    copy = tmp_path / "elsewhere" / "sample_sp1024"
    shutil.copytree(sample_dataset.data_path, copy)
    config = (repo / "autogolf.yaml").read_text().replace(
        "dataset: sample", f"dataset: {{path: '{copy}', tokenizer: "
                           f"'{sample_dataset.tokenizer_path}'}}")
    commit_files(repo, {"autogolf.yaml": config}, "my data")
    run_daemon(repo, {"LR": 0.041}, ladder=("breadth",))
    [header] = [r for r in rows(repo) if r.get("type") == "session"]
    assert header["dataset"] == datasets.dataset_id(sample_dataset)  # same files, same id
    assert candidates(repo)[0]["status"] in ("keep", "discard")


def test_the_names_the_configuration_accepts_are_the_datasets_this_module_knows() -> None:
    from loop.settings.dataset import DATASET_NAMES

    assert tuple(datasets.DATASETS) == DATASET_NAMES
