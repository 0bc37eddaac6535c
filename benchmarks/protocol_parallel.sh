#!/usr/bin/env bash
# One protocol suite, seeds in parallel processes on one machine (one GPU is shared), then
# KD-Crowd over the best teachers by mean last-epoch validation accuracy, then one merged file.
#
#   benchmarks/protocol_parallel.sh SUITE OUT.json "0 1 2 3 4" [extra protocol.py options...]
#
# Phase 1 runs every method (one process per seed); phase 2 picks the --n-teachers best crowd
# models on validation from the merged phase-1 file and runs KD-Crowd over them (and the
# --kd-variants over the first), again one process per seed. KD-Crowd trains its own teacher
# in phase 2 (same seed and settings as the phase-1 run; CUDA is not bit-deterministic, so the
# two teacher runs can differ slightly).
set -euo pipefail
suite=$1; out=$2; seeds=$3; shift 3
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
tmp=${PARTS:-$(mktemp -d)}; mkdir -p "$tmp"
# features (LabelMe) computed once, before the parallel processes read the cache
$py "$here/protocol.py" --suite "$suite" --seeds ${seeds%% *} --methods --no-clean --kd-teachers --out "$tmp/warm.json" "$@" >/dev/null
for s in $seeds; do
  $py "$here/protocol.py" --suite "$suite" --seeds "$s" --kd-teachers --out "$tmp/base_$s.json" "$@" > "$tmp/base_$s.log" 2>&1 &
done
wait
teachers=$($py "$here/protocol.py" --suite "$suite" --out "$tmp/base.json" --merge "$tmp"/base_*.json --best-teachers "$@" | tail -1)
echo "KD-Crowd teachers (best on validation): $teachers"
for s in $seeds; do
  $py "$here/protocol.py" --suite "$suite" --seeds "$s" --methods --no-clean --kd-teachers $teachers --out "$tmp/kd_$s.json" "$@" > "$tmp/kd_$s.log" 2>&1 &
done
wait
$py "$here/protocol.py" --suite "$suite" --out "$out" --merge "$tmp"/base_*.json "$tmp"/kd_*.json "$@" >/dev/null
cat "$tmp"/*.log | grep -v -i warn || true
echo "$out"
