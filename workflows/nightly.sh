#!/usr/bin/env bash
# Nightly batch over a folder of scans, for cron: one run at a time (a lock file), a dated log per run, the exit
# status of `wsi-deblur batch` passed on (0: all slides done or already complete, 1: some slide failed, 75: an
# earlier run still holds the lock). Slides finished on an earlier night are skipped; an interrupted night
# resumes the slide it was on.
#
#   workflows/nightly.sh INBOX OUTDIR [wsi-deblur batch options...]
#
# crontab line (01:30 every night; cron's PATH is short, so name the installation):
#   30 1 * * * WSI_DEBLUR_BIN=/opt/wsi-deblur/.venv/bin /opt/wsi-deblur/workflows/nightly.sh /scans /results
#
# Logs go to OUTDIR/logs (or WSI_DEBLUR_LOGS); OUTDIR/logs/latest.log is the last one. The page for the lab is
# OUTDIR/index.html (batch_summary.json and .csv for scripts).
set -euo pipefail
inbox=${1:?usage: nightly.sh INBOX OUTDIR [batch options...]}
outdir=${2:?usage: nightly.sh INBOX OUTDIR [batch options...]}
shift 2
bin=${WSI_DEBLUR_BIN:-}
if [ -z "$bin" ]; then
    found=$(command -v wsi-deblur) || { echo "nightly.sh: wsi-deblur is not on PATH; set WSI_DEBLUR_BIN" >&2; exit 1; }
    bin=$(dirname "$found")
fi
logs=${WSI_DEBLUR_LOGS:-$outdir/logs}
mkdir -p "$outdir" "$logs"
lock="$outdir/.nightly.lock"
exec 9>>"$lock"
if ! flock -n 9; then
    echo "nightly.sh: $(date -Is) an earlier run still holds $lock; not starting" >&2
    exit 75
fi
log="$logs/nightly-$(date +%Y%m%d-%H%M%S).log"
echo "$(date -Is) start: $inbox -> $outdir ($*)" >>"$log"
status=0
"$bin/wsi-deblur" -q batch "$inbox" -o "$outdir" --recursive "$@" >>"$log" 2>&1 \
    || status=$?
echo "$(date -Is) end: exit status $status" >>"$log"
ln -sfn "$(basename "$log")" "$logs/latest.log"
exit "$status"
