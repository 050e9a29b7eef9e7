"""Schemas of the `sweep` and `search` nodes: how many jobs run at once and where, and the
Optuna search's trials, metric, storage, sampler and pruner."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SlurmConfig:
    """What each job asks SLURM for (submitit's `slurm_*` parameters)."""
    partition: str = ""  # "" = the cluster's default partition
    gpus_per_job: int = 1  # GPUs each job asks for (submitit's gpus_per_node)
    cpus_per_job: int = 4  # CPU cores each job asks for (cpus_per_task)
    mem_gb: int = 0  # 0 = the partition's default
    timeout_min: int = 60  # SLURM's time limit per job, minutes
    account: str = ""  # --account ("" = your default)
    qos: str = ""  # --qos ("" = the default)
    constraint: str = ""  # --constraint, e.g. a GPU model ("" = any)


@dataclass
class LaunchConfig:
    parallel: int = 1  # jobs at once: one GPU each (CUDA_VISIBLE_DEVICES), or cores/N CPU threads
    launcher: str = "local"  # local | slurm (submitit; without sbatch it runs the jobs locally)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass
class SweepConfig(LaunchConfig):
    """`vaitrain train -m`: the grid's jobs."""


@dataclass
class SearchConfig(LaunchConfig):
    """`vaitrain search`: an Optuna study over the search space given on the command line."""
    trials: int = 20  # finished trials (completed + pruned) the study should hold
    metric: str = ""  # "" = the task's main validation metric, e.g. val/acc1
    direction: str = "auto"  # auto (the task's: max for acc1/miou, min for rmse/loss) | maximize | minimize
    storage: str = ""  # "" = sqlite:///<search folder>/study.db; several processes may share one
    study: str = ""  # the study's name in the storage; "" = "search" (a new folder's own db)
    sampler: str = "tpe"  # tpe | random
    pruner: str = "median"  # median | halving | none
    startup_trials: int = 5  # random trials before TPE models the space; no pruning before these finish
    warmup_epochs: int = 1  # epochs a trial runs before it can be pruned
    seed: int = 0  # the sampler's seed
    heartbeat: int = 30  # seconds; a running trial unheard of for 2x this is taken as dead and retried
