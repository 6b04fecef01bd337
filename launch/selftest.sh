#!/usr/bin/env bash
# Checks the launch scripts without a cloud or a cluster (a few seconds):
#  - tpu_pod.sh with a fake `gcloud` that records its calls and syntax-checks
#    every remote --command (bash -n), and its `train` remote command run
#    locally against a fake venv (worker 0 streams, exit status passes through);
#  - slurm.sbatch --dry-run with a fake SLURM environment;
#  - local_multiprocess.sh with a stand-in module: success, a failing process
#    (status passed on, the others stopped), --dry-run.
# Usage: launch/selftest.sh   (exit status 0 when every check passes)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# --- tpu_pod.sh ---------------------------------------------------------------
mkdir -p "$TMP/bin"
cat > "$TMP/bin/gcloud" <<'EOF'
#!/usr/bin/env bash
printf '%s\n' "$*" >> "$FAKE_GCLOUD_LOG"
for a in "$@"; do
  if [[ "$a" == --command=* ]]; then
    bash -n -c "${a#--command=}" || { echo "syntax error: ${a#--command=}" >&2; exit 9; }
    printf '%s\n' "${a#--command=}" >> "$FAKE_GCLOUD_LOG.commands"
  fi
done
EOF
chmod +x "$TMP/bin/gcloud"
export FAKE_GCLOUD_LOG="$TMP/gcloud.log"
PATH="$TMP/bin:$PATH" WORKDIR=gs://bucket-a/runs/x DATA_DIR=gs://bucket-b/tfds \
  TOKENIZER_CHECKPOINT=gs://bucket-a/tok TRAIN_ARGS="--config.mesh=1,-1,1" \
  "$ROOT/launch/tpu_pod.sh" all logs stop status delete > "$TMP/tpu.out"
grep -q "tpu-vm create maskgit-v4-32 --zone=us-central2-b --accelerator-type=v4-32 --version=tpu-ubuntu2204-base" "$FAKE_GCLOUD_LOG" || fail "tpu create"
grep -q "tpu-vm scp .*maskgit_src.tar.gz --zone=us-central2-b --worker=all" "$FAKE_GCLOUD_LOG" || fail "tpu scp"
grep -q "gcsfuse --implicit-dirs --rename-dir-limit=1000000 bucket-a /mnt/gcs/bucket-a" "$FAKE_GCLOUD_LOG.commands" || fail "gcsfuse a"
grep -q "bucket-b /mnt/gcs/bucket-b" "$FAKE_GCLOUD_LOG.commands" || fail "gcsfuse b"
grep -q -- "--workdir=/mnt/gcs/bucket-a/runs/x --distributed=on --config.data.path=/mnt/gcs/bucket-b/tfds --config.tokenizer_checkpoint=checkpoints/tok" "$FAKE_GCLOUD_LOG.commands" || fail "train command"
grep -q "tpu-vm delete maskgit-v4-32 --zone=us-central2-b --quiet" "$FAKE_GCLOUD_LOG" || fail "tpu delete"
[[ $(grep -c -- "--worker=all" "$FAKE_GCLOUD_LOG") -ge 7 ]] || fail "worker=all count"
ok "tpu_pod.sh: $(wc -l < "$FAKE_GCLOUD_LOG") gcloud calls, remote commands parse"

# The train remote command, run here with a fake venv python.
train_cmd="$(grep '^cd ~/maskgit_jax' "$FAKE_GCLOUD_LOG.commands")"
mkdir -p "$TMP/home/maskgit_jax" "$TMP/home/maskgit_venv/bin"
cat > "$TMP/home/maskgit_venv/bin/python" <<'EOF'
#!/usr/bin/env bash
echo "fake python: $*"; sleep 1; echo "last line"; exit "${FAKE_RC:-0}"
EOF
chmod +x "$TMP/home/maskgit_venv/bin/python"
out="$(HOME="$TMP/home" bash -c "$train_cmd")"
[[ "$out" == *"fake python: -m maskgit_jax.train"*"last line"* ]] || fail "worker 0 stream: $out"
grep -q "last line" "$TMP/home/maskgit_logs/worker_0.log" || fail "worker log"
rc=0; HOME="$TMP/home" FAKE_RC=3 bash -c "$train_cmd" > /dev/null || rc=$?
[[ $rc == 3 ]] || fail "train exit status $rc"
ok "tpu_pod.sh train: worker 0 streams its log, status passes through"

out="$(WORKDIR=gs://b/r "$ROOT/launch/tpu_pod.sh" --dry-run train)"
[[ "$out" == *"# --- train"*"gcloud compute tpus tpu-vm ssh"*"on the workers:"* ]] || fail "dry-run output"
ok "tpu_pod.sh --dry-run"

# --- slurm.sbatch ---------------------------------------------------------------
out="$(SLURM_JOB_ID=77 SLURM_NNODES=2 SLURM_NTASKS=16 SLURM_JOB_NODELIST='gpu[1-2]' \
  WORKDIR=/shared/w TRAIN_ARGS="--config.mesh=-1,8,1" bash "$ROOT/launch/slurm.sbatch" --dry-run)"
[[ "$out" == *"srun --kill-on-bad-exit=1"*"-m maskgit_jax.train --config=configs/imagenet.py --workdir=/shared/w --distributed=auto --config.mesh=-1\\,8\\,1"* ]] || fail "sbatch: $out"
[[ "$out" == *"/shared/w/logs/slurm-77-process_"* ]] || fail "sbatch logs"
rc=0; bash "$ROOT/launch/slurm.sbatch" > /dev/null 2>&1 || rc=$?
[[ $rc == 2 ]] || fail "sbatch outside SLURM should refuse"
ok "slurm.sbatch --dry-run"

# --- local_multiprocess.sh --------------------------------------------------------
mkdir -p "$TMP/py"
cat > "$TMP/py/standin.py" <<'EOF'
import os, sys, time
a = dict(x.split("=", 1) for x in sys.argv[1:] if "=" in x)
i = int(a["--process_id"])
assert a["--distributed"] == "on" and a["--num_processes"] == "3"
assert a["--coordinator_address"].startswith("localhost:")
assert os.environ["JAX_PLATFORMS"] == "cpu"
assert "--xla_force_host_platform_device_count=2" in os.environ["XLA_FLAGS"]
print(f"standin {i}", flush=True)
if i == int(a.get("--fail", -1)):
  sys.exit(7)
time.sleep(float(a.get("--sleep", "0.5")))
EOF
out="$(PYTHONPATH="$TMP/py" "$ROOT/launch/local_multiprocess.sh" -n 3 -k 2 standin --workdir="$TMP/w" 2>&1)"
[[ "$out" == *"standin 0"* && "$out" != *"standin 1"* ]] || fail "process 0 on the console: $out"
grep -q "standin 2" "$TMP/w/logs/process_2.log" || fail "process 2 log"
start=$SECONDS; rc=0
PYTHONPATH="$TMP/py" "$ROOT/launch/local_multiprocess.sh" -n 3 -k 2 --grace 2 standin \
  --workdir="$TMP/w" --fail=1 --sleep=60 > /dev/null 2>&1 || rc=$?
[[ $rc == 7 ]] || fail "failed status $rc"
[[ $((SECONDS - start)) -lt 30 ]] || fail "the others were not stopped"
out="$("$ROOT/launch/local_multiprocess.sh" --dry-run -n 2 -k 4 maskgit_jax.sample --workdir=/x)"
[[ "$out" == *"--process_id=1 >> /x/logs/process_1.log"* ]] || fail "dry-run: $out"
ok "local_multiprocess.sh: console/logs, failure status and stop, --dry-run"
echo "all launch checks passed"
