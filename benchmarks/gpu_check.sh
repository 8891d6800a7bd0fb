#!/usr/bin/env bash
# The GPU checks, for a machine with one CUDA device and hydradgl installed (docs/install.md#gpu):
# the CUDA-only tests, the kernel paths and training throughput on the GPU, an end-to-end
# train + evaluate on cuda, a one-process torchrun with nccl, and inference speed on the GPU.
# Prints its figures; every step runs even if an earlier one failed, and the exit status says
# whether all passed.
#
#     benchmarks/gpu_check.sh [WORKDIR]        (default: a temporary folder)
set -uo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
export HYDRADGL_CACHE=${HYDRADGL_CACHE:-$work/cache}
failed=()

step() {  # step NAME COMMAND...: run it, time it, remember a failure
    local name=$1 start=$SECONDS
    shift
    echo "=== $name"
    "$@" || failed+=("$name")
    echo "--- $name: $((SECONDS - start)) s"
}

step device python -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step cuda-tests python -m pytest -q -rs -p no:cacheprovider \
    tests/test_kernels.py::test_cuda_torch_path_matches_cpu tests/test_kernels.py::test_cuda_model_matches_cpu \
    tests/test_model_assembly.py::test_model_on_cuda_matches_cpu
step kernel-paths python benchmarks/bench_kernels.py --repeats 20
step train-throughput-64 python benchmarks/bench_kernels.py --train --device cuda --epochs 3
step train-throughput-512 python benchmarks/bench_kernels.py --train --device cuda --epochs 3 --batch-size 512
step train-cuda hydradgl train --device cuda --epochs 3 --no-plots -o "$work/run" --overwrite
step evaluate hydradgl evaluate "$work/run"
step torchrun-nccl torchrun --standalone --nproc-per-node 1 -m hydradgl train --device auto --epochs 2 \
    --no-plots -o "$work/ddp" --overwrite
step predict python benchmarks/bench_predict.py --device cuda --run "$work/run" --calls 100

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
echo "all GPU checks passed"
