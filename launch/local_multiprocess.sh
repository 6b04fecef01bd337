#!/usr/bin/env bash
# N JAX processes on this machine, talking through jax.distributed (CPU).
#
#   launch/local_multiprocess.sh [options] [--] MODULE [ARGS...]
#
# Runs `python -m MODULE ARGS... --distributed=on
#   --coordinator_address=localhost:PORT --num_processes=N --process_id=i`
# for i = 0..N-1, each a CPU process with K simulated devices
# (JAX_PLATFORMS=cpu, XLA_FLAGS=--xla_force_host_platform_device_count=K),
# so N processes x K devices behave like an N-host slice of N*K chips: the
# same code path as a TPU pod or a SLURM job, testable on one machine.
#
# Process 0's output goes to the console (and to LOGDIR/process_0.log), the
# others' to LOGDIR/process_i.log (appended to, after a header line). LOGDIR is WORKDIR/logs, WORKDIR being the
# --workdir=... among ARGS (else runs/local_multiprocess). When a process
# fails, the others are stopped (SIGTERM, then SIGKILL after a grace period)
# and the script exits with the failed process's status; 0 when all succeed.
#
# Options (defaults in brackets; also settable as environment variables):
#   -n, --num_processes N   processes [NUM_PROCESSES=2]
#   -k, --devices K         simulated CPU devices per process [DEVICES_PER_PROCESS=4]
#   -p, --port PORT         coordinator port [PORT=free port]
#   -l, --logdir DIR        log folder [LOGDIR=WORKDIR/logs]
#   --python PATH           interpreter [PYTHON=.venv/bin/python if present, else python3]
#   --grace SECONDS         SIGTERM -> SIGKILL wait when stopping [GRACE=20]
#   --dry-run               print the commands, run nothing
#   -h, --help
#
# Examples:
#   launch/local_multiprocess.sh -n 2 -k 4 -- maskgit_jax.train \
#       --config=configs/fashion_mnist.py --workdir=runs/mp \
#       --config.tokenizer_training.num_steps=4 \
#       --config.transformer_training.num_steps=4
#   launch/local_multiprocess.sh -n 2 -k 4 maskgit_jax.evaluate --workdir=runs/mp
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-4}"
PORT="${PORT:-}"
LOGDIR="${LOGDIR:-}"
GRACE="${GRACE:-20}"
DRY_RUN=0
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"
  else PYTHON=python3; fi
fi

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "local_multiprocess.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -n|--num_processes) NUM_PROCESSES="${2:?}"; shift 2 ;;
    --num_processes=*) NUM_PROCESSES="${1#*=}"; shift ;;
    -k|--devices) DEVICES_PER_PROCESS="${2:?}"; shift 2 ;;
    --devices=*) DEVICES_PER_PROCESS="${1#*=}"; shift ;;
    -p|--port) PORT="${2:?}"; shift 2 ;;
    --port=*) PORT="${1#*=}"; shift ;;
    -l|--logdir) LOGDIR="${2:?}"; shift 2 ;;
    --logdir=*) LOGDIR="${1#*=}"; shift ;;
    --python) PYTHON="${2:?}"; shift 2 ;;
    --python=*) PYTHON="${1#*=}"; shift ;;
    --grace) GRACE="${2:?}"; shift 2 ;;
    --grace=*) GRACE="${1#*=}"; shift ;;
    --dry-run|--dry_run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[[ $# -ge 1 ]] || { usage >&2; die "missing MODULE (e.g. maskgit_jax.train)"; }
MODULE="$1"; shift
ARGS=("$@")
[[ "$NUM_PROCESSES" =~ ^[1-9][0-9]*$ ]] || die "bad --num_processes=$NUM_PROCESSES"
[[ "$DEVICES_PER_PROCESS" =~ ^[1-9][0-9]*$ ]] || die "bad --devices=$DEVICES_PER_PROCESS"
for a in "${ARGS[@]}"; do
  case "$a" in
    --distributed=*|--coordinator_address=*|--num_processes=*|--process_id=*)
      die "$a is set by this script; remove it" ;;
  esac
done

if [[ -z "$LOGDIR" ]]; then
  WORKDIR=runs/local_multiprocess
  for ((j = 0; j < ${#ARGS[@]}; j++)); do
    case "${ARGS[j]}" in
      --workdir=*) WORKDIR="${ARGS[j]#--workdir=}" ;;
      --workdir) WORKDIR="${ARGS[j+1]:-$WORKDIR}" ;;
    esac
  done
  LOGDIR="$WORKDIR/logs"
fi
if [[ -z "$PORT" ]]; then
  if [[ $DRY_RUN == 1 ]]; then PORT=PORT
  else
    PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')"
  fi
fi

# XLA_FLAGS of the caller, with the device count replaced.
XLA="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
for f in ${XLA_FLAGS:-}; do
  [[ "$f" == --xla_force_host_platform_device_count* ]] || XLA="$f $XLA"
done

command_of() {  # the argv of process $1
  CMD=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$XLA" PYTHONUNBUFFERED=1
       "$PYTHON" -m "$MODULE" "${ARGS[@]}" --distributed=on
       "--coordinator_address=localhost:$PORT" "--num_processes=$NUM_PROCESSES"
       "--process_id=$1")
}

if [[ $DRY_RUN == 1 ]]; then
  echo "# $NUM_PROCESSES processes x $DEVICES_PER_PROCESS CPU devices; logs in $LOGDIR"
  echo "mkdir -p $(printf '%q' "$LOGDIR")"
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    command_of "$i"
    if [[ $i == 0 ]]; then
      printf '%q ' "${CMD[@]}"; echo "2>&1 | tee -a $(printf '%q' "$LOGDIR/process_0.log") &"
    else
      printf '%q ' "${CMD[@]}"; echo ">> $(printf '%q' "$LOGDIR/process_$i.log") 2>&1 &"
    fi
  done
  echo "# wait for all; on the first failure stop the rest and exit with its status"
  exit 0
fi

mkdir -p "$LOGDIR"
cd "$ROOT"
PIDS=()
stop_all() {  # SIGTERM the live processes, SIGKILL them after $GRACE seconds
  local pid live t
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for ((t = 0; t < GRACE * 10; t++)); do
    live=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && live=1; done
    [[ $live == 0 ]] && return 0
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
on_signal() {
  echo "local_multiprocess.sh: interrupted; stopping all processes" >&2
  trap - INT TERM
  stop_all
  exit 130
}
trap on_signal INT TERM

for ((i = 0; i < NUM_PROCESSES; i++)); do
  command_of "$i"
  # Appended, after a header, so that train / sample / evaluate runs on the
  # same workdir keep each other's logs.
  log="$LOGDIR/process_$i.log"
  echo "=== $(date -Is) process $i/$NUM_PROCESSES: python -m $MODULE ${ARGS[*]}" >> "$log"
  if [[ $i == 0 ]]; then
    "${CMD[@]}" > >(tee -a "$log") 2>&1 &
  else
    "${CMD[@]}" >> "$log" 2>&1 &
  fi
  PIDS+=("$!")
done
echo "local_multiprocess.sh: $NUM_PROCESSES processes x $DEVICES_PER_PROCESS" \
     "devices, coordinator localhost:$PORT, pids ${PIDS[*]}, logs in $LOGDIR" >&2

# Poll: the first process to exit non-zero stops the others.
declare -A DONE=()
status=0
while [[ ${#DONE[@]} -lt $NUM_PROCESSES ]]; do
  for ((i = 0; i < NUM_PROCESSES; i++)); do
    [[ -n "${DONE[$i]:-}" ]] && continue
    pid="${PIDS[i]}"
    if ! kill -0 "$pid" 2>/dev/null; then
      rc=0; wait "$pid" || rc=$?
      DONE[$i]=$rc
      if [[ $rc != 0 && $status == 0 ]]; then
        status=$rc
        echo "local_multiprocess.sh: process $i exited with status $rc" \
             "(log: $LOGDIR/process_$i.log); stopping the others" >&2
        [[ $i != 0 ]] && tail -n 20 "$LOGDIR/process_$i.log" >&2 || true
        stop_all
      fi
    fi
  done
  sleep 0.5
done
wait 2>/dev/null || true  # the tee of process 0
if [[ $status != 0 ]]; then
  echo "local_multiprocess.sh: failed (status $status)" >&2
else
  echo "local_multiprocess.sh: all $NUM_PROCESSES processes finished" >&2
fi
exit "$status"
