#!/usr/bin/env bash
# GPU throughput check, one short script for a session that has an NVIDIA GPU (H200, sm_90):
# builds llama-cpp-python with CUDA, writes the `20b-shape` synthetic model (gpt-oss-20b's exact
# tensor shapes, MXFP4 experts, ~11.3 GiB) and runs `edge-guard bench` on it, plus `mini` for
# comparison. Results (JSON + tables + logs) go to $OUT.
#
# The GPU machine has no network. Bring a wheelhouse made where PyPI is reachable, e.g.:
#   pip download -d wheelhouse --no-binary llama-cpp-python llama-cpp-python==0.3.36
#   pip download -d wheelhouse scikit-build-core cmake ninja   # llama-cpp-python's build deps
#   pip wheel -w wheelhouse .                                   # edge_guard and its deps
# and run:  WHEELHOUSE=wheelhouse OUT=/tmp/gpu_out bash scripts/gpu_bench.sh
# SKIP_BUILD=1 reuses an installed llama-cpp-python that already reports GPU offload.
# Budget: the CUDA build took 5.0 min with 16 jobs; the model ~10 s; each bench ~1-2 min.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_bench_out}"
WHEELHOUSE="${WHEELHOUSE:-$PWD/wheelhouse}"
JOBS="${JOBS:-$(nproc)}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export EDGE_GUARD_HOME="${EDGE_GUARD_HOME:-/tmp/edge_guard_gpu_home}"  # the 11 GiB model stays out of $OUT
log() { echo "[gpu_bench $(date +%T)] $*" | tee -a "$OUT/log.txt" >&2; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true

if [ -z "${SKIP_BUILD:-}" ]; then
  log "venv + CUDA build of llama-cpp-python ($JOBS jobs)"
  "$PY" -m venv .venv-gpu
  . .venv-gpu/bin/activate
  PIP=(pip install -q --no-index --find-links "$WHEELHOUSE")
  CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" FORCE_CMAKE=1 \
    "${PIP[@]}" --no-cache-dir "llama-cpp-python==0.3.36" 2>&1 | tail -5 | tee -a "$OUT/log.txt"
  "${PIP[@]}" -e . 2>&1 | tail -3 | tee -a "$OUT/log.txt"
fi
"$PY" -c "import llama_cpp as l; assert l.llama_supports_gpu_offload(), 'no GPU offload in this build'; print(l.__version__, l.llama_print_system_info().decode())" | tee -a "$OUT/log.txt"

run() {  # name, then edge-guard bench arguments
  local name=$1; shift
  log "bench $name: $*"
  edge-guard bench "$@" --json > "$OUT/$name.json" 2> >(tee -a "$OUT/log.txt" >&2)
  "$PY" - "$OUT/$name.json" > "$OUT/$name.txt" <<'EOF'
import json, sys
from edge_guard.bench.core import format_table
print(format_table(json.load(open(sys.argv[1]))))
EOF
  cat "$OUT/$name.txt"
}

# The default workload (1,000-token policy, 64-token texts, 16 output tokens), GPU-sized.
run 20b-shape-p16 --synth 20b-shape --n 512 --parallel 16 --baseline-n 16
run 20b-shape-p64 --synth 20b-shape --n 512 --parallel 64 --baseline-n 8 --variants sequential,parallel
run mini-p16 --synth mini --n 512 --parallel 16 --baseline-n 16
log "done: $OUT"
