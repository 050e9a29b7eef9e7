"""What a trained model needs to know about its data to run on new files without the dataset:
stored in every checkpoint as `data_info` (plain numbers, strings and lists)."""
from __future__ import annotations

from typing import Any


def describe(bundle: Any, data_cfg: Any) -> dict[str, Any]:
    """The input a model was trained on (channels, square size, how photos were brought to it) and
    the names of its outputs (classes or regression targets)."""
    return {
        "name": str(bundle.name),
        "task": str(bundle.task),
        "in_channels": int(bundle.in_channels),
        "image_size": int(bundle.image_size),
        "num_classes": int(bundle.num_classes),
        "target_dim": int(bundle.target_dim),
        "class_names": [str(c) for c in bundle.class_names],
        "target_names": [str(c) for c in bundle.target_names],
        "resize": str(data_cfg.get("resize", "squash")),
        "crop_fraction": float(data_cfg.get("crop_fraction", 1.0)),
        "normalize": str(data_cfg.normalize),
        # the split sizes: a resume or eval on a folder whose images were added or removed since says so
        "num_train": int(getattr(bundle.train, "n", 0) or 0),
        "num_val": int(getattr(bundle.val, "n", 0) or 0),
    }
