"""Facts about the machine that more than one module needs: BLAS preload, disk, OS."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Debian/Ubuntu's libopenblas0-pthread; MLX's Linux wheel bundles a reference BLAS that is
# about 40x slower for matrix products, so children that run the trainer preload this one.
_OPENBLAS_GLOBS = (
    "/usr/lib/*-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/*/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)


def openblas_path() -> str | None:
    """Path of the system OpenBLAS to preload on Linux, or None (macOS, or not installed)."""
    if not sys.platform.startswith("linux"):
        return None
    for pattern in _OPENBLAS_GLOBS:
        hits = sorted(glob.glob(pattern))
        if hits:
            return hits[0]
    return None


def blas_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment entries that make an MLX child use the fast BLAS (empty when not needed)."""
    lib = openblas_path()
    if lib is None:
        return {}
    current = (base if base is not None else os.environ).get("LD_PRELOAD", "")
    if lib in current.split(":"):
        return {"LD_PRELOAD": current}
    return {"LD_PRELOAD": f"{lib}:{current}" if current else lib}


def blas_in_use() -> str:
    """Which BLAS an MLX child started now would use, in words."""
    if sys.platform == "darwin":
        return "Accelerate (macOS)"
    lib = openblas_path()
    if lib is None:
        return "MLX bundled reference BLAS (slow; install libopenblas0-pthread)"
    return f"OpenBLAS via LD_PRELOAD ({lib})"


# Run in a child: importing MLX here would load its backend (a CUDA context holds GPU memory)
# into the daemon, which never trains.
_DEVICE_PROBE = """
import sys
try:
    import mlx.core as mx
except Exception:
    print("cpu"); sys.exit()
def up(backend):
    try:
        return bool(backend.is_available())
    except Exception:
        return False
print("cuda" if up(getattr(mx, "cuda", None)) else "metal" if up(mx.metal) else "cpu")
"""


@functools.lru_cache(maxsize=4)
def device_class(python: str | None = None) -> str:
    """The device class MLX trains on with `python` (default: this one): cuda, metal or cpu.

    The trainer runs on MLX's default device, a GPU whenever a GPU backend is available, so
    this is whose profile timeouts apply. "cpu" when the probe cannot tell (MLX missing).
    """
    try:
        done = subprocess.run([python or sys.executable, "-c", _DEVICE_PROBE],
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    answer = done.stdout.strip().splitlines()[-1:] or ["cpu"]
    return answer[0] if answer[0] in ("cuda", "metal", "cpu") else "cpu"


def free_disk_bytes(path: str | Path) -> int:
    return shutil.disk_usage(path).free


def _print_shell_exports() -> None:
    """`eval "$(python -m loop.platform --shell)"`: the BLAS preload for a shell script."""
    import shlex

    for key, value in blas_env().items():
        print(f"export {key}={shlex.quote(value)}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--shell"]:
        sys.exit("usage: python -m loop.platform --shell")
    _print_shell_exports()
