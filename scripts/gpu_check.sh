#!/usr/bin/env bash
# One command for a GPU owner: does memoptim run right on this machine's CUDA device?
#
#   bash scripts/gpu_check.sh                        # CUDA: about 5 minutes at most
#   bash scripts/gpu_check.sh --device cpu           # the same steps on CPU (no GPU needed)
#   bash scripts/gpu_check.sh --device cpu --quick   # a few tests per step, a tiny benchmark
#   bash scripts/gpu_check.sh --dry-run              # print the steps, run nothing
#
# Steps (each under its own time limit, so the whole check ends within 5 minutes):
#   1. equivalence  the fixed grids and the fused/default paths against the float64 reference
#   2. checkpoints  resume bit for bit, state-dict round trips, a CPU checkpoint via map_location
#   3. no sync      20 steps of every registry optimizer under torch.cuda.set_sync_debug_mode("error")
#   4. cuda graph   the fused step captured with torch.cuda.graph, replayed 10 times, against eager
#   5. benchmark    benchmarks/step_time.py on the device: ratios to torch's fused and compiled Adam
# On CUDA the tests run their cuda-parametrised cases only (pytest -m cuda); the CPU cases are
# part of the ordinary test suite.  Logs go to $GPU_CHECK_LOGS (default: a new temporary folder).
#
# Exit status: 0 every step passed; 1 a step failed or timed out; 2 --device cuda (the default)
# on a machine without CUDA; 64 a usage error.  Python: $PYTHON, else .venv/bin/python, else python3.
# GPU_CHECK_LIMIT_FACTOR=2 doubles every step's time limit (a slow machine, a cold compiler cache).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root" || exit 1

device=cuda
quick=0
dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="${2:-}"; shift 2 || { echo "gpu_check: --device needs cpu or cuda" >&2; exit 64; } ;;
    --quick) quick=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
done
case "$device" in cpu|cuda) ;; *) echo "gpu_check: --device must be cpu or cuda, not '$device'" >&2; exit 64 ;; esac

python="${PYTHON:-}"
if [ -z "$python" ]; then
  if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi

if [ "$device" = cuda ] && [ "$dry" = 0 ]; then
  if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 2)" 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); try: bash scripts/gpu_check.sh --device cpu"
    exit 2
  fi
fi

if [ "$device" = cuda ]; then marks=(-m cuda); else marks=(-m "not cuda"); fi
pytest=("$python" -m pytest -q -rfEs -p no:cacheprovider "${marks[@]}")
bench=("$python" benchmarks/step_time.py --device "$device")
if [ "$quick" = 1 ]; then
  equivalence=(tests/test_equivalence.py::test_adamomentum_matches_reference)
  checkpoints=(tests/test_device.py::test_state_dict_round_trip_on_the_device -k "AdamCM and fused")
  nosync=(tests/test_cuda.py -k "host_sync and lion")
  bench+=(--tensors 2 --scale 0.01 --rounds 1 --steps 2 --warmup 2 --buffer-sizes 2 --memory off
          --only "torch Adam (fused)" "AdamCM fused C")
else
  equivalence=(tests/test_equivalence.py tests/test_cuda.py -k "matches_reference or match_the_reference")
  checkpoints=(tests/test_device.py)
  nosync=(tests/test_cuda.py -k host_sync)
  bench+=(--rounds 5 --steps 5 --warmup 10 --buffer-sizes 5
          --only "torch Adam (fused)" "torch Adam (foreach)" "AdamCM C" "AdamCM fused C" "compiled")
fi
capture=(tests/test_cuda.py -k captured)

# name | time limit (s) | command
steps=(
  "equivalence|75|${pytest[*]@Q} ${equivalence[*]@Q}"
  "checkpoints|60|${pytest[*]@Q} ${checkpoints[*]@Q}"
  "no sync|45|${pytest[*]@Q} ${nosync[*]@Q}"
  "cuda graph|30|${pytest[*]@Q} ${capture[*]@Q}"
  "benchmark|75|${bench[*]@Q}"
)

if [ "$dry" = 1 ]; then
  for s in "${steps[@]}"; do
    IFS='|' read -r name limit cmd <<<"$s"
    printf '%-12s %4ss  %s\n' "$name" "$limit" "$cmd"
  done
  exit 0
fi

logs="${GPU_CHECK_LOGS:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$logs"
"$python" -c "import torch; d = torch.cuda.get_device_name() if '$device' == 'cuda' else 'cpu'; \
print(f'gpu_check on {d}, torch {torch.__version__}; logs in $logs')"

summary=()
failed=0
i=0
for s in "${steps[@]}"; do
  IFS='|' read -r name limit cmd <<<"$s"
  i=$((i + 1))
  log="$logs/$i-${name// /-}.log"
  if [ "$name" = "cuda graph" ] && [ "$device" != cuda ]; then
    summary+=("$(printf 'SKIP  %-12s CUDA only' "$name")")
    continue
  fi
  echo "[$i/${#steps[@]}] $name (limit ${limit} s)"
  limit=$((limit * ${GPU_CHECK_LIMIT_FACTOR:-1}))
  start=$SECONDS
  if command -v timeout >/dev/null; then
    timeout "$limit" bash -c "$cmd" >"$log" 2>&1
  else
    bash -c "$cmd" >"$log" 2>&1
  fi
  rc=$?
  took=$((SECONDS - start))
  last="$(grep -E '(passed|failed|error|skipped)' "$log" | tail -n 1)"
  if [ "$rc" = 124 ]; then
    verdict=TIME; failed=$((failed + 1)); last="stopped after ${limit} s"
  elif [ "$rc" != 0 ]; then
    verdict=FAIL; failed=$((failed + 1))
  elif [ "$name" != benchmark ] && ! grep -qE '[0-9]+ passed' <<<"$last"; then
    verdict=FAIL; failed=$((failed + 1)); last="nothing passed: $last"
  else
    verdict=PASS
  fi
  [ "$name" = benchmark ] && [ "$verdict" = PASS ] && last="ratios below"
  summary+=("$(printf '%s  %-12s %4ss  %s' "$verdict" "$name" "$took" "$last")")
done

echo
echo "benchmark ($device; each row over its baseline, then Adam-family rows over torch's fused and compiled Adam):"
grep -E '^(optimizer|torch|AdamCM|compiled)|over fixed torch baselines|: [0-9.]+x ' "$logs"/5-benchmark.log | sed 's/^/  /'
echo
echo "summary ($device):"
printf '  %s\n' "${summary[@]}"
echo "logs: $logs"
if [ "$failed" -gt 0 ]; then
  echo "gpu_check: $failed step(s) failed"
  exit 1
fi
echo "gpu_check: all steps passed"
