"""Schema of the `data` group."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class DataConfig:
    name: str = "shapes"
    root: str = "data"  # where downloadable / folder datasets live (csv_regression: a CSV file or folder)
    download: bool = True  # torchvision sets: try to download missing files (false: only say where to put them)
    image_size: int = 32  # shapes: generated size; others: resized to image_size^2 when set (0 = native;
    # folders default to 0: the images' own size when they share one)
    num_train: int = 5000  # shapes: scenes generated; others: cap on samples (0 = all)
    num_val: int = 1000  # shapes: validation scenes; others: cap on samples (0 = all)
    seed: int = 0  # seed of the generated scenes (shapes) and of subsampling
    num_classes: int = 0  # 0 = the dataset's; shapes: use the first N shape classes; others: at least N
    target_columns: List[str] = field(default_factory=list)  # csv_regression (empty = all but path)
    val_fraction: float = 0.1  # held out of the training split for validation (folders without val/,
    # torchvision sets: their official test split stays the test split); seeded by data.seed
    normalize: str = "channel"  # channel | pixel | none | imagenet (torchvision's mean/std)
    # Photos (folders, predict): `center_crop` resizes the short side to image_size / crop_fraction
    # and cuts the centre image_size square (aspect ratio kept); `squash` resizes to a square.
    resize: str = "center_crop"  # center_crop | squash
    crop_fraction: float = 1.0  # center_crop: the side of the centre square over the resized short side
    standardize_targets: bool = True  # regression: targets standardized with train statistics
    # Training batches only, per sample on the device (data/augment.py). true: the geometric options
    # below; trivial: also TrivialAugmentWide; false: nothing. Regression gets only colour jitter,
    # erasing and TrivialAugment's colour ops (the rest would move its targets). Masks get every
    # geometric transform of their image; pixels from outside the image are task.ignore_index.
    augment: str = "true"  # true | false | trivial
    crop_padding: int = 4  # zero padding before the random window
    flip: bool = True  # horizontal flips
    crop: int = 0  # random N x N windows of each training image (validation: whole images); 0 = image size
    rotate: bool = False  # random multiples of 90 degrees (data without an up)
    vflip: bool = False  # vertical flips
    resized_crop: bool = False  # RandomResizedCrop to data.crop (or image_size) px
    resized_crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])  # area fraction
    resized_crop_ratio: List[float] = field(default_factory=lambda: [0.75, 1.3333333])  # aspect ratio
    color_jitter: float = 0.0  # brightness, contrast, saturation factors in [1-x, 1+x] per sample
    hue: float = 0.0  # hue shift in [-x, x] per sample (<= 0.5)
    erasing: float = 0.0  # random erasing: probability per sample
    mixup: float = 0.0  # classification: Mixup Beta(alpha, alpha); 0 = off
    cutmix: float = 0.0  # classification: CutMix Beta(alpha, alpha); 0 = off
    mixup_prob: float = 1.0  # probability that a batch is mixed
    mixup_switch_prob: float = 0.5  # with both on: probability of CutMix rather than Mixup
    device_resident: str = "auto"  # auto (up to 2 GB decoded) | true | false (stream via DataLoader workers)
    num_workers: int = 2  # streaming loader only (DataLoader workers)
    noise: float = 0.05  # shapes: pixel noise std
    variant: str = "standard"  # shapes: standard | ambiguous
