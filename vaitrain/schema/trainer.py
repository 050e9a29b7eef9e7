"""Schemas of the `trainer`, `norm` and `bench` groups."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class NormConfig:
    name: str = "batch"  # batch | group | layer | instance | none
    groups: int = 8  # group norm
    eps: float = 1e-5  # added to the variance
    momentum: float = 0.1  # batch norm running-statistics update


@dataclass
class TrainerConfig:
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # global batch (split across processes)
    val_batch_size: int = 0  # 0 = 2 x batch_size
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = False  # NHWC memory layout (faster convolutions on recent GPUs)
    compile: bool = False  # torch.compile the model
    grad_accum: int = 1  # micro-batches per optimizer step
    log_every: int = 20  # steps between train scalars
    layer_stats: int = 0  # every N steps: per-layer activation/gradient stats (0 = off)
    image_every: int = 1  # epochs between sample-image grids (0 = off)
    threads: int = 0  # torch CPU threads (0 = torch's default)
    progress: str = "auto"  # auto | bar | plain | none
    stop_after: int = 0  # stop this invocation after N epochs (resume= continues); 0 = run all
    checkpoint_every: int = 0  # also write last.pt every N steps (0 = once per epoch)
    devices: int = 1  # processes to launch for DistributedDataParallel
    sync_bn: bool = False  # batch norm statistics over all GPUs (DDP)
    deterministic: bool = False  # deterministic algorithms (slower; cuDNN benchmark off)
    test_at_end: bool = False  # after the last epoch: metrics on the data's test split (never used for selection)
    ema: float = 0.0  # decay of an exponential moving average of the weights (e.g. 0.9998); 0 = off


@dataclass
class BenchConfig:
    batch_size: int = 0  # 0 = trainer.batch_size
    image_size: int = 0  # 0 = data.image_size
    precision: str = "auto"  # auto = trainer.precision (auto: bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    channels_last: bool = False  # NHWC memory layout
    compile: bool = False  # torch.compile; its time is reported as the warm-up, never timed
    warmup: int = 3  # untimed steps before the timed ones
    steps: int = 10  # timed steps per repeat
    repeats: int = 3  # repeats per subject (ABBA order with a baseline); the median is quoted
    mode: str = "both"  # train | infer | both
    split: bool = False  # report forward / backward / optimizer time separately
    baseline: str = "none"  # none | torchvision | bare
    peak_tflops: float = 0.0  # 0 = measure with a large matrix product (GPU only)
    data: bool = True  # also time the data path (loader alone, full epoch)
    data_batches: int = 16  # the data-path epoch: data.num_train = batch x this (0 = data.num_train)
    out: Optional[str] = None  # write rows + environment to this .json or .csv (--out wins)
    clock: str = "wall"  # wall (CUDA events on a GPU) | process: CPU seconds, for a shared CPU (CPU only)
