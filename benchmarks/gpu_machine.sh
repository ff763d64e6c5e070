#!/usr/bin/env bash
# One command for a lent GPU machine (device tool: carry .gpu, built by benchmarks/gpu_bundle.sh): unpacks the
# bundle, checks the imports, then runs a benchmark module with its log (and results, by its --out) under $OUT.
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh                  # benchmarks.gpu_efficiency
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh benchmarks.gpu_efficiency --seq 128 --ray-seq 128
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh benchmarks.longtail --dataset reuters21578 \
#     --data-root .gpu/data --set train.use_gpu=true --num-cpus 16   # corpora copied into .gpu/data
# Bundle and data over the 64 MiB one call may carry: carry .gpu first, then (within the machine's idle
# release) a call that carries only the data folder, e.g. .gpu-eurlex with --data-root .gpu-eurlex/data.
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" /tmp/gpusite
# A later call on the same warm machine may carry only data (the device tool keeps /tmp between calls).
if [ -f .gpu/site.tar.xz ]; then
  tar -xJf .gpu/site.tar.xz -C /tmp/gpusite || exit 1
elif [ ! -d /tmp/gpusite/site ]; then
  echo "no .gpu/site.tar.xz carried and none unpacked by an earlier call on this machine" >&2
  exit 1
fi
export PYTHONPATH=/tmp/gpusite/site:$PWD PYTHONUNBUFFERED=1 RAY_DATA_DISABLE_PROGRESS_BARS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import ray, ray.train, ray.data, ray.tune, pydantic, pipeline.training.train; print('ray', ray.__version__)" \
  || exit 1
module=${1:-benchmarks.gpu_efficiency}
shift || true
name=${module##*.}
case " $* " in *" --out "*) ;; *) set -- "$@" --out "$out/$name.json" ;; esac
timeout "${GPU_BENCH_SECONDS:-480}" python3 -m "$module" "$@" >"$out/$name.log" 2>&1
echo "rc $?"
grep -v -e PlacementGroupCleaner -e streaming_executor -e "Data sink" "$out/$name.log" | tail -40
