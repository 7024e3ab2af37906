#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create the TPU VM slice (or reuse it when it exists), copy this checkout to every
# worker, install it there, and start the same training command on all workers at once. The workdir must be a
# bucket path: the workers share no disk, and Orbax, clu and the run's own files all write gs:// paths.
#
#   TPU_NAME=cm-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 \
#     launch/tpu_pod.sh configs/cifar_ct.py gs://my-bucket/runs/cifar_ct [--config.FIELD=VALUE ...]
#
# Environment (TPU_NAME and ZONE are required):
#   TPU_NAME          the slice's name; reused when `gcloud compute tpus tpu-vm describe` finds it
#   ZONE              its zone, e.g. us-central2-b (v4), us-east5-b (v5p)
#   ACCELERATOR_TYPE  created slices only: v4-32, v5p-64, v5litepod-16, …   (default v4-8)
#   RUNTIME_VERSION   created slices only (default tpu-ubuntu2204-base)
#   PROJECT           the GCP project (default: gcloud's configured project)
#   SPOT=1            create a spot (preemptible) slice; a preempted run resumes from its last checkpoint
#   TFDS_DATA_DIR     a bucket holding prepared TFDS datasets, passed as --config.data.data_dir
#   JAX_PIP           the JAX install for TPUs (default "jax[tpu]")
#   DETACH=1          start the job under nohup on every worker (log: ~/consistency.log) and return at once
#   DRY_RUN=1         print the gcloud commands instead of running them
#
# Every worker runs `python -m consistency.main --config=CONFIG --workdir=WORKDIR --config.distributed=True ARGS`;
# jax.distributed.initialize() finds the slice's other workers itself, each worker feeds its own rows of the global
# batch, and process 0 alone writes logs, sample grids and metrics. Rerunning the same line resumes the run.
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

[[ $# -ge 2 ]] || die "usage: TPU_NAME=… ZONE=… launch/tpu_pod.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]"
CONFIG=$1
WORKDIR=$2
shift 2
[[ -n "${TPU_NAME:-}" ]] || die "TPU_NAME: not set; name the slice, e.g. TPU_NAME=cm-v4-32"
[[ -n "${ZONE:-}" ]] || die "ZONE: not set; give the slice's zone, e.g. ZONE=us-central2-b"
[[ -f "${CONFIG%%:*}" ]] || die "CONFIG: ${CONFIG%%:*} does not exist; give a config file such as configs/cifar_ct.py"
[[ "$WORKDIR" == gs://* ]] || die "WORKDIR: '$WORKDIR' is not a bucket path; a pod's workers share no disk, give e.g. gs://my-bucket/runs/cifar_ct"

ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
JAX_PIP=${JAX_PIP:-jax[tpu]}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TPU=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && WHERE+=(--project="$PROJECT")

# Print a command (DRY_RUN=1) or run it; arguments are shown shell-quoted, so a printed line can be pasted.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

# 1. The slice: reuse it when it exists, else create it.
if [[ "${DRY_RUN:-0}" != 1 ]] && "${TPU[@]}" describe "$TPU_NAME" "${WHERE[@]}" >/dev/null 2>&1; then
  echo "reusing TPU slice $TPU_NAME in $ZONE"
else
  [[ "${DRY_RUN:-0}" == 1 ]] && echo "# when \`${TPU[*]} describe $TPU_NAME ${WHERE[*]}\` finds no slice:"
  CREATE=("${TPU[@]}" create "$TPU_NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR_TYPE"
          --version="$RUNTIME_VERSION")
  [[ "${SPOT:-0}" == 1 ]] && CREATE+=(--spot)
  run "${CREATE[@]}"
fi

# 2. The code: this checkout's committed tree (git archive HEAD), copied to every worker and installed there.
ARCHIVE=/tmp/consistency-$$.tar.gz
run git -C "$REPO_ROOT" archive --format=tar.gz --prefix=consistency/ -o "$ARCHIVE" HEAD
run "${TPU[@]}" scp "$ARCHIVE" "$TPU_NAME":consistency.tar.gz "${WHERE[@]}" --worker=all
run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="rm -rf ~/consistency && tar xzf ~/consistency.tar.gz -C ~ && cd ~/consistency && pip install -q -U '$JAX_PIP' && pip install -q -e ."

# 3. The job: the same command on every worker.
ARGS=(--config="$CONFIG" --workdir="$WORKDIR" --config.distributed=True)
[[ -n "${TFDS_DATA_DIR:-}" ]] && ARGS+=(--config.data.data_dir="$TFDS_DATA_DIR")
ARGS+=("$@")
JOB="cd ~/consistency && python -m consistency.main$(printf ' %q' "${ARGS[@]}")"
[[ "${DETACH:-0}" == 1 ]] && JOB="cd ~/consistency && nohup python -m consistency.main$(printf ' %q' "${ARGS[@]}") > ~/consistency.log 2>&1 &"
run "${TPU[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="$JOB"
[[ "${DRY_RUN:-0}" == 1 ]] || rm -f "$ARCHIVE"
