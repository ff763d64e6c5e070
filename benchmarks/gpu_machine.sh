#!/usr/bin/env bash
# One command for a lent GPU machine (device tool: carry .gpu, built by benchmarks/gpu_bundle.sh): unpacks the
# bundle, checks the imports, then runs the GPU benchmarks with their results and log under $OUT.
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh [extra benchmarks.gpu_efficiency arguments]
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" /tmp/gpusite
tar -xJf .gpu/site.tar.xz -C /tmp/gpusite || exit 1
export PYTHONPATH=/tmp/gpusite/site:$PWD PYTHONUNBUFFERED=1 RAY_DATA_DISABLE_PROGRESS_BARS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import ray, ray.train, ray.data, ray.tune, pydantic, pipeline.training.train; print('ray', ray.__version__)" \
  || exit 1
timeout "${GPU_BENCH_SECONDS:-480}" python3 -m benchmarks.gpu_efficiency --out "$out/gpu_efficiency.json" "$@" \
  >"$out/gpu_efficiency.log" 2>&1
echo "rc $?"
grep -v -e PlacementGroupCleaner -e streaming_executor -e "Data sink" "$out/gpu_efficiency.log" | tail -40
