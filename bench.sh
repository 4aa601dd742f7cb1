#!/usr/bin/env bash
# The project's benchmark (not a test): tuner's load generator against
# perf_analyzer on the same embedded Triton, side by side (bench/bench.py).
#
#   ./bench.sh                    # prints the tables
#   BENCH_JSON=out.json ./bench.sh
#   ./bench.sh --quick            # 1 s windows, one run per point; ./bench.sh --sections loadgen
#   ./bench.sh --repeat 5         # runs of each tool per point (default 3; medians shown)
#
# perf_analyzer: the one on PATH when it runs; else the perf-analyzer wheel's
# binary, installed into a private folder (~/.cache/tuner/perf_analyzer, never
# on PATH). That binary needs glibc >= 2.38: on an older system it runs through
# the loader and libraries of Debian trixie, downloaded as .deb files with a
# private apt state (the system's apt state and / are not touched). When none
# of this works, the benchmark says so and prints tuner's figures alone.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
PA_VERSION=${PA_VERSION:-2.60.0}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/tuner/perf_analyzer
PA_DIR=$CACHE/$PA_VERSION

log() { echo "bench.sh: $*" >&2; }

pa_works() { "$@" --version >/dev/null 2>&1; }

debian_mirror() {
  # The Debian mirror this machine uses (deb822 .sources or one-line .list), else the default.
  local url=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    url=$(awk '/^URIs:/ {for (i = 2; i <= NF; i++) print $i}' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | grep -E '/debian/?$' | head -n1 || true)
  fi
  if [ -z "$url" ]; then
    url=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
          | awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; break } }' \
          | grep -E '/debian/?$' | head -n1 || true)
  fi
  echo "${url:-http://deb.debian.org/debian}"
}

install_pa_wheel() {
  # perf_analyzer's own binary from its wheel, unpacked into $PA_DIR/wheel.
  [ -x "$PA_DIR/wheel/perf_analyzer/bin/perf_analyzer" ] && return 0
  local tmp
  tmp=$(mktemp -d "$CACHE/.wheel.XXXXXX")
  "$PY" -m pip download -q --no-deps --only-binary=:all: --platform manylinux_2_38_x86_64 \
      "perf-analyzer==$PA_VERSION" -d "$tmp" >/dev/null 2>&1 || { rm -rf "$tmp"; return 1; }
  "$PY" -m zipfile -e "$tmp"/perf_analyzer-*.whl "$tmp/wheel" || { rm -rf "$tmp"; return 1; }
  chmod +x "$tmp/wheel/perf_analyzer/bin/perf_analyzer"
  rm -rf "$PA_DIR/wheel"
  mv "$tmp/wheel" "$PA_DIR/wheel"
  rm -rf "$tmp"
}

install_trixie_libs() {
  # Debian trixie's loader and the libraries perf_analyzer links, into $PA_DIR/root.
  [ -x "$PA_DIR/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] && return 0
  command -v apt-get >/dev/null && command -v dpkg >/dev/null || return 1
  local tmp mirror signed=""
  tmp=$(mktemp -d "$CACHE/.apt.XXXXXX")
  mirror=$(debian_mirror)
  [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] \
    && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
  echo "deb ${signed}${mirror} trixie main" > "$tmp/sources.list"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/debs" "$tmp/root"
  local apt=(apt-get -q -o "Dir::Etc::SourceList=$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
             -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o Dir::State::status=/dev/null
             -o APT::Sandbox::User=root)
  if ! "${apt[@]}" update >"$tmp/apt.log" 2>&1 \
     || ! (cd "$tmp/debs" && "${apt[@]}" download libc6 libstdc++6 libgcc-s1 zlib1g libssl3t64 >>"$tmp/apt.log" 2>&1); then
    log "could not download Debian trixie's libraries ($(tail -n1 "$tmp/apt.log"))"
    rm -rf "$tmp"
    return 1
  fi
  for deb in "$tmp"/debs/*.deb; do dpkg -x "$deb" "$tmp/root"; done
  rm -rf "$PA_DIR/root"
  mv "$tmp/root" "$PA_DIR/root"
  rm -rf "$tmp"
}

find_perf_analyzer() {
  # Prints the command prefix that runs perf_analyzer, or nothing.
  if command -v perf_analyzer >/dev/null && pa_works perf_analyzer; then
    echo "perf_analyzer"; return 0
  fi
  mkdir -p "$CACHE" "$PA_DIR"
  install_pa_wheel || { log "could not download the perf-analyzer $PA_VERSION wheel"; return 0; }
  local bin=$PA_DIR/wheel/perf_analyzer/bin/perf_analyzer
  if pa_works "$bin"; then echo "$bin"; return 0; fi
  install_trixie_libs || return 0
  local libs=$PA_DIR/root/usr/lib/x86_64-linux-gnu
  [ -d "$PA_DIR/wheel/perf_analyzer/lib" ] && libs="$libs:$PA_DIR/wheel/perf_analyzer/lib"
  local cmd=("$PA_DIR/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$libs" "$bin")
  if pa_works "${cmd[@]}"; then printf '%q ' "${cmd[@]}"; echo; return 0; fi
  log "perf_analyzer does not run here, even with Debian trixie's libraries"
}

PERF_ANALYZER=$(find_perf_analyzer)
if [ -n "$PERF_ANALYZER" ]; then
  log "perf_analyzer: $PERF_ANALYZER"
else
  log "perf_analyzer is not available: printing tuner's figures only"
fi
export PERF_ANALYZER

args=("$@")
[ -n "${BENCH_JSON:-}" ] && args+=(--json "$BENCH_JSON")
exec "$PY" bench/bench.py "${args[@]}"
