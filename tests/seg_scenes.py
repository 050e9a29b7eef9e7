"""Generated large segmentation scenes (a stand-in for microscopy-like folders): dark textured
background, bright discs and bars of random size and place; masks 0/255 (foreground = 255)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_scenes(root: Path, n_train: int = 6, n_val: int = 2, size: int = 256, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            mask = np.zeros((size, size), bool)
            for _ in range(rng.integers(6, 12)):
                cy, cx = rng.integers(0, size, 2)
                if rng.random() < 0.6:
                    mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(6, 24) ** 2
                else:
                    h, w = rng.integers(4, 12), rng.integers(20, 60)
                    h, w = (h, w) if rng.random() < 0.5 else (w, h)
                    mask |= (abs(yy - cy) < h) & (abs(xx - cx) < w)
            img = np.where(mask, 170.0, 70.0) + rng.normal(0, 30, (size, size))
            img += 25 * np.sin(xx / 9.0 + rng.random() * 6) * np.cos(yy / 13.0)  # background texture
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / split / "images" / f"s{i}.png")
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / split / "masks" / f"s{i}.png")
    return root
