"""`autogolf doctor`: one line per fact, a fix for every problem, non-zero exit on a blocker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loop.data import shards
from loop.ui import doctor
from loop.ui.doctor import FAIL, OK, WARN


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   cwd=cwd, check=True, capture_output=True)


@pytest.fixture()
def root_with_sample(tmp_path, sample_dataset) -> Path:
    """A cache root holding a copy of the built sample (so tests may damage it)."""
    source = Path(sample_dataset.data_path).parents[2]
    for rel in ("data/datasets/sample_sp1024", "data/tokenizers"):
        shutil.copytree(source / rel, tmp_path / rel)
    return tmp_path


def by_name(checks, name):
    return next(c for c in checks if c.name == name)


def test_missing_mlx_is_a_blocker_with_the_setup_fix(monkeypatch):
    def broken():
        raise ImportError("No module named 'mlx'")

    monkeypatch.setattr(doctor, "_import_mlx", broken)
    check = doctor.check_mlx()[0]
    assert check.status == FAIL
    assert "No module named 'mlx'" in check.detail
    assert "scripts/setup.sh" in check.fix


def test_mlx_line_names_version_and_default_device():
    check = doctor.check_mlx()[0]
    assert check.status in (OK, WARN)
    assert "default device Device(" in check.detail


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS preload is Linux")
def test_reference_blas_on_linux_is_a_warning_with_the_apt_fix(monkeypatch):
    import loop.platform

    monkeypatch.setattr(loop.platform, "openblas_path", lambda: None)
    monkeypatch.setattr(doctor, "openblas_path", lambda: None)
    check = doctor.check_blas()[0]
    assert check.status == WARN
    assert "libopenblas0-pthread" in check.fix


def test_missing_configured_dataset_is_a_blocker_with_the_bootstrap_fix(tmp_path):
    check = by_name(doctor.check_datasets(tmp_path), "data:sample")
    assert check.status == FAIL
    assert check.fix == "bash scripts/bootstrap-parameter-golf.sh --sample"


def test_missing_optional_dataset_is_only_noted_with_where_it_was_looked_for(tmp_path):
    check = by_name(doctor.check_datasets(tmp_path), "data:fineweb")
    looked = tmp_path.resolve() / ".upstream/parameter-golf/data/datasets/fineweb10B_sp1024"
    assert (check.status, check.detail) == (OK, f"not found (optional; looked for {looked})")


def test_a_configured_folder_anywhere_on_disk_is_checked_where_it_is(root_with_sample,
                                                                      tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("data")
    fake_real_dataset(elsewhere, root_with_sample, [1, 5, 1023])
    folder = elsewhere / ".upstream/parameter-golf/data/datasets/fineweb10B_sp1024"
    (root_with_sample / "autogolf.yaml").write_text(f"dataset: {{path: {folder}}}\n")
    check = by_name(doctor.check_datasets(root_with_sample), f"data:{folder}")
    assert check.status == OK
    assert f"in {folder}" in check.detail and "fineweb_1024_bpe.model" in check.detail
    assert by_name(doctor.check_datasets(root_with_sample), "data:sample").detail.count(
        "(optional)") == 1


def test_a_configured_folder_that_is_missing_is_a_blocker_naming_the_path(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("dataset: {path: /nowhere/fineweb10B_sp1024}\n")
    check = by_name(doctor.check_datasets(tmp_path), "data:/nowhere/fineweb10B_sp1024")
    assert check.status == FAIL
    assert "no folder /nowhere/fineweb10B_sp1024" in check.detail
    assert "dataset: {path:" in check.fix


def test_present_sample_reports_its_id_and_token_counts(root_with_sample):
    check = by_name(doctor.check_datasets(root_with_sample), "data:sample")
    assert check.status == OK
    assert check.detail.startswith("sample_sp1024:")
    assert "train shards /" in check.detail and "tokens" in check.detail


def test_tokenizer_that_does_not_match_the_sample_is_a_blocker(root_with_sample):
    manifest_path = root_with_sample / "data/datasets/sample_sp1024/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tokenizer_sha256"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    check = by_name(doctor.check_datasets(root_with_sample), "data:sample")
    assert check.status == FAIL
    assert "tokenizer differs" in check.detail
    assert "--sample --force" in check.fix


def fake_real_dataset(root: Path, sample_root: Path, val_tokens: list[int]) -> None:
    folder = root / ".upstream/parameter-golf/data/datasets/fineweb10B_sp1024"
    folder.mkdir(parents=True)
    shards.write_shard(folder / "fineweb_train_000000.bin", [1, 5, 6])
    shards.write_shard(folder / "fineweb_val_000000.bin", val_tokens)
    tokenizer = root / ".upstream/parameter-golf/data/tokenizers/fineweb_1024_bpe.model"
    tokenizer.parent.mkdir(parents=True)
    shutil.copy(sample_root / "data/tokenizers/sample_1024_bpe.model", tokenizer)


def test_real_shard_ids_beyond_the_vocab_are_a_blocker_when_configured(root_with_sample):
    fake_real_dataset(root_with_sample, root_with_sample, [1, 5, 2000])
    (root_with_sample / "autogolf.yaml").write_text("dataset: fineweb\n")
    check = by_name(doctor.check_datasets(root_with_sample), "data:fineweb")
    assert check.status == FAIL
    assert "token id 2000" in check.detail and "fineweb_val_000000.bin" in check.detail


def test_matching_real_dataset_is_ok(root_with_sample):
    fake_real_dataset(root_with_sample, root_with_sample, [1, 5, 1023])
    check = by_name(doctor.check_datasets(root_with_sample), "data:fineweb")
    assert check.status == OK
    assert "(optional): 1 train shards / 3 tokens, 1 val / 3 tokens" in check.detail


def test_configured_real_data_missing_is_a_blocker_even_with_the_sample_present(
    root_with_sample,
):
    (root_with_sample / "autogolf.yaml").write_text("dataset: fineweb\n")
    checks = doctor.check_datasets(root_with_sample)
    assert by_name(checks, "data:fineweb").status == FAIL
    assert by_name(checks, "data:sample").status == OK


def test_unknown_configured_dataset_is_a_blocker(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("dataset: imagenet\n")
    assert doctor.check_datasets(tmp_path)[0].status == FAIL


def test_folder_that_is_not_a_repository_is_a_blocker_with_git_init(tmp_path):
    check = doctor.check_git(tmp_path)[0]
    assert check.status == FAIL
    assert "git init" in check.fix


def test_repository_without_commits_is_a_blocker(tmp_path):
    git("init", "-q", cwd=tmp_path)
    check = doctor.check_git(tmp_path)[0]
    assert (check.status, check.detail) == (FAIL, "no commits yet")


def test_clean_repository_reports_branch_and_head(tmp_path):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=tmp_path)
    check = doctor.check_git(tmp_path)[0]
    assert check.status == OK
    assert check.detail.startswith("branch main at ")
    assert check.detail.endswith(", 0 uncommitted changes")


def test_uncommitted_changes_are_a_warning(tmp_path):
    git("init", "-q", cwd=tmp_path)
    git("commit", "-q", "--allow-empty", "-m", "start", cwd=tmp_path)
    (tmp_path / "new.txt").write_text("x")
    check = doctor.check_git(tmp_path)[0]
    assert check.status == WARN
    assert "1 uncommitted changes" in check.detail


def test_nearly_full_disk_is_a_blocker(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "free_disk_bytes", lambda path: 100 * 1024**2)
    assert doctor.check_disk(tmp_path)[0].status == FAIL


def test_low_disk_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "free_disk_bytes", lambda path: 2 * 1024**3)
    check = doctor.check_disk(tmp_path)[0]
    assert (check.status, check.detail.split(" GiB")[0]) == (WARN, "2.0")


def test_unreadable_disk_space_is_unknown_not_zero(tmp_path, monkeypatch):
    def failing(path):
        raise OSError("no such device")

    monkeypatch.setattr(doctor, "free_disk_bytes", failing)
    check = doctor.check_disk(tmp_path)[0]
    assert "unknown" in check.detail and "0.0" not in check.detail


def test_report_prints_one_line_per_check_and_the_fix_below_a_problem():
    checks = [doctor.Check("mlx", OK, "0.30"), doctor.Check("disk", FAIL, "full", "clean up")]
    lines = doctor.format_report(checks).splitlines()
    assert lines[0].split() == ["ok", "mlx", "0.30"]
    assert lines[1].split() == ["FAIL", "disk", "full"]
    assert lines[2].split() == ["fix:", "clean", "up"]
    assert lines[3].startswith("doctor: 1 blocker(s)")


def test_exit_status_is_non_zero_without_any_dataset(tmp_path, capsys):
    assert doctor.main(["--root", str(tmp_path)]) == 1
    assert "bootstrap-parameter-golf.sh --sample" in capsys.readouterr().out


def test_exit_status_is_zero_on_a_ready_machine(root_with_sample, capsys):
    git("init", "-q", cwd=root_with_sample)
    (root_with_sample / ".gitignore").write_text("data/\n")
    git("add", ".gitignore", cwd=root_with_sample)
    git("commit", "-q", "-m", "start", cwd=root_with_sample)
    status = doctor.main(["--root", str(root_with_sample)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "doctor: ready" in out


def test_json_output_lists_every_check(tmp_path, capsys):
    doctor.main(["--root", str(tmp_path), "--json"])
    names = [c["name"] for c in json.loads(capsys.readouterr().out)]
    assert {"python", "mlx", "blas", "data:sample", "git", "disk"} <= set(names)


# --------------------------------------------------------------------------- the GPU line
# No GPU on CI: MLX and nvidia-smi are faked here; tests/test_gpu.py checks a real one.

H200_INFO = {"device_name": "NVIDIA H200", "architecture": "sm_90",
             "total_memory": 150 * 2**30, "free_memory": 149 * 2**30,
             "compute_capability_major": 9, "compute_capability_minor": 0}


class FakeBackend:
    def __init__(self, available: bool) -> None:
        self.available = available

    def is_available(self) -> bool:
        return self.available


class FakeMx:
    __version__ = "0.32.4"

    def __init__(self, *, cuda: bool = False, metal: bool = False, info: dict | None = None):
        self.cuda, self.metal = FakeBackend(cuda), FakeBackend(metal)
        self.info = info or {}

    def default_device(self) -> str:
        return "Device(gpu, 0)" if self.cuda.available or self.metal.available else "Device(cpu, 0)"

    def device_info(self) -> dict:
        return self.info


def fake_probes(monkeypatch, mx: FakeMx, smi: doctor.SmiReport | None) -> None:
    monkeypatch.setattr(doctor, "_import_mlx", lambda: mx)
    monkeypatch.setattr(doctor, "_nvidia_smi", lambda: smi)


H200_SMI = doctor.SmiReport([{"name": "NVIDIA H200", "driver_version": "570.124.06",
                              "memory.total": "143771", "memory.used": "0",
                              "compute_cap": "9.0"}])


def test_cuda_device_line_names_device_capability_memory_and_driver(monkeypatch):
    fake_probes(monkeypatch, FakeMx(cuda=True, info=H200_INFO), H200_SMI)
    check = doctor.check_gpu()[0]
    assert check.status == OK
    assert check.detail == ("CUDA: NVIDIA H200, compute capability 9.0, memory 150.0 GiB "
                            "total / 149.0 GiB free, driver 570.124.06")


def test_cuda_without_nvidia_smi_reports_the_driver_as_unknown(monkeypatch):
    fake_probes(monkeypatch, FakeMx(cuda=True, info=H200_INFO), None)
    check = doctor.check_gpu()[0]
    assert check.status == OK
    assert check.detail.endswith("driver unknown (nvidia-smi not found)")


def test_cuda_memory_mlx_does_not_report_is_unknown_not_zero(monkeypatch):
    fake_probes(monkeypatch, FakeMx(cuda=True, info={"device_name": "NVIDIA A10"}), None)
    detail = doctor.check_gpu()[0].detail
    assert "memory unknown total / unknown free" in detail
    assert "compute capability unknown" in detail


def test_cuda_device_below_compute_capability_7_5_is_a_blocker(monkeypatch):
    info = {**H200_INFO, "device_name": "Tesla V100", "compute_capability_major": 7,
            "compute_capability_minor": 0}
    fake_probes(monkeypatch, FakeMx(cuda=True, info=info), H200_SMI)
    check = doctor.check_gpu()[0]
    assert check.status == FAIL
    assert "7.5" in check.fix and "--cpu" in check.fix


def test_nvidia_gpu_that_mlx_does_not_use_is_a_warning_with_the_cuda_setup(monkeypatch):
    fake_probes(monkeypatch, FakeMx(), H200_SMI)
    check = doctor.check_gpu()[0]
    assert check.status == WARN
    assert "MLX runs on the CPU, but nvidia-smi lists 1 NVIDIA GPU(s): NVIDIA H200" in check.detail
    assert "140.4 GiB" in check.detail and "driver 570.124.06" in check.detail
    assert check.fix.startswith("AUTOGOLF_BACKEND=cuda bash scripts/setup.sh")


def test_old_nvidia_gpu_mlx_cannot_use_is_only_noted(monkeypatch):
    old = doctor.SmiReport([{**H200_SMI.gpus[0], "name": "Tesla K80", "compute_cap": "3.7"}])
    fake_probes(monkeypatch, FakeMx(), old)
    check = doctor.check_gpu()[0]
    assert check.status == OK
    assert "below the 7.5" in check.detail


def test_failing_nvidia_smi_is_a_warning_naming_its_error(monkeypatch):
    smi = doctor.SmiReport([], "nvidia-smi failed: NVIDIA-SMI has failed because it "
                               "couldn't communicate with the NVIDIA driver.")
    fake_probes(monkeypatch, FakeMx(), smi)
    check = doctor.check_gpu()[0]
    assert check.status == WARN
    assert "couldn't communicate with the NVIDIA driver" in check.detail
    assert "driver" in check.fix


def test_no_gpu_at_all_says_mlx_runs_on_the_cpu(monkeypatch):
    fake_probes(monkeypatch, FakeMx(), None)
    check = doctor.check_gpu()[0]
    assert (check.status, check.detail) == (
        OK, "none: MLX runs on the CPU (no Metal; nvidia-smi not found)")


def test_metal_line_reports_memory_and_working_set(monkeypatch):
    info = {"architecture": "applegpu_g14s", "memory_size": 32 * 2**30,
            "max_recommended_working_set_size": 22 * 2**30}
    fake_probes(monkeypatch, FakeMx(metal=True, info=info), None)
    check = doctor.check_gpu()[0]
    assert check.status == OK
    assert check.detail == ("Metal: applegpu_g14s, memory 32.0 GiB, recommended working set "
                            "22.0 GiB")


def test_mlx_line_says_whether_cuda_is_available(monkeypatch):
    fake_probes(monkeypatch, FakeMx(cuda=True, info=H200_INFO), None)
    assert doctor.check_mlx()[0].detail.endswith("CUDA available")


def fake_smi_on_path(tmp_path: Path, monkeypatch, script: str) -> None:
    exe = tmp_path / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_nvidia_smi_output_is_parsed_per_gpu(tmp_path, monkeypatch):
    fake_smi_on_path(tmp_path, monkeypatch,
                     'echo "NVIDIA H200, 570.124.06, 143771, 0, 9.0"\n'
                     'echo "NVIDIA H200, 570.124.06, 143771, 512, 9.0"\n')
    report = doctor._nvidia_smi()
    assert report.error is None
    assert len(report.gpus) == 2
    assert report.gpus[1] == {"name": "NVIDIA H200", "driver_version": "570.124.06",
                              "memory.total": "143771", "memory.used": "512",
                              "compute_cap": "9.0"}


def test_old_nvidia_smi_without_compute_cap_is_asked_again_without_it(tmp_path, monkeypatch):
    fake_smi_on_path(tmp_path, monkeypatch,
                     'case "$1" in *compute_cap*) echo \'Field "compute_cap" is not a valid '
                     'field to query.\'; exit 2;; esac\n'
                     'echo "Tesla T4, 470.82.01, 15109, 0"\n')
    report = doctor._nvidia_smi()
    assert report.gpus == [{"name": "Tesla T4", "driver_version": "470.82.01",
                            "memory.total": "15109", "memory.used": "0"}]


def test_nvidia_smi_that_fails_reports_its_first_line(tmp_path, monkeypatch):
    fake_smi_on_path(tmp_path, monkeypatch,
                     'echo "NVIDIA-SMI has failed because it could not communicate with the '
                     'NVIDIA driver."; exit 9\n')
    report = doctor._nvidia_smi()
    assert report.gpus == []
    assert report.error.startswith("nvidia-smi failed: NVIDIA-SMI has failed")


def test_timeouts_line_names_the_device_class_and_each_profiles_timeout(tmp_path):
    (tmp_path / "autogolf.yaml").write_text(
        "device: cuda\nprofiles:\n  breadth:\n    timeout_s: {default: 900, cuda: 240}\n")
    check = doctor.check_timeouts(tmp_path)[0]
    assert check.status == OK
    assert check.detail.startswith("cuda (per device class): smoke 300 s, breadth 240 s, ")


def test_timeouts_without_per_device_values_say_so(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("device: metal\n")
    detail = doctor.check_timeouts(tmp_path)[0].detail
    assert detail.startswith("metal (the same on every device): smoke 300 s, breadth 900 s")


def test_unreadable_timeouts_are_a_blocker_naming_the_problem(tmp_path):
    (tmp_path / "autogolf.yaml").write_text("profiles:\n  breadth:\n    timeout_s: {cuda: 1}\n")
    check = doctor.check_timeouts(tmp_path)[0]
    assert check.status == FAIL
    assert "autogolf.yaml: profiles.breadth.timeout_s.default: missing" in check.detail


# ----------------------------------------------------------------------------- the agent command

AGENT_STAND_IN = """#!/usr/bin/env bash
# Stand-in for an agent CLI: --version answers at once; anything else would spend tokens.
if [ "${1:-}" = --version ]; then
    if ! touch "${STANDIN_HOME:-/nonexistent}/state" 2>/dev/null; then
        echo "cannot write my state" >&2
        exit 3
    fi
    echo "stand-in 1.2.3"
    exit 0
fi
echo "a real prompt: this would spend tokens" > "$STANDIN_SPENT"
"""


def agent_repo(tmp_path: Path, monkeypatch, writable: str = "[]", mode: str = "auto") -> Path:
    """A checkout whose autogolf.yaml runs the stand-in agent, its bin/ first on PATH."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    home.mkdir()
    (bin_dir / "claude").write_text(AGENT_STAND_IN)
    (bin_dir / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STANDIN_HOME", str(home))
    monkeypatch.setenv("STANDIN_SPENT", str(tmp_path / "spent"))
    (tmp_path / "autogolf.yaml").write_text(
        "proposer: agent\n"
        "agent:\n  command: [claude, -p, '{prompt}', --output-format, json]\n"
        f"  sandbox: {{mode: {mode}, writable: {writable}}}\n")
    return tmp_path


def sandbox_works() -> bool:
    from loop.proposers.sandbox import choose

    return choose("auto").tool is not None


def test_no_agent_line_when_the_agent_does_not_propose(tmp_path):
    assert doctor.check_agent(tmp_path) == []


def test_an_agent_command_that_is_not_installed_is_a_blocker(tmp_path, monkeypatch):
    (tmp_path / "autogolf.yaml").write_text(
        "proposer: agent\nagent: {command: [no-such-agent-cli, '{prompt}']}\n")
    [check] = doctor.check_agent(tmp_path)
    assert check.status == FAIL and "'no-such-agent-cli' is not on PATH" in check.detail


def test_the_agent_answers_its_version_confined_without_spending_a_token(tmp_path, monkeypatch):
    if not sandbox_works():
        pytest.skip("no working sandbox here (bubblewrap or sandbox-exec)")
    root = agent_repo(tmp_path, monkeypatch, writable=f"[{tmp_path / 'home'}]")
    [check] = doctor.check_agent(root)
    assert check.status == OK, check.detail
    assert "--version under" in check.detail and "stand-in 1.2.3" in check.detail
    assert not (tmp_path / "spent").exists()


def test_an_agent_that_cannot_write_its_state_confined_is_a_blocker_naming_the_paths(
        tmp_path, monkeypatch):
    if not sandbox_works():
        pytest.skip("no working sandbox here (bubblewrap or sandbox-exec)")
    root = agent_repo(tmp_path, monkeypatch)  # its home folder is not writable
    [check] = doctor.check_agent(root)
    assert check.status == FAIL and "cannot write my state" in check.detail
    assert check.fix is not None and "~/.claude, ~/.claude.json" in check.fix


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_doctor_proves_the_judges_seal(root_with_sample):
    (root_with_sample / "autogolf.yaml").write_text("dataset: sample\n")
    [check] = doctor.check_seal(root_with_sample)
    assert check.status == OK and "proved" in check.detail


def test_doctor_warns_when_the_judge_runs_unsealed(root_with_sample):
    (root_with_sample / "autogolf.yaml").write_text("dataset: sample\njudge: {sealed: false}\n")
    [check] = doctor.check_seal(root_with_sample)
    assert check.status == WARN and "UNSEALED" in check.detail
