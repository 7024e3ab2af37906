#!/usr/bin/env bash
#SBATCH --job-name=consistency
#SBATCH --nodes=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --output=consistency-%j.out
#
# Train on GPUs under SLURM, one node or many: submit this file with sbatch (the #SBATCH lines above are defaults;
# command-line options override them).
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh configs/cifar_ct.py /shared/runs/cifar_ct \
#     [--config.FIELD=VALUE ...]
#
# srun starts one process per GPU (PROCS=gpu, the default: each process sees one GPU) or one per node (PROCS=node:
# each process drives all of its node's GPUs). Every process runs
#
#   python -m consistency.main --config=CONFIG --workdir=WORKDIR \
#     --coordinator_address=FIRST_NODE:PORT --num_processes=$SLURM_NTASKS --process_id=$SLURM_PROCID ARGS
#
# with the coordinator on the first node of the allocation (PORT, default 12355). The workdir must be on a file
# system every node sees (NFS, Lustre) or a bucket (gs://…). Rerunning the same sbatch line resumes the run.
#
# Environment: PROCS (gpu | node), PORT, PYTHON (default python; e.g. a venv's), DRY_RUN=1 prints the srun line
# instead of running it (it works outside SLURM too, with the SLURM_* variables you set, for checking).
set -euo pipefail

die() { echo "error: $*" >&2; exit 2; }

[[ $# -ge 2 ]] || die "usage: sbatch [--nodes=N --gpus-per-node=G] launch/slurm_gpu.sh CONFIG WORKDIR [--config.FIELD=VALUE ...]"
CONFIG=$1
WORKDIR=$2
shift 2
[[ -f "${CONFIG%%:*}" ]] || die "CONFIG: ${CONFIG%%:*} does not exist; give a config file such as configs/cifar_ct.py"
[[ "$WORKDIR" == /* || "$WORKDIR" == *://* ]] || die "WORKDIR: '$WORKDIR' is relative; give an absolute path on a file system every node sees (or a gs:// bucket)"
[[ -n "${SLURM_JOB_NODELIST:-}" ]] || die "SLURM_JOB_NODELIST: not set; submit this script with sbatch (or set the SLURM_* variables with DRY_RUN=1 to check it)"

PROCS=${PROCS:-gpu}
PORT=${PORT:-12355}
PYTHON=${PYTHON:-python}
NODES=${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-8}}
GPUS_PER_NODE=${GPUS_PER_NODE##*:}   # "h100:8" → 8
if command -v scontrol >/dev/null 2>&1; then
  COORDINATOR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
else
  COORDINATOR=${SLURM_JOB_NODELIST%%,*}   # DRY_RUN outside SLURM: a plain comma-separated list
fi

case "$PROCS" in
  gpu)  TASKS_PER_NODE=$GPUS_PER_NODE; BIND=(--gpus-per-task=1) ;;
  node) TASKS_PER_NODE=1; BIND=() ;;
  *)    die "PROCS: '$PROCS' is not gpu or node; PROCS=gpu starts one process per GPU, PROCS=node one per node" ;;
esac
NTASKS=$((NODES * TASKS_PER_NODE))

# The process id is each task's own $SLURM_PROCID, so it is expanded by the task's shell, not here.
ARGS=(--config="$CONFIG" --workdir="$WORKDIR" --coordinator_address="$COORDINATOR:$PORT" --num_processes="$NTASKS"
      "$@")
JOB="exec $PYTHON -m consistency.main --process_id=\$SLURM_PROCID$(printf ' %q' "${ARGS[@]}")"
SRUN=(srun --nodes="$NODES" --ntasks="$NTASKS" --ntasks-per-node="$TASKS_PER_NODE" "${BIND[@]}" --kill-on-bad-exit=1
      bash -c "$JOB")

echo "consistency: $NTASKS processes on $NODES node(s) ($PROCS), coordinator $COORDINATOR:$PORT, workdir $WORKDIR"
if [[ "${DRY_RUN:-0}" == 1 ]]; then printf '+'; printf ' %q' "${SRUN[@]}"; printf '\n'; else "${SRUN[@]}"; fi
