#!/usr/bin/env bash
# A protocol suite as a queue of small jobs, run a few at a time on the GPUs until a deadline,
# most important first, then one merged file. Made for device calls shorter than a suite:
# the jobs that finish are complete units (a teacher and KD-Crowd over it, in one process, so
# the gain is paired), and a job cut by the deadline keeps the runs it finished.
#
#   SUITE=protocol-cifar10n-worst P=4 DEADLINE=540 benchmarks/protocol_queue.sh OUT_DIR JOBS_FILE [protocol.py options...]
#
# JOBS_FILE: one job per line, protocol.py options (e.g. "--seeds 0 --methods maxmig
# --kd-teachers maxmig"); "#" lines are skipped. Every job also gets --suite, --no-clean,
# --out OUT_DIR/part_<line>.json and the extra options. OUT_DIR/merged.json combines the parts
# (protocol.py --merge); a job naming its own --suite is merged into OUT_DIR/merged_<suite>.json.
# A job starts only while more than MIN_LEFT seconds (default 30) remain before DEADLINE: set
# it near a job's run time when the file ends in short jobs, so that none starts only to be cut
# (graphs20: two one-run jobs started with 60 s left and were killed at the deadline).
# With MPS=1 the CUDA multi-process service is started first, so the jobs' kernels share the
# GPU instead of taking turns; it is left off when it fails to start.
#
# KD-Crowd in two calls, when a teacher and KD-Crowd's two stages after it (three 100-epoch
# ResNet-18 runs) do not fit one call: call 1 trains the teachers and saves their outputs
# (protocol.py --save-teacher-outputs: every crowd-model run writes <method>_seed<S>.npz, about
# 1.2 MB for CIFAR-10N, and its row <method>_seed<S>.json); the folder comes back with the
# call's files and is carried into call 2 under benchmarks/results/protocol/teachers/, where
# the KD-Crowd jobs read them (protocol.py --teacher-outputs: the teacher's row is the saved
# one, so the gain is still paired, and the student and stage 2 give the numbers of one call):
#
#   # call 1, jobs like "--seeds 3 --methods annot-mix --kd-teachers"
#   SUITE=protocol-cifar10n-worst P=3 MPS=1 DEADLINE=570 benchmarks/protocol_queue.sh $OUT/call1 \
#       benchmarks/jobs/protocol-cifar10n-worst-teachers.txt --device cuda --root ./.data \
#       --save-teacher-outputs $OUT/call1/teachers
#   # carry back: cp -r <files_at>/call1/teachers benchmarks/results/protocol/teachers/cifar10n-worst
#   # call 2, jobs like "--seeds 3 --methods --kd-teachers annot-mix"
#   SUITE=protocol-cifar10n-worst P=3 MPS=1 DEADLINE=570 benchmarks/protocol_queue.sh $OUT/call2 \
#       benchmarks/jobs/protocol-cifar10n-worst-kd.txt --device cuda --root ./.data \
#       --teacher-outputs benchmarks/results/protocol/teachers/cifar10n-worst
#   # both calls' parts in one file
#   python3 benchmarks/protocol.py --suite protocol-cifar10n-worst --out merged.json --merge call1/part_*.json call2/part_*.json
set -uo pipefail
out=$1; jobs=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
P=${P:-4}; DEADLINE=${DEADLINE:-540}; MIN_LEFT=${MIN_LEFT:-30}; SUITE=${SUITE:?set SUITE}
# teacher files are named by method and seed only: two suites' runs would overwrite each other
other_suite=$(grep -v '^\s*#' "$jobs" | grep -oE -- '--suite(=|[[:space:]]+)[^[:space:]]+' | sed -E 's/^--suite(=|[[:space:]]+)//' | grep -vxF -- "$SUITE" | head -1 || true)
if [ -n "$other_suite" ] && { [[ " $* " == *" --save-teacher-outputs"* ]] || grep -v '^\s*#' "$jobs" | grep -q -- '--save-teacher-outputs'; }; then
  echo "--save-teacher-outputs: a job of $jobs runs --suite $other_suite; its teacher files would overwrite $SUITE's (same method and seed): run the suites in separate queues" >&2
  exit 2
fi
mkdir -p "$out"
start=$(date +%s)
if [ "${MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  # a daemon left running by an earlier call on the same (warm) machine is reused, not restarted
  if { echo get_server_list | nvidia-cuda-mps-control >/dev/null 2>&1 || nvidia-cuda-mps-control -d; } \
      && $py -c "import torch; torch.ones(1, device='cuda').sum().item()" 2>/dev/null; then
    echo "MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY; echo "MPS off (failed to start)"
  fi
fi
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# Several GPUs: each job runs on the GPU of GPUS (default: CUDA_VISIBLE_DEVICES's, else every
# GPU nvidia-smi lists) that runs the fewest of the queue's jobs when it starts, through its
# own CUDA_VISIBLE_DEVICES; P counts the jobs at a time on all of them (P=8 on four GPUs: two
# on each). With one GPU or none, the jobs' environment is left as it is.
if [ -z "${GPUS+x}" ]; then
  if [ -n "${CUDA_VISIBLE_DEVICES+x}" ]; then GPUS=$CUDA_VISIBLE_DEVICES  # set, even empty (no GPU): as it is
  else GPUS=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' '); fi
fi
GPUS=${GPUS//,/ }  # CUDA's 0,1 or 0 1
gpu_counts=$(mktemp -d)  # a file per GPU holding its running jobs, changed under flock
trap 'rm -rf "$gpu_counts"' EXIT
take_gpu() {  # prints the least busy GPU of GPUS and counts one more job on it
  ( flock 9
    local best="" fewest="" g n
    for g in $GPUS; do
      n=$(cat "$gpu_counts/$g" 2>/dev/null || echo 0)
      if [ -z "$fewest" ] || [ "$n" -lt "$fewest" ]; then best=$g; fewest=$n; fi
    done
    echo $(( fewest + 1 )) > "$gpu_counts/$best"; echo "$best"
  ) 9>"$gpu_counts/lock"
}
give_gpu() { ( flock 9; echo $(( $(cat "$gpu_counts/$1") - 1 )) > "$gpu_counts/$1" ) 9>"$gpu_counts/lock"; }
run_job() {  # $1 = line number, $2 = the job's options
  local left=$(( DEADLINE - ($(date +%s) - start) ))
  [ "$left" -gt "$MIN_LEFT" ] || { echo "job $1 skipped (deadline: ${left}s left, MIN_LEFT=${MIN_LEFT})"; return 0; }
  local gpu="" on=""
  if [ "$(wc -w <<< "$GPUS")" -gt 1 ]; then gpu=$(take_gpu); on=" on GPU $gpu"; fi
  # shellcheck disable=SC2086
  if [ -n "$gpu" ]; then
    CUDA_VISIBLE_DEVICES=$gpu timeout "$left" $py "$here/protocol.py" --suite "$SUITE" --no-clean --out "$out/part_$1.json" $2 "${@:3}" > "$out/part_$1.log" 2>&1
  else
    timeout "$left" $py "$here/protocol.py" --suite "$SUITE" --no-clean --out "$out/part_$1.json" $2 "${@:3}" > "$out/part_$1.log" 2>&1
  fi
  local rc=$?
  [ -z "$gpu" ] || give_gpu "$gpu"
  echo "job $1 rc=$rc ($(( $(date +%s) - start ))s)$on: $2"
}
export -f run_job take_gpu give_gpu; export here py out start DEADLINE MIN_LEFT SUITE GPUS gpu_counts
grep -n -v '^\s*#' "$jobs" | grep -v ':\s*$' | tr '\n' '\0' \
  | xargs -0 -P "$P" -I{} bash -c 'l="{}"; run_job "${l%%:*}" "${l#*:}" "$@"' _ "$@"
parts=("$out"/part_*.json)
[ -e "${parts[0]}" ] || exit 0
# A job may name its own --suite (its options come after the queue's): one merged file per
# suite, merged.json for $SUITE and merged_<suite>.json for another. One pass over the parts
# prints a line per suite: the suite, then its parts, separated by tabs.
$py -c 'import collections, json, sys
by = collections.defaultdict(list)
for p in sorted(sys.argv[1:], key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0])):  # in job order: part_9 before part_10
    by[json.load(open(p))["suite"]].append(p)
print(*("\t".join([s, *ps]) for s, ps in sorted(by.items())), sep="\n")' "${parts[@]}" |
while IFS=$'\t' read -ra group; do
  s=${group[0]}; name=merged.json; [ "$s" = "$SUITE" ] || name="merged_$s.json"
  $py "$here/protocol.py" --suite "$s" --out "$out/$name" --merge "${group[@]:1}" >/dev/null && echo "$out/$name"
done
