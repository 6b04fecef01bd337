#!/usr/bin/env bash
# MaskGIT training on a Cloud TPU VM pod slice (several hosts), with gcloud.
#
#   launch/tpu_pod.sh [--dry-run] create|install|train|logs|stop|status|delete|all
#
#   create    gcloud compute tpus tpu-vm create (ACCELERATOR, RUNTIME_VERSION)
#   install   on every worker: the code (this checkout, or REPO_URL), a Python
#             venv with jax[tpu] and the package, gcsfuse mounts for gs://
#             paths, the tokenizer checkpoint (TOKENIZER_CHECKPOINT)
#   train     the same command on every worker (--worker=all) with
#             --distributed=on: JAX finds the slice's hosts itself. Worker 0's
#             output streams here (and to ~/maskgit_logs/worker_0.log there),
#             the others go to ~/maskgit_logs/worker_<i>.log on each worker.
#             DETACH=1: start it in the background (survives a dropped ssh);
#             follow it with `logs`.
#   logs      follow a worker's log (LOG_WORKER, default 0)
#   stop      SIGTERM the training on every worker: it saves a checkpoint and
#             exits; the same `train` resumes from it
#   status    gcloud compute tpus tpu-vm describe
#   delete    delete the TPU VM (the workdir on GCS / NFS is kept)
#   all       create, install, train
#
# --dry-run prints the commands instead of running them.
# Every variable below can be set in the environment, e.g.
#   TPU_NAME=mg ZONE=us-central2-b WORKDIR=gs://my-bucket/maskgit/in256 \
#   DATA_DIR=gs://my-bucket/tensorflow_datasets \
#   TOKENIZER_CHECKPOINT=gs://my-bucket/tokenizer_imagenet256_checkpoint \
#   TRAIN_ARGS="--config.mesh=1,-1,1" launch/tpu_pod.sh all
#
# The workdir must be one filesystem shared by all workers (orbax writes one
# checkpoint from all hosts). The training code uses POSIX paths, so a gs://
# WORKDIR (or DATA_DIR) is mounted with gcsfuse at /mnt/gcs/BUCKET on every
# worker and passed as /mnt/gcs/BUCKET/PATH; an NFS path is used as it is.
set -euo pipefail

# ---- Settings ---------------------------------------------------------------
TPU_NAME="${TPU_NAME:-maskgit-v4-32}"
ZONE="${ZONE:-us-central2-b}"
PROJECT="${PROJECT:-}"                      # empty: gcloud's default project
ACCELERATOR="${ACCELERATOR:-v4-32}"         # v4-32: 16 chips, 4 hosts
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"  # v4; v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e
SPOT="${SPOT:-0}"                           # 1: --spot (preemptible) capacity
WORKDIR="${WORKDIR:-gs://YOUR_BUCKET/maskgit/imagenet256}"
CONFIG="${CONFIG:-configs/imagenet.py}"
MODULE="${MODULE:-maskgit_jax.train}"
DATA_DIR="${DATA_DIR:-}"                    # TFDS data dir -> --config.data.path
TOKENIZER_CHECKPOINT="${TOKENIZER_CHECKPOINT:-}"  # gs:// or local file; stage 2
TRAIN_ARGS="${TRAIN_ARGS:-}"                # more flags, e.g. --config.mesh=1,-1,1
REPO_URL="${REPO_URL:-}"                    # empty: copy this checkout
REPO_REF="${REPO_REF:-main}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"    # jax 0.10 needs Python >= 3.11
JAX_VERSION="${JAX_VERSION:-0.10.2}"
REMOTE_DIR="${REMOTE_DIR:-maskgit_jax}"     # on each worker, under $HOME
REMOTE_VENV="${REMOTE_VENV:-maskgit_venv}"
REMOTE_LOGS="${REMOTE_LOGS:-maskgit_logs}"
LOG_WORKER="${LOG_WORKER:-0}"
DETACH="${DETACH:-0}"
# -----------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN="${DRY_RUN:-0}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

run() {  # run "$@", or print it (shell-quoted) under --dry-run
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@" | sed 's/ $//'; echo
    local a
    for a in "$@"; do  # the remote command once more, readable
      [[ "$a" == --command=* ]] && printf '#   on the workers: %s\n' "${a#--command=}"
    done
    return 0
  else
    "$@"
  fi
}

GCLOUD_FLAGS=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && GCLOUD_FLAGS+=(--project="$PROJECT")

tpu_ssh() {  # tpu_ssh WORKER COMMAND
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --worker="$1" --command="$2"
}

# gs://BUCKET/PATH -> /mnt/gcs/BUCKET/PATH (mounted by `install`).
posix_path() {
  local p="$1" rest
  if [[ "$p" == gs://* ]]; then
    rest="${p#gs://}"
    if [[ "$rest" == */* ]]; then echo "/mnt/gcs/${rest%%/*}/${rest#*/}"
    else echo "/mnt/gcs/$rest"; fi
  else
    echo "$p"
  fi
}
bucket_of() { local rest="${1#gs://}"; echo "${rest%%/*}"; }
BUCKETS=()
resolve_paths() {  # REMOTE_WORKDIR, REMOTE_DATA_DIR and the buckets to mount
  REMOTE_WORKDIR="$(posix_path "$WORKDIR")"
  REMOTE_DATA_DIR=""
  [[ -n "$DATA_DIR" ]] && REMOTE_DATA_DIR="$(posix_path "$DATA_DIR")"
  local p
  for p in "$WORKDIR" "$DATA_DIR"; do
    if [[ "$p" == gs://* ]]; then
      [[ " ${BUCKETS[*]+"${BUCKETS[*]}"} " == *" $(bucket_of "$p") "* ]] ||
        BUCKETS+=("$(bucket_of "$p")")
    fi
  done
  return 0
}

q() { printf '%q' "$1"; }

cmd_create() {
  local extra=()
  [[ $SPOT == 1 ]] && extra+=(--spot)
  run gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_FLAGS[@]}" \
    --accelerator-type="$ACCELERATOR" --version="$RUNTIME_VERSION" \
    "${extra[@]+"${extra[@]}"}"
}

cmd_install() {
  local s
  # 1. The code.
  if [[ -n "$REPO_URL" ]]; then
    s="set -e; if [ -d ~/$REMOTE_DIR/.git ]; then git -C ~/$REMOTE_DIR fetch -q origin && git -C ~/$REMOTE_DIR checkout -q $(q "$REPO_REF") && git -C ~/$REMOTE_DIR pull -q --ff-only || true; else git clone -q $(q "$REPO_URL") ~/$REMOTE_DIR && git -C ~/$REMOTE_DIR checkout -q $(q "$REPO_REF"); fi"
    tpu_ssh all "$s"
  else
    # Tracked and untracked (not ignored) files of this checkout, as they are
    # now (uncommitted edits included); checkpoints/ stays here.
    local tarball="${TMPDIR:-/tmp}/maskgit_src_$$.tar.gz"
    if [[ $DRY_RUN == 1 ]]; then
      echo "(cd $(q "$ROOT") && git ls-files -z -co --exclude-standard | grep -zv '^checkpoints/' | tar -czf $(q "$tarball") --null -T -)"
    else
      (cd "$ROOT" && git ls-files -z -co --exclude-standard |
         grep -zv '^checkpoints/' | tar -czf "$tarball" --null -T -)
    fi
    run gcloud compute tpus tpu-vm scp "$tarball" "$TPU_NAME:maskgit_src.tar.gz" \
      "${GCLOUD_FLAGS[@]}" --worker=all
    tpu_ssh all "set -e; rm -rf ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_DIR && tar -xzf ~/maskgit_src.tar.gz -C ~/$REMOTE_DIR && rm ~/maskgit_src.tar.gz"
    [[ $DRY_RUN == 1 ]] || rm -f "$tarball"
  fi
  # 2. Python, venv, jax[tpu], the package (same versions on every worker).
  s="set -e; if ! command -v python$PYTHON_VERSION >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python$PYTHON_VERSION python$PYTHON_VERSION-venv; fi"
  s+="; [ -x ~/$REMOTE_VENV/bin/python ] || python$PYTHON_VERSION -m venv ~/$REMOTE_VENV"
  s+="; ~/$REMOTE_VENV/bin/pip install -q --upgrade pip"
  s+="; ~/$REMOTE_VENV/bin/pip install -q $(q "jax[tpu]==$JAX_VERSION") -e ~/$REMOTE_DIR"
  # A slice check: every worker joins (all run it at once).
  s+="; ~/$REMOTE_VENV/bin/python -c 'import jax; jax.distributed.initialize(); print(\"process\", jax.process_index(), \"of\", jax.process_count(), \":\", jax.local_device_count(), \"of\", jax.device_count(), jax.devices()[0].device_kind)'"
  tpu_ssh all "$s"
  # 3. gcsfuse mounts for the gs:// paths (the same path on every worker).
  if [[ ${#BUCKETS[@]} -gt 0 ]]; then
    s="set -e; if ! command -v gcsfuse >/dev/null; then curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -cs) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcsfuse; fi"
    local b
    for b in "${BUCKETS[@]}"; do
      # --rename-dir-limit: orbax commits a checkpoint by renaming its folder.
      s+="; sudo mkdir -p /mnt/gcs/$b && sudo chown \$(id -u):\$(id -g) /mnt/gcs/$b; mountpoint -q /mnt/gcs/$b || gcsfuse --implicit-dirs --rename-dir-limit=1000000 $b /mnt/gcs/$b"
    done
    tpu_ssh all "$s"
  fi
  # 4. The tokenizer checkpoint (stage 2 of a released-format tokenizer):
  #    a local file on every worker (the reader opens a local path).
  if [[ -n "$TOKENIZER_CHECKPOINT" ]]; then
    local base; base="$(basename "$TOKENIZER_CHECKPOINT")"
    if [[ "$TOKENIZER_CHECKPOINT" == gs://* ]]; then
      tpu_ssh all "set -e; mkdir -p ~/$REMOTE_DIR/checkpoints && gcloud storage cp $(q "$TOKENIZER_CHECKPOINT") ~/$REMOTE_DIR/checkpoints/$(q "$base")"
    else
      tpu_ssh all "mkdir -p ~/$REMOTE_DIR/checkpoints"
      run gcloud compute tpus tpu-vm scp "$TOKENIZER_CHECKPOINT" \
        "$TPU_NAME:$REMOTE_DIR/checkpoints/$base" "${GCLOUD_FLAGS[@]}" --worker=all
    fi
  fi
}

train_command() {  # the python command line every worker runs
  local args=(--config="$CONFIG" --workdir="$REMOTE_WORKDIR" --distributed=on)
  [[ -n "$REMOTE_DATA_DIR" ]] && args+=(--config.data.path="$REMOTE_DATA_DIR")
  [[ -n "$TOKENIZER_CHECKPOINT" ]] && args+=(
    --config.tokenizer_checkpoint="checkpoints/$(basename "$TOKENIZER_CHECKPOINT")")
  local extra=()
  # shellcheck disable=SC2206  # TRAIN_ARGS is split on spaces on purpose
  [[ -n "$TRAIN_ARGS" ]] && extra=($TRAIN_ARGS)
  local out="~/$REMOTE_VENV/bin/python -m $(q "$MODULE")" a
  for a in "${args[@]}" "${extra[@]+"${extra[@]}"}"; do out+=" $(q "$a")"; done
  echo "$out"
}

cmd_train() {
  local py; py="$(train_command)"
  # Worker index from the metadata server (fallback: hostname ...-w-N).
  local s="cd ~/$REMOTE_DIR && mkdir -p ~/$REMOTE_LOGS"
  s+="; W=\$(curl -fs --max-time 5 -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname | sed -n 's/.*-w-\\([0-9]*\\)\$/\\1/p'); W=\${W:-0}"
  s+="; LOG=~/$REMOTE_LOGS/worker_\$W.log; echo \"[\$(date -Is)] \$(hostname) worker \$W: $py\" > \$LOG"
  if [[ $DETACH == 1 ]]; then
    s+="; nohup $py >> \$LOG 2>&1 < /dev/null & echo \$! > ~/$REMOTE_LOGS/train.pid; echo \"worker \$W started pid \$(cat ~/$REMOTE_LOGS/train.pid), log \$LOG\""
  else
    # Every worker logs to its file; worker 0's is followed until it exits.
    s+="; $py >> \$LOG 2>&1 < /dev/null & P=\$!; echo \$P > ~/$REMOTE_LOGS/train.pid"
    s+="; if [ \"\$W\" = 0 ]; then tail -n +1 -f --pid=\$P \$LOG; fi; wait \$P"
  fi
  tpu_ssh all "$s"
}

cmd_logs() {
  tpu_ssh "$LOG_WORKER" "tail -n 200 -F ~/$REMOTE_LOGS/worker_$LOG_WORKER.log"
}

cmd_stop() {
  # SIGTERM: the trainer saves a checkpoint and exits (all processes agree on
  # the step at their next log/checkpoint step).
  tpu_ssh all "if [ -f ~/$REMOTE_LOGS/train.pid ] && kill -TERM \$(cat ~/$REMOTE_LOGS/train.pid) 2>/dev/null; then echo \"\$(hostname): SIGTERM sent\"; else echo \"\$(hostname): no training process\"; fi"
}

cmd_status() {
  run gcloud compute tpus tpu-vm describe "$TPU_NAME" "${GCLOUD_FLAGS[@]}"
}

cmd_delete() {
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_FLAGS[@]}" --quiet
}

COMMANDS=()
for arg in "$@"; do
  case "$arg" in
    --dry-run|--dry_run|-n) DRY_RUN=1 ;;
    -h|--help|help) usage; exit 0 ;;
    create|install|train|logs|stop|status|delete|all) COMMANDS+=("$arg") ;;
    *) usage >&2; die "unknown argument '$arg'" ;;
  esac
done
[[ ${#COMMANDS[@]} -gt 0 ]] || { usage >&2; die "no command given"; }
if [[ $DRY_RUN != 1 ]] && ! command -v gcloud >/dev/null; then
  die "gcloud not found (install the Google Cloud CLI, or use --dry-run)"
fi
if [[ "$WORKDIR" == *YOUR_BUCKET* ]] && [[ " ${COMMANDS[*]} " == *" train "* || " ${COMMANDS[*]} " == *" all "* || " ${COMMANDS[*]} " == *" install "* ]]; then
  [[ $DRY_RUN == 1 ]] || die "set WORKDIR (gs://BUCKET/PATH or a shared NFS path)"
fi
resolve_paths

for c in "${COMMANDS[@]}"; do
  [[ $DRY_RUN == 1 ]] && echo "# --- $c"
  case "$c" in
    create) cmd_create ;;
    install) cmd_install ;;
    train) cmd_train ;;
    logs) cmd_logs ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    delete) cmd_delete ;;
    all) cmd_create; cmd_install; cmd_train ;;
  esac
done
