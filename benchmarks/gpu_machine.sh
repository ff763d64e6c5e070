#!/usr/bin/env bash
# One command for a lent GPU machine (device tool: carry .gpu, built by benchmarks/gpu_bundle.sh): unpacks the
# bundle, checks the imports, then runs a benchmark module with its log (and results, by its --out) under $OUT.
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh                  # benchmarks.gpu_efficiency
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh benchmarks.gpu_efficiency --seq 128 --ray-seq 128
#   BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh benchmarks.longtail --dataset reuters21578 \
#     --data-root .gpu/data --set train.use_gpu=true --num-cpus 16   # corpora copied into .gpu/data
# Over the 64 MiB one call may carry, split the work over calls on the same warm machine (within its idle
# release; /tmp is kept, the carried folders of an earlier call are not): each call unpacks what it carries
# into /tmp and GPU_PREPARE_ONLY=1 stops there. .gpu: the bundle, and corpora copied to /tmp/gpudata;
# .gpu-minilm (gpu_bundle.sh --minilm): the packaged all-MiniLM-L6-v2 in float16; .gpu-eurlex/data: a corpus.
#   call 1, carry .gpu:         GPU_PREPARE_ONLY=1 bash benchmarks/gpu_machine.sh
#   call 2, carry .gpu-minilm:  BENCH_GIT_SHA=<commit> bash benchmarks/gpu_machine.sh benchmarks.finetune \
#     --config benchmarks/configs/reuters21578.yaml --data-root /tmp/gpudata --num-cpus 16 --set ...
set -u
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" /tmp/gpusite /tmp/gpudata
if [ -f .gpu/site.tar.xz ]; then
  tar -xJf .gpu/site.tar.xz -C /tmp/gpusite || exit 1
elif [ ! -d /tmp/gpusite/site ]; then
  echo "no .gpu/site.tar.xz carried and none unpacked by an earlier call on this machine" >&2
  exit 1
fi
if [ -d .gpu/data ]; then cp -r .gpu/data/. /tmp/gpudata/; fi
if [ -d .gpu-minilm/site ]; then cp -r .gpu-minilm/site/. /tmp/gpusite/site/; fi
if [ "${GPU_PREPARE_ONLY:-0}" = 1 ]; then ls /tmp/gpusite/site /tmp/gpudata | head -50; exit 0; fi
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
