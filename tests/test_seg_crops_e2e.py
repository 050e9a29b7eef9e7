"""Issue 11: a real-image-style run — a U-Net trained on random 64 px windows (rotated, flipped) of
generated 256 px scenes beats the all-background baseline on the full-size validation images."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from crash_runs import invoke, the_run
from seg_scenes import write_scenes
from vaitrain.config import compose
from vaitrain.data import build_data

pytestmark = pytest.mark.usefixtures("one_thread")


def test_unet_on_64px_crops_of_256px_scenes_beats_the_background_baseline_on_whole_images(tmp_path):
    root = write_scenes(tmp_path / "em")
    val_masks = np.stack([np.asarray(Image.open(p)) for p in sorted((root / "val" / "masks").glob("*.png"))]) > 0
    bg = 1.0 - val_masks.mean()  # all-background: pixel accuracy = background share, mIoU = bg / 2
    result = invoke(["train", "model=unet", "task=segmentation", "data=seg_folder", f"data.root={root}",
                     "data.crop=64", "data.rotate=true", "data.vflip=true", "model.base_width=8", "model.depth=2",
                     "optim=adam", "optim.lr=0.01", "trainer.batch_size=6", "trainer.epochs=30",
                     "trainer.device=cpu", "trainer.threads=1", "trainer.progress=none", "trainer.image_every=0",
                     "trainer.log_every=10", f"out_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 0, result.output
    final = [json.loads(l) for l in (the_run(tmp_path / "runs") / "metrics.jsonl").read_text().splitlines()][-1]
    print(f"background share {bg:.3f}: pixel_acc {final['val/pixel_acc']:.3f}, miou {final['val/miou']:.3f}")
    assert final["val/pixel_acc"] > bg + 0.5 * (1 - bg)  # at least half the foreground right
    assert final["val/miou"] > bg / 2 + 0.25


def test_folders_keep_their_size_by_default_and_say_when_they_shrink_a_lot(tmp_path):
    root = write_scenes(tmp_path / "em", n_train=2, n_val=1, size=96)
    kw = dict(device="cpu", batch_size=2, val_batch_size=1, seed=0)
    cfg = compose(["data=seg_folder", f"data.root={root}"]).data  # the shipped default: image_size 0
    b = build_data(cfg, "segmentation", **kw)
    assert b.image_size == 96 and next(iter(b.val))[0].shape[-1] == 96 and b.notes == []
    cfg.image_size = 32
    shrunk = build_data(cfg, "segmentation", **kw)
    assert len(shrunk.notes) == 1 and "96x96" in shrunk.notes[0] and "data.crop" in shrunk.notes[0]
    cfg.image_size = 48  # exactly 2x: no remark
    assert build_data(cfg, "segmentation", **kw).notes == []
