#!/bin/bash
# Multi-node DistributedDataParallel training with vaitrain on SLURM.
#
#   sbatch scripts/slurm_train.sh model=resnet50 data=cifar10 trainer.epochs=90
#   sbatch scripts/slurm_train.sh resume=runs/<date>/<run>      # continue a stopped run
#
# One srun task per node starts torchrun; torchrun starts one rank per GPU and the ranks meet
# through c10d rendezvous on the first node. Every node must see the same checkout, venv and
# out_dir (a shared filesystem): rank 0 writes the run directory, every rank reads it on resume.
# Global batch = trainer.batch_size, split evenly over all ranks.
#
# Near the time limit SLURM sends SIGTERM (--signal below); torchrun passes it to the ranks,
# which finish the current step, write checkpoints/last.pt and print the resume= command.
#SBATCH --job-name=vaitrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=TERM@180
#SBATCH --output=slurm-%j.out
set -euo pipefail

GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-4}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
RDZV_PORT=${RDZV_PORT:-29500}
PYTHON=${PYTHON:-python}

# Ranks get this long after SIGTERM to write last.pt before torchrun kills them (default 30 s).
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-150}
THREADS=$(( ${SLURM_CPUS_PER_TASK:-$GPUS_PER_NODE} / GPUS_PER_NODE ))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( THREADS > 0 ? THREADS : 1 ))}

# srun forwards SLURM's signals to torchrun; `exec` keeps torchrun's exit code as the job's.
exec srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$HEAD_NODE:$RDZV_PORT" \
    -m vaitrain train "$@"
