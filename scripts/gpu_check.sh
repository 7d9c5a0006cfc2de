#!/usr/bin/env bash
# Build kernels-core with CUDA, then run the `gpu` tests and the GPU benchmarks.
#
# Works on a machine that has python3 with a CUDA build of torch, CMake, nvcc and pybind11 but
# no package index (typical of shared GPU machines): the module is built with plain CMake and
# the packages run from this checkout, nothing is installed. Also what `nox -s gpu` runs.
#
#   scripts/gpu_check.sh                    everything
#   KC_CUDA_ARCHS=90a-real scripts/gpu_check.sh     build only for the GPU at hand (faster)
#   PYTHON=/path/to/python scripts/gpu_check.sh
#   GPU_CHECK_OUT=dir scripts/gpu_check.sh  where logs and benchmark reports go (default build/gpu)
#   GPU_CHECK_TIMEOUT=300 scripts/gpu_check.sh   seconds allowed per test folder and per benchmark
#   GPU_CHECK_TEST_TIMEOUT=60 scripts/gpu_check.sh  seconds per test (needs pytest-timeout)
#   GPU_CHECK_TESTS="kernels-core/tests" scripts/gpu_check.sh   test folders to run
#   GPU_CHECK_BENCH="kernels-core/benchmarks/bench_attention.py" scripts/gpu_check.sh   benchmarks to run
#   GPU_CHECK_WHEELS=wheels scripts/gpu_check.sh   install every wheel in that folder (a path
#       relative to the repository root, or absolute) into $GPU_CHECK_OUT/site first, without an
#       index or dependency resolution: how gsplat (the renderer parity test) and diffusers reach a
#       machine without a package index. Put only packages the machine lacks there, their missing
#       dependencies included (gsplat: jaxtyping, wadler_lindig, rich, markdown_it_py, mdurl,
#       pygments, ninja); never torch, which they would shadow. gsplat compiles its CUDA code on
#       first use (minutes), so allow GPU_CHECK_TIMEOUT=600 for shared/tests then.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-build/gpu}
LIMIT=${GPU_CHECK_TIMEOUT:-300}   # a hung kernel must not eat the machine's time
mkdir -p "$OUT"

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA GPU is visible to $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not installed')); nothing to run."
  exit 0
fi
command -v nvcc >/dev/null || { echo "gpu_check: nvcc is not on PATH; the CUDA kernels cannot be built" >&2; exit 1; }
command -v cmake >/dev/null || { echo "gpu_check: cmake is not on PATH" >&2; exit 1; }

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(0))'

echo "== build kernels-core (CUDA architectures: ${KC_CUDA_ARCHS:-default})"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
start=$(date +%s)
cmake -S kernels-core -B "$OUT/cmake" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DKC_CUDA=ON \
  ${KC_CUDA_ARCHS:+-DKC_CUDA_ARCHS="$KC_CUDA_ARCHS"} \
  -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
  >"$OUT/cmake-configure.log"
cmake --build "$OUT/cmake" --parallel "$(nproc)" >"$OUT/cmake-build.log"
echo "built in $(( $(date +%s) - start )) s"

# Stage the Python package next to the freshly built module; run everything from there.
stage="$(cd "$OUT" && pwd)/python"
rm -rf "$stage" && mkdir -p "$stage"
cp -r kernels-core/src/kernels_core "$stage/"
cp "$OUT"/cmake/_C*.so "$stage/kernels_core/"
packages_src=$(printf "%s:" "$PWD"/packages/*/src)
export PYTHONPATH="$stage:$PWD/shared/src:${packages_src%:}${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  echo "== optional packages from $GPU_CHECK_WHEELS"
  compgen -G "$GPU_CHECK_WHEELS/*.whl" >/dev/null \
    || { echo "gpu_check: GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS holds no .whl files" >&2; exit 1; }
  site="$(cd "$OUT" && pwd)/site"
  rm -rf "$site"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$site" "$GPU_CHECK_WHEELS"/*.whl
  export PYTHONPATH="$PYTHONPATH:$site"
  export PATH="$site/bin:$PATH"
fi
export HF_HUB_OFFLINE=1
loaded=$("$PYTHON" -c 'import kernels_core; print(kernels_core.__file__)')
case "$loaded" in
  "$stage"/*) ;;
  *) echo "gpu_check: kernels_core is imported from $loaded, not from the fresh build; uninstall that copy first" >&2
     exit 1 ;;
esac

"$PYTHON" -m kernels_core info | tee "$OUT/info.txt"

echo "== gpu tests"
status=0
for tests in ${GPU_CHECK_TESTS:-kernels-core/tests shared/tests tests packages/*/tests}; do
  [ -d "$tests" ] || continue
  timeout "$LIMIT" "$PYTHON" -m pytest "$tests" -m gpu -q -rfE -p no:cacheprovider -o addopts="" \
      ${GPU_CHECK_TEST_TIMEOUT:+--timeout "$GPU_CHECK_TEST_TIMEOUT"} 2>&1 \
    | tee -a "$OUT/gpu-tests.log" \
    || { rc=${PIPESTATUS[0]}; [ "$rc" -eq 5 ] || status=1; }   # 5: no gpu test in that folder
done

echo "== gpu benchmarks"
for bench in ${GPU_CHECK_BENCH:-kernels-core/benchmarks/bench_*.py packages/*/benchmarks/bench_*.py}; do
  [ -f "$bench" ] || continue
  timeout "$LIMIT" "$PYTHON" "$bench" --device cuda --out "$OUT/benchmarks" || status=1
done
echo "gpu_check: reports in $OUT/benchmarks; to publish, copy its *_cuda.* files to docs/benchmarks/ and run"
echo "  python kernels-core/benchmarks/bench_attention.py --compose-only   (rebuilds docs/benchmarks/attention.md)"
exit $status
