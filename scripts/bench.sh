#!/usr/bin/env bash
# make bench: measure envlet against the floor and against the tools people
# use today, and write BENCHMARKS.md. See bench/doc.go for the harnesses.
#
#   scripts/bench.sh                 every benchmark -> BENCHMARKS.md
#   scripts/bench.sh -only load      some sections   -> BENCHMARKS.tmp
#   (any other flag goes to bench/benchrun: -load-duration, -runs, -fanout-reps, ...)
#
# Needs root: load and fan-out clients run as other uids. Installs what is
# missing: hyperfine, age, direnv, perf (Debian) and, once, into
# $ENVLET_BENCH_CACHE (default ~/.cache/envlet-bench): sops (go install) and
# dotenvx (npm). A peer that fails to install is reported as not measured.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: run as root (load clients run as other uids)" >&2
  exit 2
fi
cache=${ENVLET_BENCH_CACHE:-$HOME/.cache/envlet-bench}
mkdir -p "$cache"
log() { echo "bench: $*" >&2; }

# Debian packages, only when missing.
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v age-keygen >/dev/null || need+=(age)
command -v direnv >/dev/null || need+=(direnv)
command -v perf >/dev/null || need+=(linux-perf)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} (apt-get)"
  apt-get update -qq >/dev/null 2>&1 || true
  for p in "${need[@]}"; do
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null 2>&1 || log "could not install $p; going on without it"
  done
fi
command -v hyperfine >/dev/null || { echo "bench.sh: hyperfine is required" >&2; exit 1; }

# Heavy peers, installed once into the cache and reused; only the launch
# section uses them, so `-only` without launch does not wait for them.
peers=1
if [[ " $* " == *" -only "* || " $* " == *" -only="* ]] && [[ " $* " != *launch* ]]; then
  peers=0
fi
if [ "$peers" = 1 ] && [ ! -x "$cache/bin/sops" ]; then
  log "installing sops into $cache/bin (once; takes minutes)"
  GOBIN="$cache/bin" CGO_ENABLED=0 go install -trimpath "github.com/getsops/sops/v3/cmd/sops@${SOPS_VERSION:-latest}" >"$cache/sops-install.log" 2>&1 ||
    log "sops did not install (see $cache/sops-install.log); it will be reported as not measured"
fi
if [ "$peers" = 1 ] && [ ! -x "$cache/npm/node_modules/.bin/dotenvx" ] && command -v npm >/dev/null; then
  log "installing dotenvx into $cache/npm (once)"
  npm install --silent --no-audit --no-fund --prefix "$cache/npm" "@dotenvx/dotenvx@${DOTENVX_VERSION:-latest}" >"$cache/dotenvx-install.log" 2>&1 ||
    log "dotenvx did not install (see $cache/dotenvx-install.log); it will be reported as not measured"
fi

# The harnesses. (make bench has built bin/ already; a direct run builds it too.)
[ -x bin/envletd ] && [ -x bin/envlet ] && [ -x bin/envlet-exec ] || make -s build
mkdir -p bin/bench
go build -o bin/bench/ ./bench/benchrun ./bench/floorserver ./bench/syncfloor
# envletd with Go profiles, for the memory section's heap profile; optional.
go build -o bin/bench/ ./bench/agentprof || { log "bench/agentprof did not build: no heap profile"; rm -f bin/bench/agentprof; }
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o bin/bench/barelauncher ./bench/barelauncher

out=BENCHMARKS.md
args=("$@")
gobench=""
if [[ " $* " == *" -only "* || " $* " == *" -only="* ]]; then
  out=BENCHMARKS.tmp
else
  gobench=$(mktemp)
  trap 'rm -f "$gobench"' EXIT
  # Every Go benchmark of the tree: the parts', then the end-to-end ones of
  # the features (each with the -benchtime its comment gives).
  gobenchrun() { # SECONDS ARGS...: go test ARGS, ended after SECONDS
    local limit=$1
    shift
    log "go test $*"
    echo "\$ go test $*" >>"$gobench"
    # go test's -timeout does not cover benchmarks: timeout(1) ends the
    # whole process group of one that hangs, so the run goes on.
    timeout -k 10 "$limit" go test "$@" 2>&1 | grep -E '^(Benchmark|pkg:|FAIL|---|ok )' >>"$gobench" ||
      echo "(failed or timed out after $limit s)" >>"$gobench"
  }
  # -p 1: one package at a time, so they do not measure each other.
  gobenchrun 300 -p 1 -run '^$' -bench . -benchmem -benchtime 1s ./cache/ ./fetch/ ./agent/... ./bench/...
  gobenchrun 120 -run '^$' -bench . -benchtime 300x ./launcher/
  gobenchrun 180 -run '^$' -bench 'MountUpdate|WatchRestart' -benchtime 300x ./e2e/
  gobenchrun 180 -run '^$' -bench 'EtcdPropagation' -benchtime 1x ./e2e/
  # The other harnesses under bench/ (issue 4's flood of misbehaving peers).
  if [ -d bench/flood ]; then
    log "bench/flood"
    echo "\$ bin/bench/flood -bin bin -duration 2s" >>"$gobench"
    { go build -o bin/bench/flood ./bench/flood && timeout -k 10 120 bin/bench/flood -bin bin -duration 2s; } >>"$gobench" 2>&1 ||
      echo "(failed or timed out after 120 s)" >>"$gobench"
  fi
  args+=(-go-bench "$gobench")
fi
bin/bench/benchrun -out "$out" -cache "$cache" "${args[@]}"
log "results in $out"
