#!/bin/sh
# Runs the example image as a workload recognised by its container id: the
# container is created (so its id is known), registered with the agent,
# then started; the registration goes when the container does. The agent's
# socket is in a directory of its own (workload_socket =
# /run/envlet/workload/workload.sock): the directory is mounted, so the
# container reaches a restarted agent.
#   ./run.sh [IMAGE]          (as an envlet admin: root or envlet-admin)
set -eu
image=${1:-envlet-example}
cid=$(docker create --user 1001:1001 \
	-v /run/envlet/workload:/run/envlet/workload:ro "$image")
trap 'envlet workload delete "example-$cid" >/dev/null 2>&1 || true; docker rm -f "$cid" >/dev/null' EXIT
envlet workload register - <<JSON
{"id": "example-$cid", "user": "alice", "project": "fraud", "match": {"container_id": "$cid"}}
JSON
docker start --attach "$cid"
