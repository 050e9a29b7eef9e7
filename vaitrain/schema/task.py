"""Schema of the `task` group."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TaskConfig:
    name: str = "classification"  # classification | segmentation | regression
    # classification
    label_smoothing: float = 0.0  # cross-entropy target smoothing (0 = hard labels)
    topk: int = 5  # also report top-k accuracy (val/acc<k>)
    # segmentation
    ignore_index: int = 255  # mask value left out of the loss and the metrics
    dice_weight: float = 0.0  # loss = CE + dice_weight * Dice loss
    # regression
    loss: str = "mse"  # plain head: mse | l1
    head: str = "plain"  # plain | gaussian | mdn
    components: int = 5  # mdn: K
    sigma_param: str = "softplus"  # gaussian/mdn scale: softplus | exp (log-sigma)
    min_sigma: float = 1e-3  # floor of the predicted std (standardized units)
