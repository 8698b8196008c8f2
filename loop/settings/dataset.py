"""`dataset:`: a named dataset (`sample`, `fineweb`, their vocabulary variants) or a folder
anywhere on disk. Where each name lives, and checking the files, is loop/data/datasets.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from loop.settings.reader import Reader

# Vocabulary variants. Upstream's downloader offers sp1024, sp4096, sp8192 and byte260, each
# its own dataset (fineweb10B_<variant>); the offline sample can be built at the sp sizes.
# Results of different variants are different datasets and are never compared.
REAL_VARIANTS: dict[str, int] = {"sp1024": 1024, "sp4096": 4096, "sp8192": 8192, "byte260": 260}
SAMPLE_VOCABS: tuple[int, ...] = (1024, 4096, 8192)
FOLDER_FIX = ("set `dataset: {path: /folder/with/fineweb_train_000000.bin, tokenizer: "
              "/path/to/tokenizer.model}` in autogolf.yaml")


def sample_key(vocab: int) -> str:
    """The `dataset:` name of the offline sample at `vocab` pieces (1024: `sample`)."""
    return "sample" if vocab == 1024 else f"sample_sp{vocab}"


def real_key(variant: str) -> str:
    """The `dataset:` name of upstream's export of `variant` (sp1024: `fineweb`)."""
    return "fineweb" if variant == "sp1024" else f"fineweb_{variant}"


DATASET_NAMES: tuple[str, ...] = (*map(sample_key, SAMPLE_VOCABS), *map(real_key, REAL_VARIANTS))


class DatasetError(Exception):
    """A dataset that is missing or unusable; the message says how to fix it.

    `problem` and `fix` are the two halves, for reports that print them on separate lines.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. Fix: run `{fix}`" if fix else problem)


@dataclass(frozen=True)
class DatasetFolder:
    """`dataset: {path: ..., tokenizer: ...}`: a dataset in a folder anywhere on disk.

    Paths are kept as written (`~` and `$VARS` are expanded, and a relative path is taken
    from the repository root, when resolved: autogolf.yaml is read on other machines too).
    Without `tokenizer`, upstream's layout is assumed: `<path>/../../tokenizers/
    fineweb_<V>_bpe.model` for a folder named `fineweb10B_sp<V>`.
    """

    path: str
    tokenizer: str | None = None

    def __str__(self) -> str:
        return self.path


def from_setting(value: object) -> str | DatasetFolder:
    """autogolf.yaml's `dataset:` value: a name, a folder path (a text with a `/` or starting
    with `~`), or a mapping {path, tokenizer}. DatasetError naming the key otherwise."""
    if isinstance(value, dict):
        unknown = sorted(set(map(str, value)) - {"path", "tokenizer"})
        if unknown or not isinstance(value.get("path"), str) or not value["path"].strip():
            raise DatasetError(f"dataset: got {value!r}: a folder needs `path` (and may have "
                               "`tokenizer`), nothing else", FOLDER_FIX)
        tokenizer = value.get("tokenizer")
        if tokenizer is not None and (not isinstance(tokenizer, str) or not tokenizer.strip()):
            raise DatasetError(f"dataset.tokenizer: got {tokenizer!r}", FOLDER_FIX)
        return DatasetFolder(value["path"], tokenizer)
    if isinstance(value, str) and ("/" in value or value.startswith("~")):
        return DatasetFolder(value)
    return str(value)


def read_dataset(reader: Reader, top: dict) -> str | DatasetFolder | None:
    """The Config `dataset` field; its files are checked at start, not here."""
    if "dataset" not in top:
        return None
    allowed = (f"one of {', '.join(DATASET_NAMES)}, or a folder: {{path: /data/fineweb10B_sp1024, "
               "tokenizer: /data/tokenizers/fineweb_1024_bpe.model}")
    try:
        value = from_setting(top["dataset"])
    except DatasetError as exc:
        reader.fail("dataset", exc.problem.removeprefix("dataset: "), allowed)
        return None
    if not isinstance(value, DatasetFolder) and value not in DATASET_NAMES:
        reader.fail("dataset", f"unknown dataset {value!r}", allowed)
        return None
    return value
