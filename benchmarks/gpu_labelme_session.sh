#!/usr/bin/env bash
# One H200 call for the LabelMe results of docs/RESULTS.md §7–§8 (run from the checkout root,
# data staged in .data, the EfficientNet-Lite0 wheels in .whl; writes into $OUT):
#   1. the practitioner's command with defaults (`kdcrowd fit --images` on LabelMe exported as
#      files; frozen EfficientNet-Lite0 features; cold feature cache for seed 0), seeds 0-2;
#   2. protocol-labelme, 5 seeds, every method, KD-Crowd over the 3 best teachers + MIG^f ablation;
#   3. the NetEase-shape aggregation benchmark.
set -uo pipefail
export KDCROWD_DATA=$PWD/.data PYTHONUNBUFFERED=1
python3 benchmarks/practitioner_export.py export labelme --data-root .data --out /tmp/lm > /dev/null
for s in 0 1 2; do
  export KDCROWD_CACHE=/tmp/kc_prac$([ "$s" = 0 ] && echo 0 || echo 1)
  timeout 120 python3 benchmarks/practitioner_export.py run --device cuda --json "$OUT/practitioner_labelme_seed$s.json" /tmp/lm /tmp/lmfit$s -- --seed $s 2> "/tmp/practitioner_stderr_seed$s.txt" | tail -3
done
cp /tmp/lmfit0/metrics.json "$OUT/practitioner_labelme_seed0_metrics.json" 2>/dev/null
export KDCROWD_CACHE=/tmp/kc
PARTS=/tmp/parts timeout "${PROTOCOL_SECONDS:-300}" benchmarks/protocol_parallel.sh protocol-labelme "$OUT/gpu_protocol-labelme.json" "0 1 2 3 4" --device cuda --lr 1e-4 --kd-variants kd=kl kd_prior=teacher > /tmp/protocol.log 2>&1
echo "protocol rc=$?"; grep -E "teachers|Traceback|Error" /tmp/protocol.log | head; tar czf "$OUT/logs_and_parts.tgz" /tmp/parts /tmp/protocol.log /tmp/practitioner_stderr_seed*.txt 2>/dev/null
timeout "${SCALE_SECONDS:-100}" python3 benchmarks/scale.py --preset netease --device cuda > /tmp/scale.log 2>&1; echo "scale rc=$?"
f=$(tail -1 /tmp/scale.log); [ -f "$f" ] && cp "$f" "$OUT/"; tail -3 /tmp/scale.log
