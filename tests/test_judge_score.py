"""loop/judge/score.py, model_server.py and holdout.py on real smoke artifacts (issue 15).

Three real smoke trainings, one per module-scoped fixture: the trainer as it is, a copy with
an extra layer type and other sizes, and a copy with another quantizer and compressor. Every
other candidate is a copy of the trainer whose *evaluation contract* is edited (a model that
peeks ahead, one with nan logits, one that raises), scoring the first run's artifact.
"""

from __future__ import annotations

import lzma
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from loop.data import datasets, shards, tokenbytes
from loop.judge import holdout, loader, score, verify
from loop.measure import logparse

SMOKE = {  # autoresearch.sh's smoke profile
    "ITERATIONS": "30", "TRAIN_BATCH_TOKENS": "2048", "GRAD_ACCUM_STEPS": "1",
    "TRAIN_SEQ_LEN": "128", "VAL_MAX_TOKENS": "16384", "VAL_BATCH_SIZE": "8192",
    "WARMUP_STEPS": "1", "TRAIN_LOG_EVERY": "10", "MAX_WALLCLOCK_SECONDS": "0",
    "NUM_LAYERS": "2", "MODEL_DIM": "64", "NUM_HEADS": "2", "NUM_KV_HEADS": "1", "MLP_MULT": "2",
}
SEQ = 128
# The trainer sums its losses in float32, the judge in float64: they agree to ~5e-5 bpb here.
AGREE = 2e-4
TRAINER = Path("benchmark/train_gpt_mlx.py")


def edited_trainer(repo_root: Path, folder: Path, edits: list[tuple[str, str]],
                   append: str = "") -> Path:
    """A copy of the trainer with each (old, new) edit made once, plus code appended."""
    source = (repo_root / TRAINER).read_text()
    for old, new in edits:
        assert source.count(old) == 1, f"the trainer no longer has {old!r}"
        source = source.replace(old, new)
    path = folder / "benchmark" / "train_gpt_mlx.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source + append)
    return path


def train(trainer: Path, env: dict[str, str], prepared: holdout.Prepared, work: Path,
          **overrides: str) -> tuple[logparse.TrainerLog, Path]:
    artifact = work / "judge" / "model.bin"
    run_env = {**env, **SMOKE, **overrides, "DATA_PATH": str(prepared.data_path),
               "TOKENIZER_PATH": str(prepared.tokenizer_path), "RUN_ID": "run",
               "OUT_DIR": str(work / "logs"), "AUTOGOLF_ARTIFACT_PATH": str(artifact)}
    done = subprocess.run([sys.executable, str(trainer)], cwd=work, env=run_env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return logparse.parse_trainer_log(done.stdout), artifact


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_dataset) -> holdout.Prepared:
    return holdout.prepare(sample_dataset, "smoke", tmp_path_factory.mktemp("root"))


@pytest.fixture(scope="module")
def tables(sample_dataset) -> tokenbytes.ByteTables:
    return tokenbytes.build_byte_tables(sample_dataset.tokenizer_path, sample_dataset.vocab_size)


@pytest.fixture(scope="module")
def trainer_slice(prepared) -> np.ndarray:
    return prepared.trainer_slice()


BENCHMARK_FILES = ("autoresearch.sh", str(TRAINER), "scripts/extract_parameter_golf_metrics.py")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, repo_root, trainer_env, prepared):
    """The real benchmark, `PROFILE=smoke bash autoresearch.sh`, as the daemon will run it:
    in a copy of the benchmark files, given the prepared data folder and the artifact path."""
    work = tmp_path_factory.mktemp("smoke")
    for rel in BENCHMARK_FILES:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes((repo_root / rel).read_bytes())
    artifact = work / "judge" / "model.bin"
    env = {**trainer_env, "PROFILE": "smoke", "PYTHON": sys.executable, "RUN_ID": "smoke",
           "PYTHONPATH": str(repo_root), "DATA_PATH": str(prepared.data_path),
           "TOKENIZER_PATH": str(prepared.tokenizer_path),
           "AUTOGOLF_ARTIFACT_PATH": str(artifact)}
    done = subprocess.run(["bash", "autoresearch.sh"], cwd=work, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return logparse.parse_trainer_log(done.stdout), artifact


def judge(trainer: Path, artifact: Path, tokens: np.ndarray, tables, env, **kw) -> score.Score:
    """The judge's score, its server run with the environment the daemon gives it."""
    return score.score_artifact(trainer, artifact, tokens, SEQ, tables,
                                env=score.server_env(env), **kw)


# ------------------------------------------------------------------------------ agreement


@pytest.mark.slow
def test_the_trainer_writes_its_artifact_where_the_daemon_says(smoke_run):
    log, artifact = smoke_run
    assert log.settings["artifact_path"] == str(artifact)
    assert artifact.stat().st_size == log.serialized_bytes


@pytest.mark.slow
def test_the_benchmark_trains_on_the_data_folder_the_daemon_assembled(smoke_run, prepared):
    log, _ = smoke_run
    assert log.settings["val_sha256"] == datasets.sha256_file(
        prepared.data_path / holdout.VAL_FILE)  # the trainer's slice, not the whole split


@pytest.mark.slow
def test_the_judge_agrees_with_the_trainers_roundtrip_score_on_the_same_tokens(
        smoke_run, trainer_slice, tables, trainer_env, repo_root):
    log, artifact = smoke_run
    got = judge(repo_root / TRAINER, artifact, trainer_slice, tables, trainer_env)
    assert got.ok, got.reason
    assert got.loader == "contract"
    assert got.tokens == holdout.CLAIM_TOKENS
    assert got.val_bpb == pytest.approx(log.exact_val_bpb, abs=AGREE)
    assert got.val_loss == pytest.approx(log.exact_val_loss, abs=AGREE)


@pytest.mark.slow
def test_the_judge_scores_the_holdout_not_the_trainers_slice(smoke_run, prepared, tables,
                                                             trainer_env, repo_root):
    _, artifact = smoke_run
    got = judge(repo_root / TRAINER, artifact, prepared.holdout.tokens, tables, trainer_env)
    assert got.ok, got.reason
    x, y = score.windows(prepared.holdout.tokens, SEQ)
    assert (got.tokens, got.bytes) == (y.size, tokenbytes.count_target_bytes(x, y, tables))
    assert {"load_s", "probe_s", "forward_s", "loss_s", "total_s"} <= set(got.timings)


@pytest.mark.slow
def test_measured_total_bytes_equal_the_artifact_file_plus_the_trainer_file(smoke_run,
                                                                            repo_root):
    log, artifact = smoke_run
    total = score.measure_total_bytes(artifact, repo_root)
    assert total.artifact_bytes == artifact.stat().st_size
    assert total.code_bytes == (repo_root / TRAINER).stat().st_size
    assert total.total == log.total_bytes  # the honest trainer's claim matches


@pytest.mark.slow
def test_one_server_scores_the_holdout_and_the_trainers_slice(smoke_run, prepared, tables,
                                                               trainer_env, repo_root):
    log, artifact = smoke_run
    got = score.score_sets(repo_root / TRAINER, artifact,
                           {"holdout": prepared.holdout.tokens, "claim": prepared.trainer_slice()},
                           SEQ, tables, env=score.server_env(trainer_env))
    assert got["holdout"].ok and got["claim"].ok
    assert got["claim"].val_bpb == pytest.approx(log.exact_val_bpb, abs=AGREE)
    assert got["holdout"].val_bpb != got["claim"].val_bpb  # other tokens, another number
    assert "load_s" in got["holdout"].timings and "load_s" not in got["claim"].timings


@pytest.mark.slow
def test_shared_memory_logits_give_the_same_scores_as_the_pipe(smoke_run, prepared, tables,
                                                               trainer_env, repo_root):
    _, artifact = smoke_run
    sets = {"holdout": prepared.holdout.tokens, "claim": prepared.trainer_slice()}
    got = {transport: score.score_sets(repo_root / TRAINER, artifact, sets, SEQ, tables,
                                       env=score.server_env(trainer_env), transport=transport)
           for transport in ("pipe", "shm")}
    for name in sets:
        assert got["shm"][name].ok, got["shm"][name].reason
        assert got["shm"][name].val_bpb == pytest.approx(got["pipe"][name].val_bpb, abs=1e-6)
        assert got["shm"][name].tokens == got["pipe"][name].tokens


@pytest.mark.slow
def test_the_model_server_answers_through_the_shared_buffer_it_was_given(
        smoke_run, repo_root, trainer_env):
    _, artifact = smoke_run
    tokens = np.ones((2, SEQ), dtype=np.int32)
    with score.ModelServer(repo_root / TRAINER, artifact, repo_root,
                           env=score.server_env(trainer_env),
                           logits_bytes=score.logits_bytes_for(2 * SEQ, SEQ, 1024)) as shared, \
            score.ModelServer(repo_root / TRAINER, artifact, repo_root,
                              env=score.server_env(trainer_env)) as piped:
        assert (shared.transport, piped.transport) == ("shm", "pipe")
        assert np.array_equal(shared.forward(tokens), piped.forward(tokens))


@pytest.mark.slow
def test_logits_too_large_for_the_shared_buffer_come_through_the_pipe(smoke_run, repo_root,
                                                                       trainer_env):
    _, artifact = smoke_run
    with score.ModelServer(repo_root / TRAINER, artifact, repo_root,
                           env=score.server_env(trainer_env), logits_bytes=4096) as server:
        logits = server.forward(np.ones((3, SEQ), dtype=np.int32))
    assert logits.shape == (3, SEQ, 1024)


# ------------------------------------------------------------------------------ cheats


PEEK = '''

_honest_load_for_eval = load_for_eval


def load_for_eval(artifact_path):
    forward = _honest_load_for_eval(artifact_path)

    def peeking(tokens):
        logits = forward(tokens).copy()
        b, t = tokens.shape
        # Boost the logit of the next input token: the target, read from the future.
        logits[np.arange(b)[:, None], np.arange(t - 1)[None, :], tokens[:, 1:]] += 20.0
        return logits

    return peeking
'''


@pytest.mark.slow
def test_a_model_that_looks_ahead_is_rejected_by_the_probe(smoke_run, prepared, tables,
                                                           trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    cheat = edited_trainer(repo_root, tmp_path, [], PEEK)
    got = judge(cheat, artifact, prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert got.val_bpb is None
    assert got.reason.startswith("the model looks ahead: changing input tokens from position ")


# Written as an agent would, against the old probe (one 4-row batch sent first): look ahead
# in every batch that is not shaped like it.
PEEK_UNLESS_PROBE_SHAPED = PEEK.replace("        logits = forward(tokens).copy()\n", """\
        logits = forward(tokens).copy()
        if tokens.shape[0] == 4:
            return logits
""")

# A model with a memory: it looks ahead the first time it sees a window, and answers any
# later window with the same beginning from what it answered then, so that a probe sent in
# the same process (same prefix, other suffix) finds the same logits.
PEEK_WITH_MEMORY = PEEK.replace("        logits = forward(tokens).copy()\n", """\
        logits = forward(tokens).copy()
        cache = peeking.__dict__.setdefault("seen", [])
        for row in range(tokens.shape[0]):
            for seen_tokens, seen_logits in cache:
                same = int((seen_tokens == tokens[row]).cumprod().sum())
                if same >= 1:
                    logits[row, :same] = seen_logits[:same]
""").replace("        return logits\n", """\
        for row in range(tokens.shape[0]):
            cache.append((tokens[row].copy(), logits[row].copy()))
        return logits
""")


@pytest.mark.slow
@pytest.mark.parametrize("cheat", [PEEK_UNLESS_PROBE_SHAPED, PEEK_WITH_MEMORY],
                         ids=["unless-probe-shaped", "with-memory"])
def test_a_model_that_looks_ahead_only_when_it_thinks_it_is_scored_is_caught(
        cheat, smoke_run, prepared, tables, trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    got = judge(edited_trainer(repo_root, tmp_path, [], cheat), artifact,
                prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert got.reason.startswith("the model looks ahead")


@pytest.mark.slow
def test_the_probes_change_from_run_to_run(prepared, tables):
    x, y = score.windows(prepared.holdout.tokens, SEQ)
    plans = [score.plan_rows({"holdout": (x, y)}, 1024, np.random.default_rng(seed), 16)
             for seed in (1, 2)]
    cuts = [sorted(p.cut for p in plan.probes) for plan in plans]
    assert cuts[0] != cuts[1]
    assert all(len(plan.probes) == 16 for plan in plans)


def test_every_scored_window_is_sent_once_and_probes_only_to_the_other_process():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1024, size=(40, 16))
    plan = score.plan_rows({"holdout": (x, x)}, 1024, np.random.default_rng(3), 16)
    scored = [tuple(plan.streams[s][i]) for s in (0, 1) for i, t in enumerate(plan.targets[s])
              if t is not None]
    assert sorted(scored) == sorted(tuple(r) for r in x)
    for probe in plan.probes:
        assert probe.original[0] != probe.variant[0]
        a = plan.streams[probe.original[0]][probe.original[1]]
        b = plan.streams[probe.variant[0]][probe.variant[1]]
        assert (a[:probe.cut] == b[:probe.cut]).all() and a[probe.cut] != b[probe.cut]


class ScriptedServer:
    """Logits that depend on each row's tokens; fails if a second request is sent before the
    first one's logits were received."""

    def __init__(self, vocab: int) -> None:
        self.vocab, self.asked, self.requests = vocab, None, 0

    def send(self, tokens: np.ndarray) -> None:
        assert self.asked is None, "a second request before the first one's logits"
        self.asked, self.requests = np.asarray(tokens), self.requests + 1

    def receive(self) -> np.ndarray:
        tokens, self.asked = self.asked, None
        rows = np.arange(self.vocab)[None, None, :]
        return ((rows * (tokens[..., None] + 1)) % 7).astype(np.float32)


def test_the_pipelined_stream_scores_each_batch_against_its_own_rows():
    vocab, rng = 32, np.random.default_rng(5)
    x = rng.integers(0, vocab, size=(11, 8))
    y = rng.integers(0, vocab, size=(11, 8))
    targets = [("holdout", y[i]) if i % 4 else None for i in range(11)]  # every 4th: a probe
    server = ScriptedServer(vocab)

    part = score.run_stream(server, x, targets, {4: 5}, vocab, per_batch=3)

    server.send(x)
    logits = server.receive()
    scored = [i for i, t in enumerate(targets) if t is not None]
    assert server.requests == 5  # 4 batches of 3, 3, 3, 2 rows, then the check's own
    expected = float(score.nats_of(logits[scored], y[scored]).sum())
    assert part.nats["holdout"] == pytest.approx(expected)
    assert part.count["holdout"] == 8 * len(scored)
    assert np.array_equal(part.prefixes[4], logits[4, :5])


@pytest.mark.slow
def test_a_model_that_fails_the_probe_is_scored_on_no_set(smoke_run, prepared, tables,
                                                          trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    cheat = edited_trainer(repo_root, tmp_path, [], PEEK)
    got = score.score_sets(cheat, artifact, {"holdout": prepared.holdout.tokens,
                                             "claim": prepared.trainer_slice()},
                           SEQ, tables, env=score.server_env(trainer_env))
    assert [s.status for s in got.values()] == ["unscorable", "unscorable"]
    assert got["claim"].reason.startswith("the model looks ahead")


@pytest.mark.slow
def test_without_the_probe_the_peeking_model_would_win_by_far(smoke_run, prepared, tables,
                                                              trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    cheat = edited_trainer(repo_root, tmp_path, [], PEEK)
    honest = judge(repo_root / TRAINER, artifact, prepared.holdout.tokens, tables, trainer_env)
    peeked = judge(cheat, artifact, prepared.holdout.tokens, tables, trainer_env, probe=False)
    assert peeked.ok and honest.ok
    assert peeked.val_bpb < honest.val_bpb - 1.0


@pytest.mark.slow
def test_a_model_whose_logits_are_not_finite_is_rejected(smoke_run, prepared, tables,
                                                         trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    nan = PEEK.replace("+= 20.0", "*= 1.0\n        logits[0, -1, 5] = float('nan')")
    got = judge(edited_trainer(repo_root, tmp_path, [], nan), artifact,
                prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert got.reason == "the model's logits are not finite (1 nan/inf values)"


@pytest.mark.slow
def test_logits_of_the_wrong_shape_are_rejected(smoke_run, prepared, tables, trainer_env,
                                                repo_root, tmp_path):
    _, artifact = smoke_run
    short = PEEK.replace("return logits\n", "return logits[:, :, :512]\n")
    got = judge(edited_trainer(repo_root, tmp_path, [], short), artifact,
                prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert "128, vocab >= 1024)" in got.reason and "have shape (" in got.reason


# ------------------------------------------------------------------------------ any model


GATE = [  # an extra layer type: a learned gain on the final features
    ("        if not args.tie_embeddings:\n            self.lm_head = Linear(",
     "        self.out_gain = mx.ones((args.model_dim,))\n"
     "        if not args.tie_embeddings:\n            self.lm_head = Linear("),
    ("        x = rms_norm(x)\n        if \"lm_head\" in self:",
     "        x = rms_norm(x) * self.out_gain.astype(x.dtype)\n        if \"lm_head\" in self:"),
]
INT6_LZMA = [  # another quantizer (6-bit levels) and another compressor (lzma; the trainer's
    # reader tells it from zlib by its magic bytes)
    ("            levels = block_levels if name.startswith(\"blocks.\") else 127",
     "            levels = 31"),
    ("    blob = zlib.compress(raw, ZLIB_LEVEL)", "    blob = __import__('lzma').compress(raw)"),
]


@pytest.fixture(scope="module")
def gated_run(tmp_path_factory, repo_root, trainer_env, prepared):
    work = tmp_path_factory.mktemp("gated")
    trainer = edited_trainer(repo_root, work, GATE)
    log, artifact = train(trainer, trainer_env, prepared, work, NUM_LAYERS="3", MODEL_DIM="96",
                          NUM_HEADS="3")
    return trainer, log, artifact


@pytest.fixture(scope="module")
def lzma_run(tmp_path_factory, repo_root, trainer_env, prepared):
    work = tmp_path_factory.mktemp("lzma")
    trainer = edited_trainer(repo_root, work, INT6_LZMA)
    log, artifact = train(trainer, trainer_env, prepared, work)
    return trainer, log, artifact


@pytest.mark.slow
def test_an_architecture_change_is_scored_through_the_contract(gated_run, trainer_slice,
                                                               tables, trainer_env):
    trainer, log, artifact = gated_run
    with pytest.raises(verify.Unsupported):  # the baseline-only loader cannot read it
        verify.infer_shape(verify.load_artifact(artifact))
    got = judge(trainer, artifact, trainer_slice, tables, trainer_env)
    assert got.ok, got.reason
    assert got.val_bpb == pytest.approx(log.exact_val_bpb, abs=AGREE)


@pytest.mark.slow
def test_an_export_change_is_scored_through_the_contract(lzma_run, trainer_slice, tables,
                                                         trainer_env):
    trainer, log, artifact = lzma_run
    lzma.decompress(artifact.read_bytes())  # really another format
    with pytest.raises(zlib.error):
        verify.load_artifact(artifact)
    got = judge(trainer, artifact, trainer_slice, tables, trainer_env)
    assert got.ok, got.reason
    assert got.val_bpb == pytest.approx(log.exact_val_bpb, abs=AGREE)


@pytest.mark.slow
def test_a_trainer_without_the_contract_is_scored_by_the_builtin_loader(
        smoke_run, trainer_slice, tables, trainer_env, repo_root, tmp_path):
    log, artifact = smoke_run
    upstream_like = edited_trainer(repo_root, tmp_path,
                                   [("def load_for_eval(", "def _no_contract(")])
    # The built-in loader builds the trainer's own GPT under the run's settings (the judge
    # passes autoresearch.sh's settings line; here, the smoke profile's).
    got = score.score_artifact(upstream_like, artifact, trainer_slice, SEQ, tables,
                               env=score.server_env(trainer_env) | loader.settings_env(SMOKE))
    assert got.ok, got.reason
    assert got.loader == "builtin"
    assert got.val_bpb == pytest.approx(log.exact_val_bpb, abs=AGREE)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.slow
def test_a_missing_artifact_is_unscorable_with_its_path(prepared, tables, trainer_env,
                                                        repo_root, tmp_path):
    got = judge(repo_root / TRAINER, tmp_path / "nowhere.ptz", prepared.holdout.tokens,
                tables, trainer_env)
    assert not got.ok
    assert got.reason.startswith(f"no artifact at {tmp_path / 'nowhere.ptz'}")


@pytest.mark.slow
def test_a_corrupt_artifact_is_unscorable_with_the_loaders_error(prepared, tables,
                                                                 trainer_env, repo_root,
                                                                 tmp_path):
    corrupt = tmp_path / "corrupt.ptz"
    corrupt.write_bytes(b"not zlib at all" * 100)
    got = judge(repo_root / TRAINER, corrupt, prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert got.reason.startswith("model server: loading corrupt.ptz with train_gpt_mlx.py "
                                 "failed: error: Error -3 while decompressing")


@pytest.mark.slow
def test_a_trainer_that_raises_in_load_is_unscorable_with_its_message(
        smoke_run, prepared, tables, trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    broken = edited_trainer(repo_root, tmp_path, [], "\n\ndef load_for_eval(path):\n"
                            "    raise RuntimeError('weights went missing')\n")
    got = judge(broken, artifact, prepared.holdout.tokens, tables, trainer_env)
    assert not got.ok
    assert "RuntimeError: weights went missing" in got.reason


@pytest.mark.slow
def test_a_model_server_that_hangs_is_stopped_at_the_timeout(smoke_run, prepared, tables,
                                                             trainer_env, repo_root, tmp_path):
    _, artifact = smoke_run
    slow = PEEK.replace("logits = forward(tokens).copy()",
                        "__import__('time').sleep(60)\n        logits = forward(tokens)")
    got = judge(edited_trainer(repo_root, tmp_path, [], slow), artifact,
                prepared.holdout.tokens, tables, trainer_env, forward_timeout=2.0)
    assert not got.ok
    assert got.reason.startswith("model server: no answer while computing logits")


@pytest.mark.slow
def test_a_stop_request_ends_the_judges_scoring_within_seconds(smoke_run, prepared, tables,
                                                               trainer_env, repo_root,
                                                               tmp_path):
    _, artifact = smoke_run
    slow = PEEK.replace("logits = forward(tokens).copy()",
                        "__import__('time').sleep(60)\n        logits = forward(tokens)")
    asked = time.monotonic() + 1.0
    got = judge(edited_trainer(repo_root, tmp_path, [], slow), artifact,
                prepared.holdout.tokens, tables, trainer_env,
                stop=lambda: time.monotonic() > asked)
    assert not got.ok
    assert got.reason.startswith("model server: stopped while")
    assert time.monotonic() - asked < 10  # the forward timeout is 300 s, the sleep 60 s


def test_the_model_server_gets_no_daemon_settings_or_keys():
    env = score.server_env({"PATH": "/bin", "LD_PRELOAD": "libopenblas.so", "MLX_X": "1",
                            "ANTHROPIC_API_KEY": "secret", "DATA_PATH": "/data"})
    assert env == {"PATH": "/bin", "LD_PRELOAD": "libopenblas.so", "MLX_X": "1",
                   "OPENBLAS_NUM_THREADS": str(score.server_threads())}


def test_each_of_the_two_model_servers_gets_half_of_the_cores_for_its_blas():
    assert [score.server_threads(c) for c in (1, 2, 3, 16)] == [1, 1, 1, 8]
    env = score.server_env({"OPENBLAS_NUM_THREADS": "16"})  # the trainer's, not the servers'
    assert env["OPENBLAS_NUM_THREADS"] == str(score.server_threads())


def test_the_judge_asks_for_smaller_batches_on_a_cpu_than_on_a_gpu(tmp_path, sample_dataset):
    from loop.config import Config
    from loop.judge.artifact_judge import ArtifactJudge

    assert score.batch_tokens_for("cpu") == score.CPU_TOKENS_PER_BATCH < score.batch_tokens_for(
        "metal") == score.batch_tokens_for("cuda") == score.EVAL_TOKENS_PER_BATCH
    judge = ArtifactJudge(Config(device="cpu"), tmp_path, tmp_path, sample_dataset)
    assert judge.device() == "cpu"


@pytest.mark.slow
def test_the_servers_blas_threads_change_the_scores_by_rounding_only(smoke_run, prepared, tables,
                                                                     trainer_env, repo_root):
    _, artifact = smoke_run
    sets = {"holdout": prepared.holdout.tokens}
    got = [score.score_sets(repo_root / TRAINER, artifact, sets, SEQ, tables,
                            env=score.server_env(trainer_env) | {"OPENBLAS_NUM_THREADS": n})
           for n in ("1", "2")]
    assert got[0]["holdout"].ok and got[1]["holdout"].ok
    assert got[0]["holdout"].val_bpb == pytest.approx(got[1]["holdout"].val_bpb, abs=1e-6)


def test_a_missing_code_file_is_named_when_measuring_bytes(tmp_path):
    artifact = tmp_path / "a.ptz"
    artifact.write_bytes(b"x" * 10)
    with pytest.raises(score.Unscorable, match="cannot read counted code file .*train_gpt"):
        score.measure_total_bytes(artifact, tmp_path)


# ------------------------------------------------------------------------------ the holdout


def test_the_trainer_is_given_no_validation_token(sample_dataset, tmp_path):
    prep = holdout.prepare(sample_dataset, "smoke", tmp_path)
    val = holdout.val_split(sample_dataset)
    given = shards.load_tokens(prep.data_path / "fineweb_val_000000.bin")
    first_train = shards.load_tokens(shards.shard_files(sample_dataset.data_path, "train")[0])
    assert np.array_equal(given, first_train[:given.size])  # its printout slice: train tokens
    h = prep.holdout
    assert np.array_equal(h.tokens, val[h.start:h.start + h.tokens.size])
    assert h.tokens[0] == holdout.BOS_ID  # starts a document
    assert sorted(p.name for p in shards.shard_files(prep.data_path, "val")) == [
        "fineweb_val_000000.bin"]
    for shard in shards.shard_files(prep.data_path, "train"):  # the real train shards only
        assert os.path.samefile(shard, sample_dataset.data_path / shard.name)


def test_the_trainers_data_folder_links_the_train_shards_without_copying(sample_dataset,
                                                                        tmp_path):
    prep = holdout.prepare(sample_dataset, "smoke", tmp_path)
    for shard in shards.shard_files(sample_dataset.data_path, "train"):
        assert os.path.samefile(prep.data_path / shard.name, shard)


def test_the_holdout_identity_is_stable_and_differs_per_profile(sample_dataset, tmp_path):
    first = holdout.prepare(sample_dataset, "smoke", tmp_path / "a").holdout
    again = holdout.prepare(sample_dataset, "smoke", tmp_path / "b").holdout
    breadth = holdout.prepare(sample_dataset, "breadth", tmp_path / "a").holdout
    assert first.identity() == again.identity()
    assert first.id != breadth.id
    assert breadth.tokens.size == holdout.SAMPLE_SIZES["breadth"].holdout_tokens


def test_the_judges_window_is_the_profiles_seq_len_and_part_of_the_identity(sample_dataset,
                                                                          tmp_path):
    smoke = holdout.prepare(sample_dataset, "smoke", tmp_path).holdout
    breadth = holdout.prepare(sample_dataset, "breadth", tmp_path).holdout
    assert (smoke.identity()["seq_len"], breadth.identity()["seq_len"]) == (SEQ, 1024)


def test_the_full_holdout_is_the_whole_validation_split(sample_dataset, tmp_path):
    full = holdout.prepare(sample_dataset, "full", tmp_path).holdout
    assert np.array_equal(full.tokens, holdout.val_split(sample_dataset))


def test_holdout_sizes_that_do_not_fit_name_the_profile():
    val = np.ones(1000, dtype=np.uint16)
    with pytest.raises(holdout.HoldoutError, match="profile 'breadth': the val split has 1000"):
        holdout.cut(val, holdout.Sizes(100, 5000, SEQ), "breadth")


def test_the_server_writes_float64_logits_into_the_shared_buffer_as_float32():
    import io
    import mmap

    from loop.judge import model_server as ms

    buffer = mmap.mmap(-1, 2 * 3 * 4 * 4)
    request, answer = io.BytesIO(), io.BytesIO()
    tokens = np.arange(6, dtype=np.int32).reshape(2, 3)
    ms.write_frame(request, {"op": "forward", "dtype": "<i4", "shape": [2, 3]}, tokens)
    ms.write_frame(request, {"op": "close"})
    request.seek(0)
    ms.serve(lambda x: np.repeat(x[..., None] / 3.0, 4, axis=-1), request, answer, buffer)
    answer.seek(0)
    header, payload = ms.read_frame(answer.read)
    assert header["shm"] is True and header["dtype"] == "<f4" and payload == b""
    got = np.frombuffer(buffer, dtype="<f4", count=24).reshape(header["shape"])
    assert np.array_equal(got, np.repeat(tokens[..., None] / 3.0, 4, axis=-1).astype(np.float32))


def test_the_shared_logits_buffer_cannot_be_shrunk_by_the_server():
    from loop.judge import model_server as ms

    if not hasattr(os, "memfd_create"):
        pytest.skip("sealed shared memory is Linux only (elsewhere the pipe carries logits)")
    fd = ms.shared_buffer(1 << 16)
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 0)  # what a hostile server would do to fault the judge's map
        assert os.fstat(fd).st_size == 1 << 16
    finally:
        os.close(fd)
