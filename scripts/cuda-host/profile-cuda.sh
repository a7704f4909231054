#!/usr/bin/env bash
# Per-kernel GPU time of one decode step and one long prefill, from Nsight Compute, on a CUDA
# host (see scripts/cuda-host/cuda-host-check.sh for the setup). Kernels are timed one by one, so launch
# gaps are not in these numbers: compare their sum with the measured step time.
#   bash scripts/cuda-host/profile-cuda.sh (--model MODEL.pth | --size 8B) [--compile] [--batch 32] [--prefill 2048]
# (profile_steps.mjs's options). PROFILE_NAME names the files (default: decode and prefill, with
# -compiled), PROFILE_CALLS picks the calls (default "decode:6 prefill:3").
# Writes $OUT/profile-{decode,prefill}[-compiled].csv and prints a summary per kernel name.
set -uo pipefail
OUT=${OUT:-$PWD/cuda-host-logs}
mkdir -p "$OUT"
python=$(node scripts/dev/python.js --which)
suffix=""
for a in "$@"; do [ "$a" = --compile ] && suffix="-compiled"; done
for what in ${PROFILE_CALLS:-decode:6 prefill:3}; do
  kind=${what%%:*}${PROFILE_NAME:+-$PROFILE_NAME}
  csv="$OUT/profile-$kind$suffix.csv"
  QWEN3_PROFILE=$what ncu --profile-from-start off --clock-control none --graph-profiling node \
    --metrics gpu__time_duration.sum --csv --print-units base \
    node scripts/cuda-host/profile_steps.mjs "$@" > "$csv" 2> "$OUT/profile-$kind$suffix.err"
  echo "== $kind$suffix (exit $?)"
  "$python" - "$csv" <<'PY'
import csv, sys, collections, re
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
if not rows: sys.exit(print('no kernels profiled'))
head, body = rows[0], rows[1:]
name, value = head.index('Kernel Name'), head.index('Metric Value')
total = collections.OrderedDict()
for r in body:
    k = re.sub(r'\(.*', '', r[name])[:90]
    n, t = total.get(k, (0, 0.0))
    total[k] = (n + 1, t + float(r[value].replace(',', '')) / 1e3)
all_us = sum(t for _, t in total.values())
print(f'{len(body)} kernels, {all_us:.1f} us of kernel time')
for k, (n, t) in sorted(total.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f'{t:10.1f} us {100 * t / all_us:5.1f}% {n:5d}x  {k}')
PY
done
