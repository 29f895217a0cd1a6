#!/usr/bin/env bash
# make demo: an agent on the embedded store, a few layers of variables, and a
# workload started through envlet-exec that prints the environment it got.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
dir=$(mktemp -d /tmp/envlet-demo.XXXXXX)
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf '$'; printf ' %q' "${@/#$bin\//}"; printf '\n'; "$@"; }

say "start the agent in -dev mode: state, key and sockets in $dir"
exec 3< <(exec "$bin/envletd" -dev -dir "$dir" 2>"$dir/agent.log")
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; rm -rf "$dir"' EXIT
read -r line1 <&3 && read -r line2 <&3 || { cat "$dir/agent.log"; exit 1; }
echo "$line1"; echo "$line2"
eval "$line1"; eval "$line2"
me=$("$bin/envlet" whoami --json | sed -n 's/.*"user": "\(.*\)".*/\1/p')
uid=$(id -u)

say "a project with $me as a member, and variables in every layer"
run "$bin/envlet" project create fraud
run "$bin/envlet" project add-member fraud "$me"
run "$bin/envlet" project env set fraud DATA_BUCKET s3://fraud-data
run "$bin/envlet" project env set fraud LOG_LEVEL info
run "$bin/envlet" project env set fraud WANDB_MODE online
run "$bin/envlet" env set LOG_LEVEL debug
run "$bin/envlet" env set HF_TOKEN hf_demo_not_a_real_token
run "$bin/envlet" env set PROJECT_ID stolen      || true   # reserved: refused
run "$bin/envlet" env list

say "register a workload for uid $uid (runtime and execution variables; an empty value clears)"
cat >"$dir/train.json" <<JSON
{"id": "train-42", "user": "$me", "project": "fraud", "match": {"uid": $uid},
 "runtime": {"LR": "0.1", "WANDB_MODE": ""}, "execution": {"SEED": "7", "LR": "0.05"}}
JSON
run "$bin/envlet" workload register "$dir/train.json"

say "what the workload will get, and where each name comes from"
run "$bin/envlet" explain --workload train-42

say "run it: envlet-exec asks the agent, then execs the program with the merged env"
export WANDB_MODE=from-image LANG=C.UTF-8
run "$bin/envlet-exec" -- sh -c 'env | grep -E "^(DATA_BUCKET|LOG_LEVEL|HF_TOKEN|LR|SEED|WANDB_MODE|ENVLET_|LANG|PATH)=" | sort'

say "change a value: the running workload is now stale; the next launch gets the new value"
run "$bin/envlet" env set LOG_LEVEL trace
run "$bin/envlet" workload list
run "$bin/envlet-exec" -- sh -c 'echo LOG_LEVEL=$LOG_LEVEL'
run "$bin/envlet" workload list
