#!/usr/bin/env bash
# Runs the addon under AddressSanitizer + UndefinedBehaviorSanitizer: the test files that load
# models, then the fuzz corpus. Clean means every test passes, no fuzz case fails, and no
# sanitizer report was written by any process (vitest workers, CLI children, fuzz children).
#
#   bash scripts/checks/sanitizer-check.sh [--fuzz-cases N] [--skip-build] [test files...]
#
# 1. builds the addon with -fsanitize=address,undefined,float-cast-overflow (GCC leaves the last
#    out of "undefined"; it catches NaN or 1e300 cast to an integer) into build/asan, beside the
#    normal build, which is built too: lib/native.ts loads build/Release/qwen3_torch.node;
# 2. runs node with the ASan runtime preloaded (LD_PRELOAD, as node itself is not instrumented)
#    and QWEN3_TORCH_ADDON naming the sanitized addon, which every node process and worker
#    thread then loads; Python children (fixtures, crafted checkpoints, the libtorch finder's
#    python3) run without the preload, the project's Python (QWEN3_PYTHON) as everywhere else;
# 3. leak detection is off: V8 and libtorch keep global allocations until exit by design.
# Needs g++ with libasan/libubsan and what `npm run build` needs. Takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
fuzz_cases=2000
build=1
tests=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fuzz-cases) fuzz_cases=$2; shift 2 ;;
    --skip-build) build=0; shift ;;
    *) tests+=("$1"); shift ;;
  esac
done
if [ ${#tests[@]} -eq 0 ]; then
  tests=(test/errors.test.ts test/generate.test.ts test/parity.test.ts test/compile.test.ts test/hostile.test.ts
         test/boundary.test.ts test/lifecycle.test.ts test/fuzz.test.ts test/slots.test.ts test/slot-speculation.test.ts)
fi
out=$root/build/asan
start=$SECONDS

if [ $build -eq 1 ]; then
  echo "== building the normal addon and the sanitized one (build/asan)"
  npm run --silent build
  # The libtorch the normal build was made for (the finder's answer, handed to CMake as LIBTORCH).
  libtorch=$(node dist/addon/libtorch.js root)
  # cmake-js passes its own CMAKE_CXX_FLAGS after ours, so the flags ride on the build type's.
  flags="-O1 -g -fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=undefined,float-cast-overflow"
  # configure every time: `compile` would keep a cache made with other flags.
  { LIBTORCH=$libtorch npx cmake-js configure --out "$out" --config RelWithDebInfo \
      --CDCMAKE_CXX_FLAGS_RELWITHDEBINFO="$flags" \
      --CDCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined,float-cast-overflow" &&
    LIBTORCH=$libtorch npx cmake-js build --out "$out" --config RelWithDebInfo --parallel 2; } >"$out.log" 2>&1 \
    || { tail -40 "$out.log"; exit 1; }
fi
addon=$(find "$out" -name qwen3_torch.node -type f | head -1)
[ -n "$addon" ] || { echo "no sanitized addon under $out"; exit 1; }
nm -D "$addon" | grep __asan_report >/dev/null || { echo "$addon is not instrumented by ASan"; exit 1; }
echo "sanitized addon: $addon ($((SECONDS - start)) s so far)"

# Python is not under test, and an uninstrumented interpreter gains nothing from the preload:
# wrappers without it for python3 on PATH and for the project's Python.
mkdir -p "$out/bin"
wrap() { # wrap NAME PYTHON
  printf '#!/bin/sh\nexec env -u LD_PRELOAD '\''%s'\'' "$@"\n' "$2" >"$out/bin/$1"
  chmod +x "$out/bin/$1"
}
if command -v python3 >/dev/null; then wrap python3 "$(command -v python3)"; fi
wrap project-python "$(node scripts/dev/python.js --which)"

reports=$out/reports
rm -rf "$reports" && mkdir -p "$reports"
export LD_PRELOAD=$(g++ -print-file-name=libasan.so)
export QWEN3_TORCH_ADDON=$addon
export PATH="$out/bin:$PATH"
export QWEN3_PYTHON=$out/bin/project-python
# quarantine_size_mb: freed memory ASan holds back to catch use-after-free; the default 256 MiB
# would read as a leak in the tests that measure RSS around load/dispose cycles.
# abort_on_error: a finding ends the process with SIGABRT, which no test mistakes for the exit
# code 1 some of them expect. ASan also writes its reports under $reports; UBSan (GCC 12) only
# prints to stderr, where the test or fuzz output shows it.
export ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=32:allow_user_segv_handler=1:abort_on_error=1:log_path=$reports/asan:log_exe_name=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1"
# Proof that the swap works: the process has the sanitized addon mapped, not the normal one.
node -e "require('./dist/native.js').native();
  const maps = require('node:fs').readFileSync('/proc/self/maps', 'utf8');
  if (!maps.includes(process.argv[1]) || maps.includes('/build/Release/qwen3_torch.node')) process.exit(1);" "$addon" \
  || { echo "node did not load the sanitized addon"; cat "$reports"/* 2>/dev/null; exit 1; }

status=0
t0=$SECONDS
echo "== tests under ASan + UBSan: ${tests[*]}"
npx vitest run "${tests[@]}" || status=1
echo "tests: $((SECONDS - t0)) s"
t0=$SECONDS
echo "== fuzz corpus under ASan + UBSan: $fuzz_cases cases"
node scripts/checks/fuzz_checkpoints.mjs --cases "$fuzz_cases" --seed 1 --timeout-ms 60000 || status=1
echo "fuzz: $((SECONDS - t0)) s"

# A report can come from a child whose failure a test expected for other reasons: read them all.
if compgen -G "$reports/*" >/dev/null; then
  echo "== sanitizer reports:"
  for f in "$reports"/*; do echo "--- $f"; head -60 "$f"; done
  status=1
fi
echo "sanitizer check: $([ $status -eq 0 ] && echo clean || echo FAILED) in $((SECONDS - start)) s"
exit $status
