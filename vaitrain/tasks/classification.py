"""Classification: cross-entropy (the NLL of the softmax) with label smoothing; top-1/top-k
accuracy (fractions in [0, 1]); a confusion matrix over the whole split for TensorBoard.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vaitrain.errors import ConfigError
from vaitrain.tasks import images
from vaitrain.tasks.base import Meter, Task


def topk_correct(out: Tensor, y: Tensor, ks: Sequence[int]) -> list[Tensor]:
    """Number of samples whose true class is among the k highest scores, for each k."""
    top = out.topk(max(ks), dim=1).indices  # (N, kmax), best first
    hit = top == y[:, None]
    return [hit[:, :k].any(dim=1).sum() for k in ks]


def confusion_matrix(pred: Tensor, y: Tensor, num_classes: int, valid: Tensor | None = None) -> Tensor:
    """(C, C) counts, rows = true class, columns = predicted class; pixels where `valid` is False
    are not counted. Uses scatter_add (no host sync, unlike bincount or boolean indexing)."""
    c2 = num_classes * num_classes
    idx = y.long() * num_classes + pred.long()
    if valid is not None:
        idx = torch.where(valid, idx, c2)  # an overflow bin, dropped below
    counts = torch.zeros(c2 + 1, dtype=torch.int64, device=idx.device)
    counts.scatter_add_(0, idx.flatten(), torch.ones_like(idx.flatten()))
    return counts[:c2].view(num_classes, num_classes)


class ClassificationMeter(Meter):
    def __init__(self, task: "ClassificationTask"):
        c = task.num_classes
        super().__init__(
            {"loss": (), "count": (), "correct1": (), "correctk": (), "confusion": (c, c)},
            {"confusion": torch.int64},
        )
        self.task = task

    @torch.no_grad()
    def update(self, out: Tensor, y: Tensor) -> None:
        self._check_open()
        n = y.shape[0]
        self._add("loss", self.task.loss(out, y) * n)
        self._add("count", torch.tensor(float(n), device=out.device))
        c1, ck = topk_correct(out, y, [1, self.task.k])
        self._add("correct1", c1)
        self._add("correctk", ck)
        self._add("confusion", confusion_matrix(out.argmax(1), y, self.task.num_classes))

    @property
    def confusion(self) -> Tensor:
        return self.sums["confusion"]

    def compute(self) -> dict[str, float]:
        n = max(float(self.sums["count"]), 1.0)
        res = {"loss": float(self.sums["loss"]) / n, "acc1": float(self.sums["correct1"]) / n}
        if self.task.k > 1:
            res[f"acc{self.task.k}"] = float(self.sums["correctk"]) / n
        return res


class ClassificationTask(Task):
    name = "classification"
    dense = False
    main_metric = "acc1"
    main_mode = "max"
    metric_modes = {"loss": "min", "acc1": "max"}

    @classmethod
    def metrics_reported(cls, task_cfg: Any) -> dict[str, str]:
        k = int(task_cfg.topk)  # capped at the class count when the data is known
        return {**cls.metric_modes, **({f"acc{k}": "max"} if k > 1 else {})}

    def __init__(self, cfg: Any, data: Any):
        num_classes = getattr(data, "num_classes", None)
        if not num_classes or num_classes < 2:
            raise ConfigError("task=classification needs a dataset with class labels (num_classes >= 2)")
        self.num_classes = self.num_outputs = int(num_classes)
        self.k = max(1, min(int(cfg.topk), self.num_classes))  # top-k capped at the class count
        self.label_smoothing = float(cfg.label_smoothing)
        self.class_names = list(getattr(data, "class_names", None) or range(self.num_classes))
        self.stats = getattr(data, "stats", None)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)

    def new_meter(self) -> ClassificationMeter:
        return ClassificationMeter(self)

    def per_class(self, meter: Meter) -> list[dict[str, Any]]:
        """Per class: its samples, how many were classified right (recall), and how many samples
        were predicted as it; accuracy None for a class without samples in the split."""
        conf = meter.sums["confusion"].double().cpu()
        support, correct, predicted = conf.sum(1), conf.diag(), conf.sum(0)
        return [{"index": k, "class": str(self.class_names[k]), "samples": int(support[k]),
                 "predicted": int(predicted[k]),
                 "acc": float(correct[k] / support[k]) if support[k] > 0 else None}
                for k in range(self.num_classes)]

    def log_images(self, writer: Any, tag: str, x: Tensor, y: Tensor, out: Tensor, step: int,
                   max_images: int = 16) -> None:
        k = min(max_images, x.shape[0])
        imgs = images.upscale(images.denormalize(x[:k], self.stats))
        pred = out[:k].detach().argmax(1).cpu()
        true = y[:k].cpu()
        cells = []
        for i in range(k):
            ok = bool(pred[i] == true[i])
            lines = [f"p: {self.class_names[pred[i]]}"[:16], f"t: {self.class_names[true[i]]}"[:16]]
            cells.append(images.captioned(imgs[i], lines, (80, 230, 80) if ok else (255, 80, 80)))
        writer.add_image(tag, images.grid(cells), step)

    def log_epoch_images(self, writer: Any, meter: Meter, step: int, tag: str = "val") -> None:
        if isinstance(meter, ClassificationMeter):
            img = images.heatmap(meter.confusion, [str(c) for c in self.class_names], "true \\ predicted")
            writer.add_image(f"{tag}/confusion", img, step)
