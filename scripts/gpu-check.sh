#!/usr/bin/env bash
# GPU check: tuner against a real GPU in one short run, or the same flow on the CPU.
#
#   bash scripts/gpu-check.sh prepare [--python 3.12]
#       here (PyPI reachable): fills .gpukit/ (git-ignored) with what a GPU machine
#       lacks, sized to travel in one run with the working tree (< 64 MiB), and
#       prints the sizes. tuner itself travels as the working tree.
#   bash scripts/gpu-check.sh run [--out DIR] [--base-python PY]
#       on the GPU machine (no network; .gpukit/ carried): installs .gpukit/ over the
#       Python that holds PyTorch (default python3), then `tuner sweep` of
#       profiles/resnet50_torch.toml (KIND_GPU, a binding budget, goal min_energy) and
#       `tuner measure` at a few levels on the embedded Triton; results, summary,
#       report and server log land in $OUT (or --out). About 6-7 minutes.
#   bash scripts/gpu-check.sh --cpu [--install-torch] [--out DIR]
#       anywhere: prepare for this Python, then the same run on the CPU with
#       profiles/resnet50_torch_quick.toml (KIND_CPU, two candidates, short windows).
#       GPU telemetry must then say "not available". --install-torch installs the
#       CPU build of PyTorch (torch==2.13.0+cpu) into .venv when it is missing.
#
# Exit status: 0 when the check passed (see "CHECK" at the end of the output).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KIT=${GPUKIT_DIR:-$ROOT/.gpukit}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tuner/gpukit-download
PY_HERE=${PYTHON:-$ROOT/.venv/bin/python}
PYTRITON=nvidia-pytriton==0.7.0
# Pinned to what the tests run with. The GPU image has the rest of tuner's needs
# (numpy, pandas, typer, rich, uvloop, prometheus-client); its grpcio/protobuf may be
# older than tritonclient's generated code accepts, so those travel too.
WHEELS=(tritonclient==2.73.0 grpcio==1.85.3 protobuf==6.33.6 python-rapidjson==1.25 plotly==7.1.0
        narwhals==2.29.0)
LIMIT_MIB=64
STAMP=$(date -u +%Y%m%d-%H%M%S)

say() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }
die() { echo "gpu-check: $*" >&2; exit 2; }
mib() { echo $(( ($1 + 1048575) / 1048576 )); }

# ---------------------------------------------------------------- prepare

trim_pytriton() {  # keep one Python's backend stub; drop the libpython only another stub needs
  "$PY_HERE" - "$1" "$2" "$3" <<'EOF'
import re, sys, zipfile
src, dst, keep = sys.argv[1:4]
stub = re.compile(r"pytriton/tritonserver/python_backend_stubs/([0-9.]+)/")
libpy = re.compile(r"nvidia_pytriton\.libs/libpython3-[0-9a-f]+\.(\d+)\.so")
def dropped(name):
    m, n = stub.match(name), libpy.match(name)
    return bool(m and m.group(1) != keep) or bool(n and "3." + n.group(1) != keep)
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zout:
    for info in zin.infolist():
        if dropped(info.filename):
            continue
        data = zin.read(info)
        if info.filename.endswith(".dist-info/RECORD"):
            kept = [line for line in data.decode().splitlines() if not dropped(line.split(",")[0])]
            data = ("\n".join(kept) + "\n").encode()
        zout.writestr(info, data)
EOF
}

tree_bytes() {  # what a run carries besides .gpukit: tracked and untracked-not-ignored files
  git ls-files -z --cached --others --exclude-standard 2>/dev/null \
    | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}'
}

prepare() {
  local pyver=$1 log
  mkdir -p "$CACHE" && rm -rf "$KIT/wheels" && mkdir -p "$KIT/wheels"
  log=$(mktemp)
  if ! "$PY_HERE" -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check \
      --python-version "$pyver" --implementation cp --platform manylinux_2_35_x86_64 \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      -d "$CACHE" "$PYTRITON" "${WHEELS[@]}" >"$log" 2>&1; then
    cat "$log" >&2; die "could not download the wheels for Python $pyver"
  fi
  rm -f "$log"
  local spec name file
  for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}; name=${name//-/_}
    file=$(ls "$CACHE"/${name}-${spec##*==}-*.whl 2>/dev/null | grep -E "(py3-none|cp${pyver/./}|abi3)" | head -1)
    [ -n "$file" ] || die "no wheel of $spec for Python $pyver in $CACHE"
    cp "$file" "$KIT/wheels/"
  done
  file=$(ls "$CACHE"/nvidia_pytriton-0.7.0-*.whl | head -1)
  trim_pytriton "$file" "$KIT/wheels/$(basename "$file")" "$pyver"
  echo "$pyver" >"$KIT/python-version"
  local kit_b tree_b
  echo "kit for Python $pyver in $KIT (git-ignored; name .gpukit in the run's carry):"
  (cd "$KIT/wheels" && ls -l *.whl | awk '{printf "  %8.1f MiB  %s\n", $5 / 1048576, $9}')
  kit_b=$(du -sb "$KIT" | cut -f1); tree_b=$(tree_bytes)
  echo "  kit $(mib "$kit_b") MiB + working tree $(mib "$tree_b") MiB = $(mib $((kit_b + tree_b))) MiB per run (limit $LIMIT_MIB MiB; one run)"
  [ $((kit_b + tree_b)) -lt $((LIMIT_MIB * 1048576)) ] || die "over $LIMIT_MIB MiB: leave plotly out (render with \`tuner report\` here)"
}

# -------------------------------------------------------------------- run

setup_env() {  # a venv whose own site-packages (the kit) come before the base Python's (PyTorch)
  local want have site sites
  [ -f "$KIT/python-version" ] || die "no kit in $KIT: run \`bash scripts/gpu-check.sh prepare\` first"
  want=$(cat "$KIT/python-version")
  have=$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$want" = "$have" ] || die "the kit is for Python $want, $BASE_PY is $have: prepare --python $have"
  ENV=$WORK/env
  # The backend stub's Python is the first `python3` on PATH (tuner puts this venv's bin
  # first for the server), so the stub sees the kit and the base's PyTorch the same way.
  "$BASE_PY" -m venv --without-pip --clear "$ENV"
  site=$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$BASE_PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$site" "$KIT"/wheels/*.whl
  sites=$("$BASE_PY" -c 'import site; print(repr(site.getsitepackages()))')
  printf '%s\nimport site; list(map(site.addsitedir, %s))\n' "$ROOT" "$sites" >"$site/zz_gpukit_base.pth"
  PY=$ENV/bin/python
}

preflight() {
  "$PY" - <<'EOF'
import importlib
for name in ("tuner", "tritonclient.grpc", "grpc", "google.protobuf", "plotly", "numpy", "pandas",
             "prometheus_client", "typer", "rich", "uvloop", "torch"):
    mod = importlib.import_module(name)
    print(f"  {name:18} {getattr(mod, '__version__', '')}  {getattr(mod, '__file__', '')}")
from tuner.server.install import embedded_install
inst = embedded_install()
print(f"  tritonserver {inst.binary}\n  LD_LIBRARY_PATH+={inst.env.get('LD_LIBRARY_PATH', '')}")
print(f"STUB={inst.backend_dir}/python/triton_python_backend_stub")
print(f"LIBS={inst.env.get('LD_LIBRARY_PATH', '')}")
EOF
}

check_stub_libs() {  # the stub links the base Python's libpython, which some images keep elsewhere
  local info stub libs missing found
  info=$(preflight) || die "the kit's environment does not import (above)"
  echo "$info" | grep -v -e '^STUB=' -e '^LIBS='
  stub=$(echo "$info" | sed -n 's/^STUB=//p'); libs=$(echo "$info" | sed -n 's/^LIBS=//p')
  command -v ldd >/dev/null || { echo "  (no ldd: stub libraries not checked)"; return; }
  missing=$(LD_LIBRARY_PATH="$libs:${LD_LIBRARY_PATH:-}" ldd "$stub" | awk '/not found/ {print $1}')
  [ -z "$missing" ] && { echo "  backend stub: every library found"; return; }
  echo "  backend stub lacks: $missing"
  for lib in $missing; do
    found=$(find "$("$BASE_PY" -c 'import sys; print(sys.base_prefix)')" /usr/lib /usr/local/lib /opt \
            -name "$lib" 2>/dev/null | head -1)
    [ -n "$found" ] || die "$lib not found: the Python backend cannot start on this machine"
    export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "  using $found"
  done
}

check_device() {
  df -h /dev/shm 2>/dev/null | tail -1 | awk '{print "  /dev/shm " $2 " (" $4 " free)"}' || true
  if [ "$MODE" = gpu ]; then
    command -v nvidia-smi >/dev/null && nvidia-smi -L | sed 's/^/  /' || true
    "$PY" -c 'import torch; assert torch.cuda.is_available(), "PyTorch sees no GPU"; print("  torch.cuda:", torch.cuda.get_device_name(0))' \
      || die "no GPU for PyTorch; on a CPU host use --cpu"
  fi
}

tuner_step() {  # a tuner command under a deadline; SIGTERM unwinds it like Ctrl-C (config restored)
  local limit=$1; shift
  set +e
  timeout -s TERM -k 30 "$limit" "$PY" -m tuner.cli "$@"
  local rc=$?
  set -e
  [ $rc -eq 124 ] && echo "  (stopped at its ${limit}s deadline)"
  return $rc
}

verdict() {  # per point: throughput, p99, GPU figures; then whether the check passed
  "$PY" - "$MODE" "$WORK/sweep" "$WORK/measure.json" <<'EOF'
import json, sys
from pathlib import Path
from tuner.results.stats import gpu_point_metrics
from tuner.results.store import load_results
mode, run, measured = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
problems, rows = [], []
if not (run / "summary.json").exists():
    problems.append("the sweep wrote no summary.json")
pts = [m for m in load_results(run).points if m.status == "ok" and m.windows] if (run / "results.jsonl").exists() else []
print(f"{'candidate':28} {'conc':>4} {'infer/s':>8} {'p99 ms':>8} {'GPU %':>6} {'MiB':>7} {'W':>6} {'J/infer':>8}")
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
for m in pts:
    s, g = m.summary(), gpu_point_metrics(m.summary().telemetry)
    rows.append(g)
    util = g["gpu_utilization"] * 100 if g["gpu_utilization"] is not None else None
    print(f"{m.candidate_id[:28]:28} {m.concurrency:>4} {s.throughput_infer_per_s:>8.1f} {s.latency_ms['p99']:>8.2f} "
          f"{f(util):>6} {f(g['memory_used_mib'], 0):>7} {f(g['power_w']):>6} {f(g['energy_j_per_infer'], 4):>8}")
if not pts:
    problems.append("no load point was measured")
if measured.exists():
    for p in json.loads(measured.read_text()).get("points", []):
        g = gpu_point_metrics(p.get("telemetry"))
        print(f"measure c{p.get('concurrency')}: {p.get('throughput_infer_per_s', 0):.1f} infer/s, "
              f"J/infer {f(g['energy_j_per_infer'], 4)}, {f(g['power_w'])} W")
else:
    problems.append("tuner measure wrote no JSON")
summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
print("recommendation:", summary.get("reason", "-"))
for u in summary.get("unchecked", []):
    print("not checked:", u)
log = (run / "tritonserver.log").read_text(errors="replace") if (run / "tritonserver.log").exists() else ""
device = "device cuda" if mode == "gpu" else "device cpu"
if f"resnet50_torch: {device}" not in log:
    problems.append(f"the server log never shows 'resnet50_torch: {device}'")
if mode == "gpu":
    if not any(g["gpu_count"] for g in rows):
        problems.append("no GPU telemetry in any window")
    for key in ("gpu_utilization", "memory_used_mib", "power_w", "energy_j_per_infer"):
        if rows and all(g[key] is None for g in rows):
            why = rows[0]["energy_unavailable"] if key == "energy_j_per_infer" else "absent"
            problems.append(f"{key} not available at any point ({why})")
else:
    reasons = {g["energy_unavailable"] for g in rows if not g["gpu_count"]}
    if any(g["gpu_count"] for g in rows):
        problems.append("a CPU run showed GPU telemetry")
    print("GPU telemetry: not available:", "; ".join(sorted(reasons)) or "-")
print("CHECK " + ("FAILED: " + "; ".join(problems) if problems else "PASSED"))
sys.exit(1 if problems else 0)
EOF
}

collect() {  # at most 8 files, none over 16 MiB, flat: what the device tool brings back
  local run=$WORK/sweep f
  mkdir -p "$OUT"
  for f in summary.json report.html; do [ -f "$run/$f" ] && cp "$run/$f" "$OUT/"; done
  if [ -f "$run/results.jsonl" ]; then
    if [ "$(stat -c %s "$run/results.jsonl")" -gt $((15 * 1048576)) ]; then gzip -c "$run/results.jsonl" >"$OUT/results.jsonl.gz"
    else cp "$run/results.jsonl" "$OUT/"; fi
  fi
  [ -f "$run/tritonserver.log" ] && tail -c $((8 * 1048576)) "$run/tritonserver.log" >"$OUT/tritonserver.log"
  [ -f "$WORK/measure.json" ] && cp "$WORK/measure.json" "$OUT/"
  [ -d "$run" ] && tar -C "$WORK" --exclude=sweep/model_repository -czf "$OUT/run.tar.gz" sweep
  cp "$WORK/kit.log" "$OUT/kit.log"
  echo "results in $OUT:"; ls -l "$OUT" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
}

run() {
  mkdir -p "$WORK" "$OUT"
  exec > >(tee -a "$WORK/kit.log") 2>&1
  TEE_PID=$!
  local profile=profiles/resnet50_torch.toml sweep_s=290 measure_s=70 levels=1,16,64 window=2.0 rc=0
  if [ "$MODE" = cpu ]; then profile=profiles/resnet50_torch_quick.toml sweep_s=150 measure_s=60 levels=1,4 window=1.0; fi
  say "environment ($MODE, base $BASE_PY, work $WORK)"; setup_env
  say "preflight"; check_stub_libs; check_device
  # The confirmation rounds (re-measuring the winner against the baseline) would not fit the
  # GPU machine's time: this check is about the GPU path, not about confidence intervals.
  local help no_confirm=()
  help=$("$PY" -m tuner.cli sweep --help 2>/dev/null || true)
  case "$help" in *--no-confirm*) no_confirm=(--no-confirm) ;; esac
  say "sweep $profile ${no_confirm[*]}"
  tuner_step "$sweep_s" sweep "$profile" --out "$WORK/sweep" "${no_confirm[@]}" || rc=$?
  if [ $rc -ne 0 ] && [ -s "$WORK/sweep/results.jsonl" ]; then "$PY" -m tuner.cli report "$WORK/sweep" || true; fi
  say "measure resnet50_torch at $levels"
  tuner_step "$measure_s" measure resnet50_torch --concurrency "$levels" --window-s "$window" --warmup-s 1 \
    --max-windows 4 --json "$WORK/measure.json" --out "$WORK/measure" || true
  say "check"; rc=0; verdict || rc=$?
  say "collect"; collect
  echo "gpu-check ($MODE) done in ${SECONDS}s"
  return $rc
}

install_torch() {
  "$BASE_PY" -c 'import torch' 2>/dev/null && return
  # The exact CPU build only: a bare `torch` would fetch a CUDA build of several GB.
  "$BASE_PY" -m pip install -q --disable-pip-version-check "torch==2.13.0+cpu" \
    || die "no CPU build of PyTorch 2.13.0 to install (pip install torch==2.13.0+cpu failed)"
}

# ------------------------------------------------------------------- main

CMD=run MODE=gpu OUT=${OUT:-} BASE_PY= PYVER=3.12 INSTALL_TORCH=0
case "${1:-}" in
  prepare|run) CMD=$1; shift ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --out) OUT=$2; shift ;;
    --python) PYVER=$2; shift ;;
    --base-python) BASE_PY=$2; shift ;;
    --install-torch) INSTALL_TORCH=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

finish() {  # the log's last lines reach the terminal; a work folder of our own goes (its env is ~150 MB)
  if [ -n "${TEE_PID:-}" ]; then exec >&- 2>&-; wait "$TEE_PID" 2>/dev/null || true; fi
  if [ -z "${GPUKIT_WORK:-}" ] && [ -n "${WORK:-}" ]; then rm -rf "$WORK"; fi
}

if [ "$CMD" = prepare ]; then prepare "$PYVER"; exit 0; fi
if [ "$MODE" = cpu ]; then
  BASE_PY=${BASE_PY:-$PY_HERE}
  [ "$INSTALL_TORCH" = 1 ] && install_torch
  "$BASE_PY" -c 'import torch' 2>/dev/null || die "PyTorch is not importable by $BASE_PY (add --install-torch)"
fi
WORK=${GPUKIT_WORK:-$(mktemp -d /tmp/tuner-gpukit.XXXXXX)}
trap finish EXIT
if [ "$MODE" = cpu ]; then
  KIT=${GPUKIT_DIR:-$WORK/kit}  # its own kit: a prepared GPU kit in .gpukit/ stays as it is
  say "prepare (Python of $BASE_PY)"
  prepare "$("$BASE_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  OUT=${OUT:-$ROOT/reports/gpu-check-cpu-$STAMP}
else
  BASE_PY=${BASE_PY:-python3}
  OUT=${OUT:-$ROOT/reports/gpu-check-$STAMP}
fi
run
