"""On a real GPU (NVIDIA via MLX's CUDA backend, or Metal): the doctor's line and the trainer.

Every test here skips on a machine without one, saying why; CI (Linux, CPU) skips them all.
bench/gpu_check.sh measures the GPU's speed and noise; these only check behaviour.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from trainer_helpers import run_trainer


def _mlx_state() -> tuple[str, bool]:
    import mlx.core as mx

    try:
        cuda = bool(mx.cuda.is_available())
    except AttributeError:  # MLX before its CUDA backend
        cuda = False
    return str(mx.default_device()), cuda


DEVICE, CUDA = _mlx_state()
ON_GPU = "gpu" in DEVICE
needs_gpu = pytest.mark.skipif(
    not ON_GPU, reason=f"no GPU: MLX's default device is {DEVICE} "
    "(on an NVIDIA machine: bash scripts/setup.sh --cuda)")
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="MLX's CUDA backend is not available here (on an NVIDIA machine with "
    "compute capability >= 7.5: bash scripts/setup.sh --cuda)")


@needs_cuda
def test_doctor_reports_the_real_cuda_device_and_its_memory():
    from loop.ui import doctor

    check = doctor.check_gpu()[0]
    assert check.status == doctor.OK, check
    assert re.match(r"CUDA: .+, compute capability \d+\.\d+, memory \d+\.\d GiB total / "
                    r"\d+\.\d GiB free, driver ", check.detail), check.detail


@needs_gpu
@pytest.mark.slow
def test_trainer_on_the_gpu_computes_in_bf16_with_a_memory_aware_val_batch(
        repo_root: Path, trainer_env: dict[str, str], tmp_path: Path):
    run = run_trainer(repo_root, trainer_env, tmp_path, "gpu", timeout=300)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "compute_dtype:bfloat16" in run.stdout
    assert re.search(r"^val_batch: seqs=\d+ requested=\d+ gpu_memory_mib=\d+$",
                     run.stdout, re.M)
    assert re.search(r"^final_int8_zlib_roundtrip_exact val_loss:\d+\.\d{8} "
                     r"val_bpb:\d+\.\d{8}$", run.stdout, re.M)
