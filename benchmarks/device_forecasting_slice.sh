#!/usr/bin/env bash
# The forecasting GPU slice (notebooks/full_size.yml: forecasting_gpu_slice -- Table 7's settings, ETTh1-96, both
# STanHop variants, seed 0) on a lent GPU machine, which starts bare: no entmax, no data, no internet.
#
#   here, once:     bash benchmarks/device_forecasting_slice.sh prepare
#                   (entmax's wheel into .whl/, ETTh1.csv into .devdata/; both git-ignored through .git/info/exclude)
#   on the device:  the device tool's run with carry [".whl", ".devdata"] and the command
#                   bash benchmarks/device_forecasting_slice.sh run [SECONDS]
#
# `run` trains with `python -m uhop.experiments.forecasting train --run forecasting_gpu_slice --device cuda` for at
# most SECONDS (default 540), logging each epoch, and copies the log and any finished run's JSON to $OUT. A run
# cut short by the limit still leaves its per-epoch times in the log, which is what the slice's time bound needs.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  exclude="$(git rev-parse --git-path info/exclude)"
  for d in /.whl/ /.devdata/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "entmax==1.3"
  mkdir -p .devdata/ett/ETT-small
  cp "${UHOP_DATA:?set UHOP_DATA to the data folder (../shared/data)}/ett/ETT-small/ETTh1.csv" .devdata/ett/ETT-small/
  ls -l .whl .devdata/ett/ETT-small
  ;;
run)
  out="${OUT:-/tmp/gpu_slice_out}"; mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD" UHOP_DATA="$PWD/.devdata" UHOP_OFFLINE=1 PYTHONUNBUFFERED=1
  python3 -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
  start=$(date +%s)
  status=0
  timeout "${2:-540}" python3 -m uhop.experiments.forecasting train --run forecasting_gpu_slice \
      --device "${DEVICE:-cuda}" --progress 2>&1 | tee "$out/gpu_slice.log" || status=$?
  echo "exit status $status after $(( $(date +%s) - start )) s (124: stopped at the time limit)" | tee -a "$out/gpu_slice.log"
  cp results/forecasting/gpu_slice/*.json "$out/" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 prepare | run [SECONDS]" >&2; exit 2
  ;;
esac
