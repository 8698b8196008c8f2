"""Build the offline sample dataset from English text that every CPython installation ships.

Documents, one per source: each pydoc topic (`pydoc_data/topics.py`); each standard-library
source file (its docstrings, `#` comments and prose string constants such as error messages,
in line order); each module compiled into the interpreter (its docstrings); a few shipped
text files (the licence, IDLE's notes). Source files are parsed with `ast`, never imported,
so no library code runs. Each document begins with BOS (id 1); none ends with EOS.

Determinism (two builds give byte-identical files): every walk is sorted, documents are
ordered by the sha256 of their key (a fixed mix, not a random shuffle), the tokenizer is
trained with one thread on a bounded, unsampled, unshuffled input handed over in memory (so
no temporary path is recorded in the model), and the manifest carries no timestamps.

The vocabulary size is a build option (`--vocab 4096` builds `sample_sp4096`, with its own
tokenizer and shards, from the same documents): the public records moved to larger
vocabularies, and each size is its own dataset (loop.data.datasets.sample_spec).

`python -m loop.data.sample_data [--vocab V] [--force] [--check]`; the bootstrap script
calls this.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import inspect
import io
import json
import os
import platform
import re
import shutil
import sys
import sysconfig
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from loop.data import datasets, shards
from loop.store.files import atomic_write

BOS_ID = 1
VOCAB_SIZE = 1024
MIN_TRAIN_TOKENS = 1_500_000
MIN_VAL_TOKENS = 100_000
SHARD_TOKENS = 1_000_000
VAL_TOKENS = 110_000  # the val split: the first docs (in mixed order) reaching this
VAL_RESERVE_FRACTION = 0.12  # of the chars: val candidates, kept out of tokenizer training
TOKENIZER_TRAIN_CHARS = 2_000_000  # bounds tokenizer training time; plenty for 1024 pieces
SKIPPED_DIRS = {"site-packages", "dist-packages", "__pycache__"}
TOPICS_FILE = "pydoc_data/topics.py"
TEXT_FILE_GLOBS = ("LICENSE.txt", "idlelib/*.txt", "email/*.rst")
BUILDER_VERSION = 1

TOKENIZER_SETTINGS = {
    "model_type": "bpe",
    "vocab_size": VOCAB_SIZE,
    "byte_fallback": True,
    "split_digits": True,
    "normalization_rule_name": "nmt_nfkc",
    "add_dummy_prefix": False,
    "pad_id": 0,
    "bos_id": BOS_ID,
    "eos_id": 2,
    "unk_id": 3,
    "character_coverage": 0.9995,
    "num_threads": 1,
    "input_sentence_size": 0,
    "shuffle_input_sentence": False,
    "minloglevel": 2,
}

_COMMENT_LINE = re.compile(r"^[ \t]*#+[ \t]?(.*?)[ \t]*$")
_PRAGMA = re.compile(r"^(!|-\*-|noqa|type:|pragma|fmt:|pylint:|vim?:|XXX$|TODO$)")
_LETTER = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[A-Za-z]{2,}")
_TRAILING_COMMENT = re.compile(r"""^[^#'"]*[^\s#'"][^#'"]*\s#+\s*([A-Za-z][^#]*?)\s*$""")


class SampleDataError(Exception):
    """The sample cannot be built or is not valid; the message says why and what to do."""


@dataclass(frozen=True)
class Document:
    key: str  # stable name, e.g. "stdlib/json/decoder.py" or "pydoc_topics/for"
    text: str

    def __post_init__(self) -> None:
        # String literals may hold lone surrogates, which UTF-8 (and sentencepiece) refuses.
        clean = self.text.encode("utf-8", "replace").decode("utf-8")
        object.__setattr__(self, "text", clean)

    @property
    def order(self) -> str:
        return hashlib.sha256(self.key.encode("utf-8")).hexdigest()


# ----------------------------------------------------------------------------- sources


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(lib: Path) -> list[tuple[str, Path]]:
    """(posix relative path, path) of every stdlib .py file, sorted by relative path."""
    found = []
    for folder, dirs, files in os.walk(lib):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            if name.endswith(".py"):
                path = Path(folder, name)
                found.append((path.relative_to(lib).as_posix(), path))
    return sorted(found)


def pydoc_topics(lib: Path) -> list[Document]:
    """The `topics` dict literal of pydoc_data/topics.py, read without importing it."""
    path = lib / TOPICS_FILE
    if not path.is_file():
        return []
    tree = _parse(path.read_bytes())
    for node in tree.body if tree else []:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "topics" for t in node.targets
        ):
            topics = ast.literal_eval(node.value)
            return [Document(f"pydoc_topics/{k}", v.strip()) for k, v in sorted(topics.items())]
    return []


def _parse(source: bytes) -> ast.Module | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escape sequences in old test files
        try:
            return ast.parse(source)
        except (SyntaxError, ValueError):  # deliberately broken test inputs, Python 2 data
            return None


_DOC_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _is_prose(text: str) -> bool:
    """A message or help text rather than code, data or a format fragment."""
    if len(_WORD.findall(text)) < 3:
        return False
    return sum(c.isalpha() or c == " " for c in text) >= 0.7 * len(text)


def tree_texts(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of every docstring and of every other string constant that reads as
    English prose (error messages, help texts).

    The string constants matter on installations without Lib/test (Debian, the official
    Docker images), where docstrings and comments alone are too few tokens. One walk: a
    docstring's owner is visited before the docstring itself, so it can be skipped later.
    """
    found: list[tuple[int, str]] = []
    docstring_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, _DOC_OWNERS):
            text = ast.get_docstring(node, clean=True)
            if text is not None:
                docstring_nodes.add(id(node.body[0].value))
                if _LETTER.search(text):
                    found.append((node.body[0].lineno, text.strip()))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstring_nodes
        ):
            text = node.value.strip()
            if _is_prose(text):
                found.append((node.lineno, text))
    return found


def comment_texts(source: str) -> list[tuple[int, str]]:
    """(first line, text) of each run of consecutive full-line comments, markers removed,
    and of each trailing comment after code (only on lines without quotes before the `#`,
    so a `#` inside a string is not taken for a comment)."""
    found: list[tuple[int, str]] = []
    current: list[str] = []
    start = last = -2
    for number, line in enumerate(source.splitlines(), 1):
        match = _COMMENT_LINE.match(line)
        if not match:
            trailing = _TRAILING_COMMENT.match(line)
            if trailing and _LETTER.search(trailing.group(1)):
                found.append((number, trailing.group(1)))
            continue
        text = match.group(1)
        if _PRAGMA.match(text) or not _LETTER.search(text):
            continue
        if number != last + 1 and current:
            found.append((start, "\n".join(current)))
            current = []
        if not current:
            start = number
        current.append(text)
        last = number
    if current:
        found.append((start, "\n".join(current)))
    return found


def source_document(relpath: str, path: Path) -> Document | None:
    """The prose of one source file: docstrings, comments and messages, in line order."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    tree = _parse(raw)
    if tree is None:
        return None
    parts = sorted(tree_texts(tree) + comment_texts(raw.decode("utf-8", errors="replace")))
    if not parts:
        return None
    return Document(f"stdlib/{relpath}", "\n\n".join(p for _, p in parts))


def text_files(lib: Path) -> list[Document]:
    """Prose files CPython ships beside the sources (IDLE's notes, the licence), sorted."""
    found = []
    for pattern in TEXT_FILE_GLOBS:
        for path in sorted(lib.glob(pattern)):
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                found.append(Document(f"stdlib/{path.relative_to(lib).as_posix()}", text))
    return found


def builtin_documents() -> list[Document]:
    """Docstrings of the modules compiled into the interpreter (sys, builtins, posix, ...).

    These are already part of the running binary, so importing them runs no library code;
    they are the C-level documentation every installation carries, stripped or not.
    """
    seen: set[str] = set()
    docs = []
    for name in sorted(sys.builtin_module_names):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        texts = [t for t in _member_docs(module) if t not in seen]
        seen.update(texts)
        if texts:
            docs.append(Document(f"builtins/{name}", "\n\n".join(texts)))
    return docs


def _member_docs(module: ModuleType) -> list[str]:
    """The module's own functions and classes (with their methods), by name.

    Only members defined by the module itself count: `site` adds `help`, `license` and
    friends to builtins (absent under `python -S`), and data attributes would contribute
    their type's docstring; either would make the text depend on how Python was started.
    Dunder members are boilerplate and skipped.
    """
    objects: list[object] = [module]
    for name, value in sorted(vars(module).items()):
        if name.startswith("__") or getattr(value, "__module__", None) != module.__name__:
            continue
        objects.append(value)
        if isinstance(value, type):
            objects += [v for k, v in sorted(vars(value).items()) if not k.startswith("__")]
    texts = []
    for obj in objects:
        doc = getattr(obj, "__doc__", None)
        if isinstance(doc, str) and _LETTER.search(doc):
            texts.append(inspect.cleandoc(doc))
    return list(dict.fromkeys(texts))


def collect_documents(lib: Path, max_chars: int | None = None) -> list[Document]:
    """Every sample document, in sorted source order; stop early once max_chars is reached."""
    docs = pydoc_topics(lib) + builtin_documents() + text_files(lib)
    total = sum(len(d.text) for d in docs)
    for relpath, path in source_files(lib):
        if max_chars is not None and total >= max_chars:
            break
        if relpath == TOPICS_FILE:
            continue
        doc = source_document(relpath, path)
        if doc is not None:
            docs.append(doc)
            total += len(doc.text)
    return docs


# ----------------------------------------------------------------------------- split, tokenizer


def mix(docs: list[Document]) -> list[Document]:
    """A fixed, well-mixed order: by sha256 of the key (no random shuffle, no sampling)."""
    return sorted(docs, key=lambda d: (d.order, d.key))


def reserve_count(docs: list[Document], fraction: float) -> int:
    """How many leading docs hold `fraction` of the characters: the val candidates, which
    the tokenizer never trains on."""
    target = fraction * sum(len(d.text) for d in docs)
    chars = 0
    for index, doc in enumerate(docs):
        if chars >= target:
            return index
        chars += len(doc.text)
    return len(docs)


def split_encoded(encoded: list[np.ndarray], val_tokens: int) -> int:
    """How many leading docs make the val split: the fewest reaching val_tokens."""
    total = 0
    for index, ids in enumerate(encoded):
        if total >= val_tokens:
            return index
        total += len(ids)
    return len(encoded)


def tokenizer_sentences(docs: list[Document], max_chars: int) -> list[str]:
    """Non-empty lines of the train docs, in order, up to max_chars (no sampling)."""
    out: list[str] = []
    total = 0
    for doc in docs:
        for line in doc.text.splitlines():
            line = line.strip()
            if not line:
                continue
            out.append(line)
            total += len(line)
            if total >= max_chars:
                return out
    return out


def train_tokenizer(sentences: list[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """Serialized sentencepiece model trained with the SPEC settings at `vocab_size`."""
    import sentencepiece as spm

    writer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=writer,
        **{**TOKENIZER_SETTINGS, "vocab_size": vocab_size}
    )
    return writer.getvalue()


def encode_documents(model: bytes, docs: list[Document]) -> list[np.ndarray]:
    """Each doc as uint16 ids prefixed with BOS (documents are packed back to back later)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    texts = [d.text for d in docs]
    return [np.asarray([BOS_ID, *ids], dtype=np.uint16) for ids in sp.encode(texts)]


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def vocab_text(model: bytes) -> str:
    """The `.vocab` companion file (piece TAB score), as sentencepiece writes it."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    lines = [f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}" for i in range(sp.get_piece_size())]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- build


@dataclass
class BuildOptions:
    """Knobs of a build; defaults are the real sample, tests shrink them for speed."""

    max_source_chars: int | None = None
    min_train_tokens: int = MIN_TRAIN_TOKENS
    min_val_tokens: int = MIN_VAL_TOKENS
    shard_tokens: int = SHARD_TOKENS
    val_tokens: int = VAL_TOKENS
    val_reserve_fraction: float = VAL_RESERVE_FRACTION
    tokenizer_chars: int = TOKENIZER_TRAIN_CHARS
    stdlib: Path | None = None
    vocab_size: int = VOCAB_SIZE  # sentencepiece pieces: 1024, 4096 or 8192 (SAMPLE_VOCABS)

    @property
    def spec(self) -> datasets.DatasetSpec:
        return datasets.sample_spec(self.vocab_size)


def _check_minimums(train: int, val: int, lib: Path, opts: BuildOptions) -> None:
    if train >= opts.min_train_tokens and val >= opts.min_val_tokens:
        return
    raise SampleDataError(
        f"the standard library of Python {platform.python_version()} at {lib} yields only "
        f"{train:,} train and {val:,} val tokens; the sample needs at least "
        f"{opts.min_train_tokens:,} and {opts.min_val_tokens:,}. Use a full CPython "
        "installation (one that ships Lib/test, e.g. python.org, Homebrew, pyenv or uv), "
        "or fetch the real data with `bash scripts/bootstrap-parameter-golf.sh --train-shards 1`"
    )


def _write_shards(folder: Path, train: np.ndarray, val: np.ndarray, size: int) -> list[Path]:
    paths = [folder / "fineweb_val_000000.bin"]
    shards.write_shard(paths[0], val)
    for index, start in enumerate(range(0, len(train), size)):
        paths.append(folder / f"fineweb_train_{index:06d}.bin")
        shards.write_shard(paths[-1], train[start:start + size])
    return paths


def _manifest(root: Path, lib: Path, model: bytes, paths: list[Path], counts: dict,
              spec: datasets.DatasetSpec) -> dict:
    tokenizer_path = root / spec.tokenizer
    return {
        "name": spec.name,
        "kind": "sample",
        "source": f"CPython {platform.python_version()} standard library ({lib.name}): "
        "pydoc topics; docstrings, comments and messages of the sources; docstrings of the "
        "built-in modules; shipped text files",
        "python_version": platform.python_version(),
        "builder_version": BUILDER_VERSION,
        "vocab_size": spec.vocab_size,
        "tokenizer": spec.tokenizer.as_posix(),
        "tokenizer_sha256": hashlib.sha256(model).hexdigest(),
        "shards": {
            p.name: {"tokens": shards.validate_shard(p), "sha256": datasets.sha256_file(p)}
            for p in sorted(paths, key=lambda p: p.name)
        },
        "train_tokens": counts["train_tokens"],
        "val_tokens": counts["val_tokens"],
        "documents": {"train": counts["train_docs"], "val": counts["val_docs"]},
        "content_hash": datasets.content_hash(tokenizer_path, paths),
    }


def build_sample(root: Path, options: BuildOptions | None = None) -> dict:
    """Build the sample under root (data/...) and return its manifest."""
    opts = options or BuildOptions()
    lib = opts.stdlib or stdlib_dir()
    docs = mix(collect_documents(lib, opts.max_source_chars))
    model = _train_on(docs, opts, lib)
    encoded = encode_documents(model, docs)
    n_val = split_encoded(encoded, opts.val_tokens)
    val, train = _concat(encoded[:n_val]), _concat(encoded[n_val:])
    _check_minimums(len(train), len(val), lib, opts)
    counts = {"train_tokens": int(len(train)), "val_tokens": int(len(val)),
              "train_docs": len(docs) - n_val, "val_docs": n_val}
    return _write_sample(Path(root).resolve(), lib, model, (train, val), counts, opts)


def _train_on(docs: list[Document], opts: BuildOptions, lib: Path) -> bytes:
    """The tokenizer, trained on the docs after the val reserve (val text is never seen)."""
    reserved = reserve_count(docs, opts.val_reserve_fraction)
    sentences = tokenizer_sentences(docs[reserved:], opts.tokenizer_chars)
    try:
        return train_tokenizer(sentences, opts.vocab_size)
    except RuntimeError as exc:  # sentencepiece's own error: too little or no text
        raise SampleDataError(
            f"tokenizer training failed on {len(sentences):,} lines of text from {lib} "
            f"({len(docs):,} documents found): {exc}"
        ) from exc


def _write_sample(root: Path, lib: Path, model: bytes, splits: tuple, counts: dict,
                  opts: BuildOptions) -> dict:
    """Tokenizer first, then the shards and manifest staged and swapped in as one folder, so
    a present manifest always means a complete build."""
    spec = opts.spec
    atomic_write(root / spec.tokenizer, model)
    atomic_write((root / spec.tokenizer).with_suffix(".vocab"),
                        vocab_text(model).encode("utf-8"))
    final = root / spec.data_dir
    staging = final.with_name(f".{final.name}.building-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    paths = _write_shards(staging, *splits, opts.shard_tokens)
    manifest = _manifest(root, lib, model, paths, counts, spec)
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    _swap_in(staging, final, root, spec.vocab_size)
    return manifest


def _swap_in(staging: Path, final: Path, root: Path, vocab_size: int = VOCAB_SIZE) -> None:
    """Replace the dataset folder with the freshly built one.

    Two builds may race (two test sessions on one checkout); builds are identical, so if
    the other one won and its result validates, ours is simply dropped.
    """
    if final.exists():
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.replace(staging, final)
    except OSError:
        if validate_sample(root, vocab_size):
            raise
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- validation


def validate_sample(root: Path, vocab_size: int = VOCAB_SIZE) -> list[str]:
    """Problems with the built sample under root (an empty list means it is complete)."""
    spec = datasets.sample_spec(vocab_size)
    folder = Path(root) / spec.data_dir
    manifest_path = Path(root) / spec.manifest
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{manifest_path}: cannot read manifest ({exc})"]
    problems = _tokenizer_problems(Path(root), manifest)
    listed = manifest.get("shards") or {}
    on_disk = {p.name for p in folder.glob("fineweb_*.bin")}
    problems += [f"{folder / n}: not listed in the manifest" for n in sorted(on_disk - set(listed))]
    for name in sorted(listed):
        problems += _shard_problems(folder / name, listed[name], manifest.get("vocab_size"))
    if not problems:
        paths = [folder / n for n in listed]
        if datasets.content_hash(Path(root) / manifest["tokenizer"], paths) != manifest.get(
            "content_hash"
        ):
            problems.append(f"{manifest_path}: content_hash does not match the files")
    return problems


def _tokenizer_problems(root: Path, manifest: dict) -> list[str]:
    if manifest.get("kind") != "sample" or not manifest.get("tokenizer"):
        return [f"manifest of {manifest.get('name')!r} is not a sample manifest"]
    path = root / manifest["tokenizer"]
    if not path.is_file():
        return [f"{path}: tokenizer missing"]
    if datasets.sha256_file(path) != manifest.get("tokenizer_sha256"):
        return [f"{path}: tokenizer differs from the one the shards were made with"]
    return []


def _shard_problems(path: Path, entry: dict, vocab_size: int | None) -> list[str]:
    if not path.is_file():
        return [f"{path}: listed in the manifest but missing"]
    try:
        tokens = shards.validate_shard(path, vocab_size)
    except shards.ShardError as exc:
        return [str(exc)]
    if tokens != entry.get("tokens"):
        return [f"{path}: {tokens} tokens, the manifest says {entry.get('tokens')}"]
    if datasets.sha256_file(path) != entry.get("sha256"):
        return [f"{path}: sha256 differs from the manifest"]
    return []


# ----------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loop.data.sample_data", description=__doc__)
    parser.add_argument("--root", type=Path, help="cache root (default: the main checkout)")
    parser.add_argument("--force", action="store_true", help="rebuild even if valid")
    parser.add_argument("--check", action="store_true", help="only validate; exit 1 if not ok")
    parser.add_argument("--vocab", type=int, default=VOCAB_SIZE, choices=datasets.SAMPLE_VOCABS,
                        help="tokenizer pieces (default %(default)s): builds sample_sp<VOCAB>")
    args = parser.parse_args(argv)
    root = (args.root or datasets.cache_root()).resolve()
    name = datasets.sample_spec(args.vocab).name
    problems = validate_sample(root, args.vocab)
    if args.check or (not problems and not args.force):
        for line in problems:
            print(f"problem: {line}", file=sys.stderr)
        state = "valid" if not problems else "NOT valid"
        print(f"sample dataset {name} under {root / 'data'}: {state}")
        return 1 if problems else 0
    started = time.monotonic()
    print(f"building the sample dataset {name} from {stdlib_dir()} (about a minute)...",
          flush=True)
    try:
        manifest = build_sample(root, BuildOptions(vocab_size=args.vocab))
    except SampleDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"built {manifest['name']} in {time.monotonic() - started:.0f}s: "
        f"{manifest['train_tokens']:,} train tokens in {len(manifest['shards']) - 1} shards, "
        f"{manifest['val_tokens']:,} val tokens; content hash {manifest['content_hash'][:16]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
