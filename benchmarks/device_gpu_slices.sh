#!/usr/bin/env bash
# The GPU slices of notebooks/full_size.yml on a lent GPU machine, which starts bare: no entmax, no data, no
# internet (see the device tool's README).
#   forecasting_gpu_slice     Table 7's settings, ETTh1-96, both STanHop variants, seed 0
#   classification_gpu_slice  Table 5's scale on CIFAR-10 (the JPEG copy of the shared data), MHM and MHM + U-Hop
#
#   here, once:     bash benchmarks/device_gpu_slices.sh prepare
#                   (entmax's wheel into .whl/; ETTh1.csv and the CIFAR-10 archive into .devdata/; both git-excluded)
#   on the device:  the device tool's run with carry [".whl", ".devdata"] and the command
#                   bash benchmarks/device_gpu_slices.sh run forecasting|classification [SECONDS]
#
# `run` trains the slice's entry through its package CLI (`python -m uhop.experiments.<task> train --run
# <task>_gpu_slice --device cuda`) for at most SECONDS (default 540), logging as it goes, and copies the log and
# the result files to $OUT. A run cut short by the limit still leaves its per-epoch times in the log, which is
# what the slices' time bound needs.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  exclude="$(git rev-parse --git-path info/exclude)"
  for d in /.whl/ /.devdata/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "entmax==1.3"
  data="${UHOP_DATA:?set UHOP_DATA to the data folder (../shared/data)}"
  mkdir -p .devdata/ett/ETT-small .devdata/cifar10
  cp "$data/ett/ETT-small/ETTh1.csv" .devdata/ett/ETT-small/
  cp "$data/cifar10/cifar10-jpeg.tar.gz" .devdata/cifar10/
  du -sh .whl .devdata
  ;;
run)
  task="${2:?run forecasting|classification [SECONDS]}"
  case "$task" in forecasting|classification) ;; *) echo "unknown slice $task" >&2; exit 2 ;; esac
  out="${OUT:-/tmp/gpu_slice_out}"; mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD" UHOP_DATA="$PWD/.devdata" UHOP_OFFLINE=1 PYTHONUNBUFFERED=1
  python3 -c 'import torch; print("torch", torch.__version__, "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'
  extra=()
  [ "$task" = forecasting ] && extra=(--progress)
  start=$(date +%s)
  status=0
  timeout "${3:-540}" python3 -m "uhop.experiments.$task" train --run "${task}_gpu_slice" \
      --device "${DEVICE:-cuda}" "${extra[@]}" 2>&1 | tee "$out/${task}_gpu_slice.log" || status=$?
  echo "exit status $status after $(( $(date +%s) - start )) s (124: stopped at the time limit)" \
      | tee -a "$out/${task}_gpu_slice.log"
  cp results/"$task"/gpu_slice/*.json "$out/" 2>/dev/null || true
  ;;
*)
  echo "usage: $0 prepare | run forecasting|classification [SECONDS]" >&2; exit 2
  ;;
esac
