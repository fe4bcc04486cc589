#!/usr/bin/env bash
# The study's question on the demo cohort: the prototype's setup (seed_parity), the regularized setup and the
# demo's small CNN, all from random weights (no download), cross-validated on identical folds by
# `mammofuse compare`. Needs a GPU to finish in minutes. Usage: benchmarks/compare_presets.sh OUT [FOLDS] [EPOCHS]
set -euo pipefail
out=${1:?output folder}; folds=${2:-5}; epochs=${3:-8}
mkdir -p "$out" && cd "$out"
export MAMMOFUSE_NO_PROGRESS=1
[ -f cohort/cohort.toml ] || python -m mammofuse synth cohort --breasts 1112 --image-size 256 208 > synth.log
for stage in ingest preprocess split; do python -m mammofuse "$stage" cohort/cohort.toml > "$stage.log"; done
printf 'extends = "seed_parity"\n[model]\npretrained = "none"\n' > seed_parity_none.toml
printf 'extends = "regularized"\n[model]\npretrained = "none"\n' > regularized_none.toml
time python -m mammofuse compare cohort/cohort.toml --presets seed_parity_none.toml regularized_none.toml demo_cpu \
  --folds "$folds" --epochs "$epochs"
