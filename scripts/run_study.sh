#!/usr/bin/env bash
# The default real-data study of issue 5 (CPU-scale analogue of the paper's section 5), sized to
# about 2 hours on a 2-core machine, followed by its report.
#
#   bash scripts/run_study.sh                 # everything, into results/benchmarks/
#   OUT=/tmp/study WORKERS=1 bash scripts/run_study.sh
#
# Resumable: if it is interrupted (Ctrl-C, reboot), run the same command again; finished runs are
# skipped and an interrupted run continues from its last finished epoch (see memoptim sweep).
#
# What it runs (a documented subset of the paper's Table 8 grid; every optimizer keeps the
# paper's defaults beta1 0.9, beta2 0.999, C 5, lambda 0.7, rho 0.05, SGD momentum 0.9, and only
# the learning rate is searched; 3 seeds per configuration, all of them reported):
#
#   stage  task (paper analogue)                optimizers       lr grid            epochs   data per epoch
#   1      fashion-mnist (CIFAR, Tables 2 + 3)  all 9            Adam-type 1e-3,1e-4 6       10k train, 5k val, 5k test
#                                                                SGD-type  0.1, 0.01
#   2      brown-lm (PTB, Table 2)              Adam family (6)  1e-3 (as Table 9)   3       200k train tokens, 50k val/test
#   3      split-fashion-mnist (Table 4)        Adam family (6)  1e-3, 1e-4          1/task  5 tasks x 2k train, 1k val each
#   4      permuted-fashion-mnist (Table 4)     Adam family (6)  1e-3, 1e-4          1/task  as stage 3
#   5      report: $OUT/report.md + PNG curves
#   ("all 9": adam, adam+cg, adam+sam, adam+cm, adam+sam+cm, adamomentum, sgd, sgd+cg, sgd+cm;
#    "Adam family": the first six.)  Fashion-MNIST runs also record the diagnostics every epoch
#   (sharpness with 10 power iterations, distance travelled, buffer variance / agreement) for the
#   Fig. 8 analogue.
#
# Time estimate (measured 2026-11-22 on this 2-core machine, one torch thread per process):
#   one epoch, fashion-mnist as above: 21 s (Adam, Adam+CM), 31 s (SAM variants), +3 s diagnostics
#   one epoch, brown-lm as above: 36 s (Adam), 41 s (Adam+CM); SAM variants ~1.4x (estimated)
#   one split-fashion-mnist run: 33 s (Adam+CM)
#   -> stage 1 ~8,500 s, stage 2 ~2,400 s, stage 3 ~1,300 s of one core = ~12,200 core-seconds;
#   with WORKERS=2 (two sweep processes, one thread each, sharing each stage through the Optuna
#   SQLite storage; measured: no slowdown of one by the other, and 1.6x the throughput of one
#   process with 2 threads) about 1 h 45 min, plus start-up and stage tails: ~1 h 50 min.
#   The real wall-clock time is printed at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
OUT="${OUT:-results/benchmarks}"
RUNS="$OUT/runs"
WORKERS="${WORKERS:-2}"
SEEDS="${SEEDS:-0,1,2}"
PY="${PYTHON:-$root/.venv/bin/python}"
memoptim() { "$PY" -m memoptim "$@"; }
# stop the background workers too if this script is interrupted or fails
trap 'kill $(jobs -p) 2> /dev/null || true' EXIT

bash scripts/get_data.sh  # idempotent; a no-op when the data is already installed

# Run one sweep stage with $WORKERS cooperating processes (one torch thread each) and wait.
stage() {
  local pids=() i
  for ((i = 0; i < WORKERS; i++)); do
    memoptim sweep --threads 1 --out "$RUNS" --seeds "$SEEDS" "$@" &
    pids+=($!)
    sleep 2  # let the first worker create the studies
  done
  for i in "${pids[@]}"; do wait "$i"; done
}

start=$(date +%s)
echo "[study] stage 1/4: fashion-mnist, 9 optimizers x 2 lr x 3 seeds, 6 epochs"
stage --task fashion-mnist \
  --optimizers adam,adam+cg,adam+sam,adam+cm,adam+sam+cm,adamomentum,sgd,sgd+cg,sgd+cm \
  --grid cpu --epochs 6 --subset 10000 --eval-subset 5000 --diagnostics --sharpness-iters 10

echo "[study] stage 2/4: brown-lm, 6 optimizers x lr 1e-3 x 3 seeds, 3 epochs"
stage --task brown-lm --optimizers adam,adam+cg,adam+sam,adam+cm,adam+sam+cm,adamomentum \
  --grid cpu --param lr=0.001 --epochs 3 --subset 200000 --eval-subset 50000

echo "[study] stage 3/4: split-fashion-mnist, 6 optimizers x 2 lr x 3 seeds, 1 epoch per task"
stage --task split-fashion-mnist \
  --optimizers adam,adam+cg,adam+sam,adam+cm,adam+sam+cm,adamomentum \
  --grid cpu --epochs 1 --subset 2000 --eval-subset 1000

echo "[study] stage 4/4: permuted-fashion-mnist, 6 optimizers x 2 lr x 3 seeds, 1 epoch per task"
stage --task permuted-fashion-mnist \
  --optimizers adam,adam+cg,adam+sam,adam+cm,adam+sam+cm,adamomentum \
  --grid cpu --epochs 1 --subset 2000 --eval-subset 1000

end=$(date +%s)
echo "[study] sweeps done in $(((end - start) / 60)) min wall clock"
memoptim report --runs "$RUNS" --out "$OUT"
echo "[study] report: $OUT/report.md"
