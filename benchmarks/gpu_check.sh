#!/usr/bin/env bash
# The GPU checks of issue 14 in one call to a GPU machine (at most 9.5 minutes: each part has a time limit):
# the tests that only a GPU runs (tests/training/test_gpu.py, the device path of the input pipeline on CUDA, a
# compiled bf16 run), then bench_train at the issue's setting (resnet18, two views 1024 x 512, batch 32,
# 8 loader processes): in-memory steps (fp32 / bf16 / compiled), the input pipeline alone, how long an epoch
# waits for its first batch (a DataLoader vs fit's EpochStream), how often a step waits for the GPU, and
# `mammofuse train`'s real epochs (its training batches, and whole epochs with validation and checkpoints)
# with the GPU's busy % over each; before it, how long training stops for a checkpoint (bench_checkpoint); after
# it, while time is left, scoring and Grad-CAM on the GPU against the CPU (bench_inference).
# Logs go to $OUT.
#
# The GPU machine has torch, Lightning, pandas, scikit-learn, OpenCV but not the rest; prepare the wheels
# here first (from the project's root):
#   bash ../shared/tools/device-wheels kornia==0.9.0 kornia_rs==0.2.0 nvidia-ml-py==13.615.71 \
#     safetensors==0.8.0 pytest==9.0.3 pluggy==1.6.0 iniconfig==2.3.0
# (nvidia-ml-py: NVML from Python, for the GPU's busy %; without it bench_train asks nvidia-smi. safetensors
# (mammofuse.models imports it) and pytest are not among the packages the image is said to have.)
# then run `bash benchmarks/gpu_check.sh` there with `.whl` carried (timeout 590 s). A package still missing
# stops the script within seconds, naming it, before any device time goes into the checks.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 2
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD
fi
export PYTHONUNBUFFERED=1 MAMMOFUSE_NO_PROGRESS=1
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
mark() { echo "--- ${SECONDS} s since the start: $1 done" | tee -a "$OUT/gpu.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning; print('torch', torch.__version__, '| lightning', lightning.__version__)"
# every module the checks below import (a CPU venv with only the image's packages and these wheels ran them all)
python3 -c "import pytest, kornia, pydicom, pytorch_grad_cam, tests.training.fixtures, mammofuse.cli, mammofuse.training.run" \
  2>&1 | tee -a "$OUT/gpu.txt" || exit 3

timeout 170 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/training/test_gpu.py \
  tests/training/test_train.py::TestInputPipeline tests/data/test_dataset.py::TestAugmentationOnTheDevice \
  2>&1 | tee "$OUT/tests.log"
mark tests

timeout 50 python3 benchmarks/bench_checkpoint.py 2>&1 | tee "$OUT/bench_checkpoint.log"
mark bench_checkpoint

# the device path alone: the goal's figure (each real run compiles its graphs: training's are the in-memory
# step's, from inductor's cache; the last partial batch's and validation's are new)
timeout 330 python3 benchmarks/bench_train.py --breasts 600 --image-size 1024 832 --size 1024 512 \
  --batch 32 --workers 8 --epochs 5 --paths device --root /tmp/mammofuse-bench 2>&1 | tee "$OUT/bench_train.log"
mark bench_train

# evaluation, Grad-CAM and predict on the GPU against the CPU (models.device), while time is left
if [ "$SECONDS" -lt 520 ]; then
  timeout 60 python3 benchmarks/bench_inference.py --size 1024 512 --breasts 32 2>&1 | tee "$OUT/bench_inference.log"
  mark bench_inference
fi
