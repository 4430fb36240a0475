#!/usr/bin/env bash
# Run wsi-deblur on an existing Dask cluster: start a scheduler and workers (here on this host, bound to
# loopback; on a real cluster run `dask worker SCHEDULER_ADDRESS` on each node), then point `--scheduler` at it.
# The slide and the outputs must be on a filesystem every worker sees.
#
#   workflows/external_scheduler.sh SLIDE OUT.ome.zarr [WORKERS [wsi-deblur run options...]]
#
# Workers run one compute thread each, as the embedded local cluster's do (same pixels either way).
set -euo pipefail
slide=${1:?usage: external_scheduler.sh SLIDE OUTPUT [WORKERS]}
output=${2:?usage: external_scheduler.sh SLIDE OUTPUT [WORKERS]}
workers=${3:-$(nproc)}
bin=${WSI_DEBLUR_BIN:-$(dirname "$(command -v wsi-deblur)")}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin/dask" scheduler --host 127.0.0.1 --port 0 --no-dashboard --scheduler-file "$work/scheduler.json" \
    >"$work/scheduler.log" 2>&1 &
for _ in $(seq 100); do [ -s "$work/scheduler.json" ] && break; sleep 0.2; done
[ -s "$work/scheduler.json" ] || { echo "dask scheduler did not start; see $work/scheduler.log" >&2; exit 1; }
TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=1 \
"$bin/dask" worker --scheduler-file "$work/scheduler.json" --nworkers "$workers" --nthreads 1 \
    --host 127.0.0.1 --no-dashboard >"$work/workers.log" 2>&1 &
"$bin/wsi-deblur" run "$slide" -o "$output" --scheduler "$work/scheduler.json" "${@:4}"
