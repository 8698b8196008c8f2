"""loop/measure/seal.py: the sandbox the judged code runs in, and its proof (issue 24).

The bubblewrap tests run real sandboxes (skipped where bwrap is missing; CI installs it);
the macOS profiles are checked as text (no Mac here).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.measure import runner, seal

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="needs bubblewrap (scripts/setup.sh installs it)")


@pytest.fixture
def places(tmp_path):
    """A worktree, its outputs, a data folder, and a 'dataset' with a secret val shard."""
    tree, outputs, data, dataset = (tmp_path / n for n in ("tree", "out", "data", "dataset"))
    for folder in (tree, outputs, data, dataset):
        folder.mkdir()
    (data / "fineweb_train_000000.bin").write_bytes(b"train")
    (dataset / "fineweb_val_000000.bin").write_bytes(b"the holdout")
    return tree, outputs, data, dataset


def sealed_run(places, code: str) -> subprocess.CompletedProcess:
    tree, outputs, data, _ = places
    argv, env = seal.choose(True).benchmark([sys.executable, "-c", code], worktree=tree,
                                            outputs=outputs, readable=[data],
                                            env=seal.minimal_env({"PATH": "/usr/bin:/bin"}, {}))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


# ------------------------------------------------------------------------------ the benchmark


@needs_bwrap
def test_a_sealed_benchmark_cannot_read_a_file_it_was_not_given(places):
    secret = places[3] / "fineweb_val_000000.bin"
    done = sealed_run(places, f"open({str(secret)!r}).read()")
    assert done.returncode != 0 and "No such file or directory" in done.stderr


@needs_bwrap
def test_a_sealed_benchmark_reads_its_data_folder(places):
    data = places[2]
    done = sealed_run(places, f"print(open({str(data / 'fineweb_train_000000.bin')!r}).read())")
    assert done.returncode == 0 and done.stdout.strip() == "train"


@needs_bwrap
def test_a_sealed_benchmark_writes_its_logs_into_the_outputs_folder_only(places):
    tree, outputs = places[0], places[1]
    done = sealed_run(places, "open('logs/run.log', 'w').write('hi')\n"
                              "try:\n    open('trainer.py', 'w')\nexcept OSError as e:\n"
                              "    print(e)")
    assert done.returncode == 0, done.stderr
    assert (outputs / "run.log").read_text() == "hi"
    assert "Read-only file system" in done.stdout and not (tree / "trainer.py").exists()


@needs_bwrap
def test_what_a_sealed_benchmark_writes_to_tmp_dies_with_it(places):
    sealed_run(places, "open('/tmp/stash-autogolf-seal-test', 'w').write('weights')")
    assert not Path("/tmp/stash-autogolf-seal-test").exists()


@needs_bwrap
def test_a_sealed_benchmark_cannot_connect_out(places):
    done = sealed_run(places, "import socket\ntry:\n"
                              "    socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
                              "    print('connected')\nexcept OSError as e:\n    print('refused')")
    assert done.stdout.strip() == "refused"


def test_the_environment_of_a_sealed_run_names_no_folder_of_the_daemon():
    env = seal.minimal_env({"PATH": "/usr/bin", "AUTOGOLF_CACHE_ROOT": "/work/repo",
                            "HOME": "/root", "ANTHROPIC_API_KEY": "secret",
                            "OPENBLAS_NUM_THREADS": "2"}, {"PROFILE": "smoke"})
    assert env == {"PATH": "/usr/bin", "OPENBLAS_NUM_THREADS": "2", "PROFILE": "smoke"}


@needs_bwrap
def test_the_kernel_counts_the_cpu_time_of_every_process_of_a_sealed_run(places, tmp_path):
    tree, outputs, data, _ = places
    burn = f"{sys.executable} -c 'x = 0\nfor i in range(3_000_000):\n    x += i\n'"
    # The same work done by the command itself, and done only by an orphan it leaves running
    # (waited for by file). Uncounted, the orphan's run would cost what the waiting loop does
    # (a few hundredths of a second), far under half of the work, whatever the machine's load.
    scripts = {"alone": f"{burn}\n",
               "orphan": f"( setsid sh -c \"{burn}; touch /tmp/done\" & )\n"
                         "while [ ! -f /tmp/done ]; do sleep 0.05; done\n"}
    spent = {}
    for name, text in scripts.items():
        script = tmp_path / f"{name}.sh"
        script.write_text(text)
        argv, env = seal.choose(True).benchmark(
            ["/bin/sh", str(script)], worktree=tree, outputs=outputs, readable=[script],
            env=seal.minimal_env({"PATH": "/usr/bin:/bin"}, {}))
        result = runner.run_command(argv, cwd=tree, env=env, timeout_s=60,
                                    log_path=tmp_path / f"{name}.log")
        assert result.exit_code == 0
        spent[name] = result.cpu_s
    assert spent["alone"] > 0.05  # counted at all (bubblewrap's own init reported ~0)
    assert spent["orphan"] > 0.5 * spent["alone"]  # the orphan's work is counted too


# ------------------------------------------------------------------------------ the proof


@needs_bwrap
def test_the_probe_finds_no_breach_in_a_proper_seal(places, tmp_path):
    tree, _, data, dataset = places
    secrets = seal.Secrets((dataset / "fineweb_val_000000.bin",), (dataset, tmp_path))
    assert seal.prove(seal.choose(True), worktree=tree, data=[data], secrets=secrets) == []


@needs_bwrap
def test_the_probe_reports_a_data_folder_that_holds_the_validation_shard(places, tmp_path):
    tree, _, _, dataset = places
    secrets = seal.Secrets((dataset / "fineweb_val_000000.bin",), (tmp_path,))
    breaches = seal.prove(seal.choose(True), worktree=tree, data=[dataset], secrets=secrets)
    assert breaches == [f"the benchmark seal: read {dataset / 'fineweb_val_000000.bin'}"]


def test_a_missing_bubblewrap_is_an_error_naming_the_install_and_the_opt_out():
    with pytest.raises(seal.SealError) as caught:
        seal.choose(True, platform="linux", which=lambda _: None)
    assert "apt-get install bubblewrap" in str(caught.value)
    assert "judge: {sealed: false}" in str(caught.value)


def test_a_sandbox_tool_that_fails_to_start_is_an_error_with_the_opt_out(places, tmp_path):
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\n"
                      "exit 1\n")
    broken.chmod(0o755)
    secrets = seal.Secrets((), ())
    with pytest.raises(seal.SealError) as caught:
        seal.prove(seal.Seal("bwrap", str(broken)), worktree=places[0], data=[places[2]],
                   secrets=secrets)
    message = str(caught.value)
    assert "failed to start its probe" in message and "user namespaces" in message
    assert "judge: {sealed: false}" in message


def test_opting_out_is_unsealed_and_says_so():
    unsealed = seal.choose(False)
    assert not unsealed.sealed and "UNSEALED" in unsealed.describe()


# ------------------------------------------------------------------------------ macOS


def test_the_macos_benchmark_profile_denies_the_network_and_hidden_folders(tmp_path):
    hidden, tree, out, tmp = (tmp_path / n for n in ("data", "tree", "out", "tmp"))
    profile = seal.sbpl_benchmark(tree, out, tmp, [tmp_path / "judge-data"], [hidden])
    assert "(deny network*)" in profile
    denied = profile[profile.index("(deny file-read*"):profile.index("(allow file-read*")]
    assert f'(subpath "{hidden.resolve()}")' in denied
    writes = profile[profile.index("(allow file-write*"):]
    assert f'(subpath "{out.resolve()}")' in writes and str(tree.resolve()) not in writes


def test_the_macos_server_profile_writes_nothing(tmp_path):
    profile = seal.sbpl_server([tmp_path / "model.ptz"], [tmp_path / "data"])
    assert '(allow file-write* (literal "/dev/null"))' in profile
    assert "(deny file-write*)" in profile and "(deny network*)" in profile


def test_a_path_with_a_control_character_cannot_go_into_a_profile(tmp_path):
    with pytest.raises(seal.SealError):
        seal.sbpl_server([tmp_path / "a\nb"], [tmp_path / "data"])


def test_a_sealed_run_that_reached_for_a_hidden_path_is_told_what_it_can_see(tmp_path):
    from loop.judge.validity import assess
    from loop.measure.logparse import parse_trainer_log
    from loop.measure.pipeline import Run

    log = tmp_path / "bench.log"
    log.write_text("FileNotFoundError: [Errno 2] No such file or directory: '/data/val.bin'\n")
    run = Run(exit_code=1, timed_out=False, wall_s=1.0, log_path=log, metrics={},
              log=parse_trainer_log(log.read_text()), trainer_bytes=None,
              trainer_missing=False, sealed=True)
    reason = assess(run, 16_000_000).verdict.reason
    assert "the run is sealed" in reason and "$DATA_PATH" in reason
