"""Schema of the `data` group."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class DataConfig:
    name: str = "shapes"
    root: str = "data"  # where downloadable / folder datasets live (csv_regression: a CSV file or folder)
    download: bool = True  # torchvision sets: try to download missing files (false: only say where to put them)
    image_size: int = 32  # shapes: generated size; others: resized to image_size^2 when set (0 = native)
    num_train: int = 5000  # shapes: scenes generated; others: cap on samples (0 = all)
    num_val: int = 1000
    seed: int = 0  # seed of the generated scenes (shapes) and of subsampling
    num_classes: int = 0  # 0 = the dataset's; shapes: use the first N shape classes; others: at least N
    target_columns: List[str] = field(default_factory=list)  # csv_regression (empty = all but path)
    val_fraction: float = 0.1  # folders without a val split: fraction held out
    normalize: str = "channel"  # channel | pixel | none
    standardize_targets: bool = True  # regression: targets standardized with train statistics
    augment: bool = True  # random crop with zero padding + horizontal flip on the device (train only;
    # never for regression, where they would move the targets); segmentation masks get the same transform
    crop_padding: int = 4
    flip: bool = True
    device_resident: str = "auto"  # auto (up to 2 GB decoded) | true | false (stream via DataLoader workers)
    num_workers: int = 2  # streaming loader only (DataLoader workers)
    noise: float = 0.05  # shapes: pixel noise std
    variant: str = "standard"  # shapes: standard | ambiguous
