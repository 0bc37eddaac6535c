#!/usr/bin/env bash
# One H200 call for the speed issue's rows (docs/RESULTS.md §5a) and the protocol step profile
# (§7g), run from the checkout root with CIFAR-10N staged in .data; writes into $OUT:
#   1. benchmarks/profile_protocol.py: step time, GPU busy share and host syncs per step of
#      protocol-cifar10n-worst's annot-mix, Max-MIG and KD-Crowd(annot-mix) (3 epochs per stage);
#   2. the KD-Crowd pipeline with the airbench recipe at 6, 7 and 8 epochs per stage;
#   3. `kdcrowd run` ResNet-18 MV: wall against training (appended to overhead_gpu.json).
set -uo pipefail
export PYTHONPATH=$PWD/src KDCROWD_DATA=$PWD/.data PYTHONUNBUFFERED=1
timeout 120 python3 benchmarks/profile_protocol.py --root ./.data --suite protocol-cifar10n-worst \
    --method annot-mix maxmig 'kdcrowd(annot-mix)' --limit-train 7680 --out "$OUT/profile_protocol.json" > "$OUT/profile_protocol.log" 2>&1
echo "profile rc=$?"
timeout 150 python3 benchmarks/speed.py --device cuda --root .data --out "$OUT/speed_airbench_pipeline.json" --skip-throughput \
    --pipeline-backbone airbench --pipeline-recipes airbench --fast-epochs 6 7 8 --skip-naive-pipeline > "$OUT/speed_pipeline.log" 2>&1
echo "pipeline rc=$?"
cp benchmarks/results/overhead_gpu.json "$OUT/overhead_gpu.json"
timeout 120 python3 benchmarks/speed.py --commands run-cifar10n-resnet18-mv --repeats 2 --device cuda --root .data \
    --label after-2026-12-04 --out "$OUT/overhead_gpu.json" > "$OUT/overhead.log" 2>&1
echo "overhead rc=$?"
tail -4 "$OUT/profile_protocol.log" "$OUT/speed_pipeline.log" "$OUT/overhead.log"
