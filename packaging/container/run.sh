#!/bin/sh
# Runs the example image as a workload recognised by its container id: the
# container is created (so its id is known), registered with the agent,
# then started; the registration goes when the container does.
#   ./run.sh [IMAGE]          (as an envlet admin: root or envlet-admin)
set -eu
image=${1:-envlet-example}
cid=$(docker create --user 1001:1001 \
	-v /run/envlet/workload.sock:/run/envlet/workload.sock "$image")
trap 'envlet workload delete "example-$cid" >/dev/null 2>&1 || true; docker rm -f "$cid" >/dev/null' EXIT
envlet workload register - <<JSON
{"id": "example-$cid", "user": "alice", "project": "fraud", "match": {"container_id": "$cid"}}
JSON
docker start --attach "$cid"
