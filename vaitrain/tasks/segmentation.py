"""Segmentation: per-pixel cross-entropy with ignore_index, optional soft Dice loss; pixel
accuracy, mean IoU and Dice from one confusion matrix accumulated over the whole split.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vaitrain.errors import ConfigError
from vaitrain.tasks import images
from vaitrain.tasks.base import Meter, Task
from vaitrain.tasks.classification import confusion_matrix

DICE_SMOOTH = 1.0  # added to numerator and denominator: a class absent from the batch scores 1
SAMPLE_COLUMNS = ("image", "truth", "prediction")  # the columns of the validation sample grid


def dice_loss(out: Tensor, y: Tensor, ignore_index: int, smooth: float = DICE_SMOOTH) -> Tensor:
    """1 - mean over classes of (2 sum p*t + s) / (sum p + sum t + s), sums over the batch's
    valid pixels; p the softmax probabilities, t the one-hot target."""
    c = out.shape[1]
    prob = out.float().softmax(1)
    valid = (y != ignore_index).unsqueeze(1)
    onehot = F.one_hot(torch.where(valid.squeeze(1), y, 0), c).permute(0, 3, 1, 2)
    prob, onehot = prob * valid, onehot * valid
    dims = (0, 2, 3)
    inter = (prob * onehot).sum(dims)
    denom = prob.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def scores_from_confusion(conf: Tensor) -> dict[str, float]:
    """Pixel accuracy, mean IoU and mean Dice; classes absent from both target and prediction
    (TP + FP + FN = 0) are left out of the means."""
    conf = conf.double()
    tp = conf.diag()
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    present = (tp + fp + fn) > 0
    total = conf.sum()
    if not bool(present.any()):
        return {"pixel_acc": 0.0, "miou": 0.0, "dice": 0.0}
    iou = tp[present] / (tp + fp + fn)[present]
    dice = 2 * tp[present] / (2 * tp + fp + fn)[present]
    return {
        "pixel_acc": float(tp.sum() / total),
        "miou": float(iou.mean()),
        "dice": float(dice.mean()),
    }


class SegmentationMeter(Meter):
    def __init__(self, task: "SegmentationTask"):
        c = task.num_classes
        super().__init__({"loss": (), "count": (), "confusion": (c, c)}, {"confusion": torch.int64})
        self.task = task

    @torch.no_grad()
    def update(self, out: Tensor, y: Tensor) -> None:
        self._check_open()
        n = y.shape[0]
        self._add("loss", self.task.loss(out, y) * n)
        self._add("count", torch.tensor(float(n), device=out.device))
        valid = y != self.task.ignore_index
        y_safe = torch.where(valid, y, 0)  # ignore_index (e.g. 255) would index outside the matrix
        self._add("confusion", confusion_matrix(out.argmax(1), y_safe, self.task.num_classes, valid))

    @property
    def confusion(self) -> Tensor:
        return self.sums["confusion"]

    def compute(self) -> dict[str, float]:
        n = max(float(self.sums["count"]), 1.0)
        return {"loss": float(self.sums["loss"]) / n, **scores_from_confusion(self.confusion)}


class SegmentationTask(Task):
    name = "segmentation"
    dense = True
    main_metric = "miou"
    main_mode = "max"
    metric_modes = {"loss": "min", "pixel_acc": "max", "miou": "max", "dice": "max"}

    def __init__(self, cfg: Any, data: Any):
        num_classes = getattr(data, "num_classes", None)
        if not num_classes or num_classes < 2:
            raise ConfigError("task=segmentation needs a dataset with class masks (num_classes >= 2)")
        self.num_classes = self.num_outputs = int(num_classes)
        self.ignore_index = int(cfg.ignore_index)
        self.dice_weight = float(cfg.dice_weight)
        self.class_names = list(getattr(data, "class_names", None) or range(self.num_classes))
        self.stats = getattr(data, "stats", None)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        # Mean over valid pixels; a batch with none gives 0, not NaN (and needs no host sync).
        valid = (y != self.ignore_index).sum().clamp_min(1)
        loss = F.cross_entropy(out.float(), y, ignore_index=self.ignore_index, reduction="sum") / valid
        if self.dice_weight > 0:
            loss = loss + self.dice_weight * dice_loss(out, y, self.ignore_index)
        return loss

    def new_meter(self) -> SegmentationMeter:
        return SegmentationMeter(self)

    def per_class(self, meter: Meter) -> list[dict[str, Any]]:
        """Per class over the split's valid pixels: IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN);
        None for a class absent from both targets and predictions (left out of miou/dice too)."""
        conf = meter.sums["confusion"].double().cpu()
        tp = conf.diag()
        fp, fn = conf.sum(0) - tp, conf.sum(1) - tp
        rows = []
        for k in range(self.num_classes):
            union = float(tp[k] + fp[k] + fn[k])
            rows.append({"index": k, "class": str(self.class_names[k]), "pixels": int(conf[k].sum()),
                         "iou": float(tp[k]) / union if union else None,
                         "dice": 2 * float(tp[k]) / (union + float(tp[k])) if union else None})
        return rows

    def log_images(self, writer: Any, tag: str, x: Tensor, y: Tensor, out: Tensor, step: int,
                   max_images: int = 8) -> None:
        """Rows of three under the titles image / truth / prediction (the true and the predicted
        mask over the input), then a legend of each class's colour."""
        k = min(max_images, x.shape[0])
        imgs = images.denormalize(x[:k], self.stats)
        colours = images.palette(self.num_classes)
        pred = out[:k].detach().argmax(1).cpu()
        cells = []
        for i in range(k):
            cells += [
                imgs[i],
                images.overlay(imgs[i], y[i].cpu(), colours, self.ignore_index),
                images.overlay(imgs[i], pred[i], colours),
            ]
        cells = images.upscale(torch.stack(cells))
        titled = images.with_column_titles(images.grid(cells, nrow=3), SAMPLE_COLUMNS, cells.shape[-1])
        names = [str(c) for c in self.class_names]
        writer.add_image(tag, images.with_legend(titled, names, colours), step)

    def log_epoch_images(self, writer: Any, meter: Meter, step: int, tag: str = "val") -> None:
        if isinstance(meter, SegmentationMeter):
            img = images.heatmap(meter.confusion, [str(c) for c in self.class_names], "true \\ predicted")
            writer.add_image(f"{tag}/confusion", img, step)
