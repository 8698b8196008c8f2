#!/usr/bin/env bash
# Fetch MLX's CUDA 13 wheels HERE for a lent GPU machine that reaches no package registry,
# split so that each transfer stays under the 64 MiB a call may carry (bench/gpu_check.sh).
#
#   bash bench/gpu_wheels.sh [--python-version 3.12] [--mlx-version 0.32.4] [--part-mib 44]
#
# Writes .whl/1 (mlx, the first part of mlx-cuda-13, SHA256SUMS) and .whl/2 (the rest), both
# git-ignored. The lent H200 image has Python 3.12, driver 580 and NVIDIA's CUDA 13 pip
# packages (cuBLAS, cuDNN, NCCL, ...), which mlx-cuda-13 needs and which are not fetched.
# Then, on the machine, two calls back to back (the stash lives while the machine stays up):
#   carry .whl/1:                 bash bench/gpu_check.sh --stash .whl/1
#   carry .whl/2, data, .upstream: bash bench/gpu_check.sh --wheels .whl/2 --out "$OUT"
set -euo pipefail
cd "$(dirname "$0")/.."

pyver=3.12
part_mib=44
mlx_version=""
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) pyver=$2; shift 2 ;;
        --mlx-version) mlx_version=$2; shift 2 ;;
        --part-mib) part_mib=$2; shift 2 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_wheels: unknown argument $1" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-.venv/bin/python}
if [ -z "$mlx_version" ]; then
    # The MLX the tests here ran with, so the GPU runs the same version.
    mlx_version=$("$PY" -c "import mlx.core as mx; print(mx.__version__)")
fi

rm -rf .whl/all .whl/1 .whl/2
mkdir -p .whl/all .whl/1 .whl/2
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --implementation cp --platform manylinux_2_35_x86_64 -d .whl/all \
    "mlx==$mlx_version" "mlx-cuda-13==$mlx_version"
(cd .whl/all && sha256sum ./*.whl >SHA256SUMS)
big=$(cd .whl/all && echo mlx_cuda_13-*.whl)
split -b "${part_mib}m" -a 2 ".whl/all/$big" ".whl/all/$big.part-"
cp .whl/all/SHA256SUMS .whl/all/mlx-"$mlx_version"-*.whl ".whl/all/$big.part-aa" .whl/1/
for part in .whl/all/"$big".part-*; do
    [ "$part" = ".whl/all/$big.part-aa" ] || cp "$part" .whl/2/
done
cp .whl/all/SHA256SUMS .whl/2/
rm -rf .whl/all
du -sh .whl/1 .whl/2
