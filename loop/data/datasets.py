"""The one place that knows where datasets and tokenizers live, and how a dataset is named.

A dataset is either a name (`dataset: sample` or `fineweb` in autogolf.yaml: the layout under
the cache root below) or a folder anywhere on disk (`dataset: {path: /data/fineweb10B_sp1024,
tokenizer: /data/tokenizers/fineweb_1024_bpe.model}`: your own download, used where it is).
Caches (data, tokenizers, the upstream clone) live in the main checkout, so a daemon worktree
under `.autogolf/` shares them instead of copying gigabytes. A results row records
`dataset_id(info)` (the folder's name and a hash of its content) so that results from
different datasets are never compared, wherever the files live.

`python -m loop.data.datasets --shell [NAME]` prints DATA_PATH, TOKENIZER_PATH, DATASET_NAME and
DATASET_ID for `eval` in bash; `--root` prints the cache root.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from loop.data import shards
from loop.settings.dataset import (  # the `dataset:` setting; here: where each name lives
    FOLDER_FIX,
    REAL_VARIANTS,
    SAMPLE_VOCABS,
    DatasetError,
    DatasetFolder,
    from_setting,
    real_key,
    sample_key,
)
from loop.store.gitsession import main_checkout

CACHE_ENV = "AUTOGOLF_CACHE_ROOT"
SAMPLE_FIX = "bash scripts/bootstrap-parameter-golf.sh --sample"
REAL_FIX = "bash scripts/bootstrap-parameter-golf.sh --train-shards N"
REAL_HINT = " (it needs a network; offline, use `dataset: sample` in autogolf.yaml)"
UPSTREAM_DIR = Path(".upstream/parameter-golf")


@dataclass(frozen=True)
class DatasetSpec:
    """Where one named dataset lives, relative to the cache root."""

    name: str
    kind: str  # "sample" | "real"
    data_dir: Path
    tokenizer: Path
    manifest: Path
    vocab_size: int
    fix: str
    hint: str = ""


def sample_spec(vocab: int) -> DatasetSpec:
    """The offline sample built with a sentencepiece tokenizer of `vocab` pieces."""
    name = f"sample_sp{vocab}"
    return DatasetSpec(
        name=name,
        kind="sample",
        data_dir=Path("data/datasets") / name,
        tokenizer=Path(f"data/tokenizers/sample_{vocab}_bpe.model"),
        manifest=Path("data/datasets") / name / "manifest.json",
        vocab_size=vocab,
        fix=SAMPLE_FIX if vocab == 1024 else f"{SAMPLE_FIX} --vocab {vocab}",
    )


def real_spec(variant: str) -> DatasetSpec:
    """Upstream's FineWeb export of one variant, as its downloader lays it out."""
    vocab = REAL_VARIANTS[variant]
    tokenizer = ("fineweb_pure_byte_260.json" if variant == "byte260"
                 else f"fineweb_{vocab}_bpe.model")
    fix = REAL_FIX if variant == "sp1024" else REAL_FIX.replace(
        "--train-shards", f"--variant {variant} --train-shards")
    return DatasetSpec(
        name=f"fineweb10B_{variant}",
        kind="real",
        data_dir=UPSTREAM_DIR / f"data/datasets/fineweb10B_{variant}",
        tokenizer=UPSTREAM_DIR / "data/tokenizers" / tokenizer,
        manifest=UPSTREAM_DIR / "data/manifest.json",
        vocab_size=vocab,
        fix=fix,
        hint=REAL_HINT,
    )


# Keyed by the names `dataset:` accepts (loop.settings.dataset.DATASET_NAMES, in this order).
DATASETS: dict[str, DatasetSpec] = {
    **{sample_key(v): sample_spec(v) for v in SAMPLE_VOCABS},
    **{real_key(v): real_spec(v) for v in REAL_VARIANTS},
}
# The directory names are accepted too, since that is what ledger rows show.
ALIASES = {spec.name: key for key, spec in DATASETS.items()}
# Upstream's layout: data/datasets/fineweb10B_sp<V>/ beside data/tokenizers/fineweb_<V>_bpe.model.
_UPSTREAM_FOLDER = re.compile(r"fineweb10B_sp(\d+)")


def _expand(raw: str, root: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(raw)))
    return path if path.is_absolute() else root / path


def folder_paths(folder: DatasetFolder, root: Path) -> tuple[Path, Path | None]:
    """(data folder, tokenizer or None when neither given nor found by upstream's layout)."""
    data = _expand(folder.path, root)
    if folder.tokenizer is not None:
        return data, _expand(folder.tokenizer, root)
    match = _UPSTREAM_FOLDER.fullmatch(data.name)
    if match is None:
        return data, None
    return data, data.parent.parent / "tokenizers" / f"fineweb_{match.group(1)}_bpe.model"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str
    data_path: Path
    tokenizer_path: Path
    manifest_path: Path
    vocab_size: int

    def manifest(self) -> dict | None:
        """The parsed manifest, or None when there is none (real data may lack one)."""
        if not self.manifest_path.is_file():
            return None
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))



def cache_root(start: Path | None = None) -> Path:
    """Root under which data/ and .upstream/ live (see module docstring)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    start = (start or Path.cwd()).resolve()
    return main_checkout(start) or start


def spec_for(name: str) -> DatasetSpec:
    key = ALIASES.get(name, name)
    if key not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {known}")
    return DATASETS[key]


def resolve(name: str | DatasetFolder, root: Path | None = None) -> DatasetInfo:
    """Locate a dataset (a name, or a folder on disk); raise DatasetError with the fix when
    any part is missing."""
    base = cache_root(root) if root is None else Path(root).resolve()
    if isinstance(name, DatasetFolder):
        return _resolve_folder(name, base)
    spec = spec_for(name)
    info = DatasetInfo(
        name=spec.name,
        kind=spec.kind,
        data_path=base / spec.data_dir,
        tokenizer_path=base / spec.tokenizer,
        manifest_path=base / spec.manifest,
        vocab_size=spec.vocab_size,
    )
    missing = _missing_parts(info)
    if missing:
        raise DatasetError(
            f"dataset {spec.name!r} ({spec.kind}) is not ready under {base}: "
            f"{'; '.join(missing)}{spec.hint}",
            spec.fix,
        )
    return info


def _resolve_folder(folder: DatasetFolder, base: Path) -> DatasetInfo:
    data, tokenizer = folder_paths(folder, base)
    where = f"dataset.path {folder.path!r} in autogolf.yaml"
    if not data.is_dir():
        raise DatasetError(f"{where}: no folder {data}", FOLDER_FIX)
    if tokenizer is None:
        raise DatasetError(f"{where}: no dataset.tokenizer given, and {data.name!r} is not "
                           "named like upstream's fineweb10B_sp<V> (whose tokenizer is found "
                           "beside it)", FOLDER_FIX)
    manifest = data / "manifest.json"
    if not manifest.is_file() and (data.parent.parent / "manifest.json").is_file():
        manifest = data.parent.parent / "manifest.json"  # upstream's data/manifest.json
    info = DatasetInfo(name=data.name, kind=_folder_kind(data), data_path=data,
                       tokenizer_path=tokenizer, manifest_path=manifest,
                       vocab_size=_vocab_size(data.name, tokenizer))
    missing = _missing_parts(info)
    if missing:
        raise DatasetError(f"{where}: {'; '.join(missing)}", FOLDER_FIX)
    return info


def _folder_kind(data: Path) -> str:
    """`sample` for a copy of the offline sample (its manifest says so), else `real`."""
    try:
        manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "real"
    return "sample" if isinstance(manifest, dict) and manifest.get("kind") == "sample" else "real"


def _vocab_size(name: str, tokenizer: Path) -> int:
    """From upstream's folder name (`_sp1024`, `byte260`), else the tokenizer's piece count."""
    match = re.search(r"_sp(\d+)$|byte(\d+)$", name)
    if match:
        return int(match.group(1) or match.group(2))
    try:
        import sentencepiece as spm

        return int(spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size())
    except Exception:  # not readable here: the doctor's tokenizer check names the problem
        return 1 << 16  # the shard format's own bound (uint16 ids)


def _missing_parts(info: DatasetInfo) -> list[str]:
    missing = []
    if not info.data_path.is_dir():
        return [f"no directory {info.data_path}"]
    if not shards.shard_files(info.data_path, "train"):
        missing.append(f"no train shards in {info.data_path}")
    if not shards.shard_files(info.data_path, "val"):
        missing.append(f"no val shard in {info.data_path}")
    if not info.tokenizer_path.is_file():
        missing.append(f"no tokenizer {info.tokenizer_path}")
    if info.kind == "sample" and not info.manifest_path.is_file():
        missing.append(f"no manifest {info.manifest_path} (incomplete build)")
    return missing


def _sha256_file(path: Path, h: hashlib._Hash | None = None) -> hashlib._Hash:
    h = h or hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def sha256_file(path: Path) -> str:
    return _sha256_file(path).hexdigest()


def content_hash(tokenizer: Path, shard_paths: list[Path]) -> str:
    """sha256 over the tokenizer bytes then every shard's bytes in sorted name order."""
    h = _sha256_file(tokenizer)
    for path in sorted(shard_paths, key=lambda p: p.name):
        _sha256_file(path, h)
    return h.hexdigest()


def _real_hash(info: DatasetInfo) -> str:
    # Hashing ~40 GB of train shards per experiment is too slow: names + sizes stand in.
    h = _sha256_file(info.tokenizer_path)
    for path in shards.shard_files(info.data_path, "val"):
        _sha256_file(path, h)
    for path in shards.shard_files(info.data_path, "train"):
        h.update(f"{path.name}\0{path.stat().st_size}\n".encode())
    return h.hexdigest()


def dataset_id(info: DatasetInfo) -> str:
    """`<name>:<first 16 hex of the content hash>` (see DESIGN.md for what is hashed)."""
    if info.kind == "sample":
        manifest = info.manifest() or {}
        digest = manifest.get("content_hash")
        if not isinstance(digest, str) or len(digest) < 16:
            raise DatasetError(
                f"{info.manifest_path}: no content_hash",
                f"{spec_for(info.name).fix} --force",
            )
    else:
        digest = _real_hash(info)
    return f"{info.name}:{digest[:16]}"


def configured(root: Path) -> str | DatasetFolder:
    """The `dataset:` of autogolf.yaml at root (see from_setting), else the sample."""
    path = root / "autogolf.yaml"
    if not path.is_file():
        return "sample"
    import yaml  # only needed here; keeps `--root` usable before dependencies are complete

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise DatasetError(f"{path}: not valid YAML ({exc})") from exc
    return from_setting(data.get("dataset", "sample") if isinstance(data, dict) else "sample")


def configured_name(root: Path) -> str:
    """The configured dataset as text: its name, or the folder's path as written."""
    return str(configured(root))


def shell_lines(info: DatasetInfo) -> list[str]:
    values = {
        "DATA_PATH": str(info.data_path),
        "TOKENIZER_PATH": str(info.tokenizer_path),
        "DATASET_NAME": info.name,
        "DATASET_ID": dataset_id(info),
    }
    return [f"{key}={shlex.quote(value)}" for key, value in values.items()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loop.data.datasets", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--shell", nargs="?", const="", metavar="NAME",
                       help="print shell assignments for NAME (default: autogolf.yaml)")
    group.add_argument("--root", action="store_true", help="print the cache root")
    args = parser.parse_args(argv)
    root = cache_root()
    if args.root:
        print(root)
        return 0
    try:
        name = from_setting(args.shell) if args.shell else configured(root)
        print("\n".join(shell_lines(resolve(name, root))))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
