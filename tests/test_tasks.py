"""Classification and segmentation tasks: losses against hand computations, metrics from known
confusion matrices, meters over several batches, distributed all_reduce, images."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from vaitrain.errors import ConfigError
from vaitrain.schema.task import TaskConfig
from vaitrain.tasks import build_task
from vaitrain.tasks.segmentation import dice_loss, scores_from_confusion


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


def cfg(**kw):
    c = OmegaConf.structured(TaskConfig)
    for k, v in kw.items():
        c[k] = v
    return c


def data(num_classes=4, **kw):
    stats = {"mean": torch.tensor([0.5, 0.4, 0.3]), "std": torch.tensor([0.2, 0.25, 0.3])}
    return SimpleNamespace(num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes)],
                           stats=stats, target_dim=None, **kw)


class FakeWriter:
    def __init__(self):
        self.images = {}

    def add_image(self, tag, img, step):
        self.images[tag] = (img, step)


# --- classification -------------------------------------------------------------------------

def test_cross_entropy_with_label_smoothing_matches_manual():
    torch.manual_seed(0)
    eps, c = 0.1, 5
    task = build_task(cfg(label_smoothing=eps), data(c))
    out, y = torch.randn(7, c), torch.randint(0, c, (7,))
    logp = out.log_softmax(1)
    manual = [-(1 - eps) * logp[i, y[i]] - eps / c * logp[i].sum() for i in range(7)]
    assert task.loss(out, y).item() == pytest.approx(float(sum(manual) / 7), rel=1e-6)
    # without smoothing it is the NLL of the softmax
    plain = build_task(cfg(label_smoothing=0.0), data(c))
    assert plain.loss(out, y).item() == pytest.approx(float(-logp[range(7), y].mean()), rel=1e-6)


def test_topk_accuracy_and_confusion_by_hand():
    task = build_task(cfg(topk=2), data(4))
    assert (task.num_outputs, task.main_metric, task.main_mode, task.dense) == (4, "acc1", "max", False)
    out = torch.tensor([
        [0.9, 0.5, 0.1, 0.0],  # true 0: top1 hit
        [0.9, 0.5, 0.1, 0.0],  # true 1: 2nd place -> top2 hit
        [0.9, 0.5, 0.1, 0.0],  # true 2: miss
        [0.0, 0.1, 0.2, 0.3],  # true 3: top1 hit
    ])
    y = torch.tensor([0, 1, 2, 3])
    meter = task.new_meter()
    meter.update(out[:2], y[:2])  # two batches accumulate
    meter.update(out[2:], y[2:])
    res = meter.compute()
    assert res["acc1"] == pytest.approx(2 / 4)
    assert res["acc2"] == pytest.approx(3 / 4)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    for t, p in [(0, 0), (1, 0), (2, 0), (3, 3)]:
        expected[t, p] += 1
    assert torch.equal(meter.confusion.cpu(), expected)
    manual_loss = F.cross_entropy(out, y).item()
    assert res["loss"] == pytest.approx(manual_loss, rel=1e-6)


def test_topk_is_capped_at_the_class_count():
    task = build_task(cfg(topk=5), data(3))
    meter = task.new_meter()
    meter.update(torch.randn(6, 3), torch.randint(0, 3, (6,)))
    res = meter.compute()
    assert res["acc3"] == 1.0 and "acc5" not in res


def test_classification_images():
    task = build_task(cfg(), data(4))
    w = FakeWriter()
    x, y = torch.randn(5, 3, 16, 16), torch.randint(0, 4, (5,))
    out = torch.randn(5, 4)
    task.log_images(w, "val/samples", x, y, out, 7)
    img, step = w.images["val/samples"]
    assert step == 7 and img.dim() == 3 and img.shape[0] == 3 and 0 <= img.min() and img.max() <= 1
    meter = task.new_meter()
    meter.update(out, y)
    task.log_epoch_images(w, meter, 7)
    assert w.images["val/confusion"][0].shape[0] == 3


def test_build_task_errors():
    with pytest.raises(ConfigError, match="task.name"):
        build_task(cfg(name="detection"), data())
    with pytest.raises(ConfigError, match="regression targets"):
        build_task(cfg(name="regression"), data())
    with pytest.raises(ConfigError, match="class labels"):
        build_task(cfg(name="classification"), SimpleNamespace(num_classes=None, stats=None))


# --- segmentation ---------------------------------------------------------------------------

def test_miou_from_a_known_confusion_matrix():
    # rows true, cols predicted; class 2 appears in neither target nor prediction: left out
    conf = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    s = scores_from_confusion(conf)
    iou0, iou1 = 5 / (5 + 2 + 1), 3 / (3 + 1 + 2)
    assert s["miou"] == pytest.approx((iou0 + iou1) / 2)
    assert s["pixel_acc"] == pytest.approx(8 / 11)
    assert s["dice"] == pytest.approx((10 / 13 + 6 / 9) / 2)
    # a class predicted but never true still counts (IoU 0)
    conf2 = torch.tensor([[5, 1, 1], [2, 3, 0], [0, 0, 0]])
    assert scores_from_confusion(conf2)["miou"] == pytest.approx((5 / 9 + 3 / 6 + 0.0) / 3)


def test_segmentation_meter_accumulates_confusion_over_batches_and_skips_ignored():
    task = build_task(cfg(name="segmentation", ignore_index=255), data(3))
    assert task.dense and task.main_metric == "miou" and task.main_mode == "max"
    y = torch.tensor([[[0, 0, 1], [1, 2, 255]]])  # (1, 2, 3)
    pred = torch.tensor([[[0, 1, 1], [0, 2, 2]]])
    out = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 5
    meter = task.new_meter()
    meter.update(out, y)
    meter.update(out, y)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    for t, p in [(0, 0), (0, 1), (1, 1), (1, 0), (2, 2)]:
        expected[t, p] += 2
    assert torch.equal(meter.confusion.cpu(), expected)
    res = meter.compute()
    assert res["miou"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert res["pixel_acc"] == pytest.approx(3 / 5)


def test_segmentation_ce_ignores_pixels_and_all_ignored_batch_is_zero():
    torch.manual_seed(0)
    task = build_task(cfg(name="segmentation", ignore_index=255), data(3))
    out = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0, :2] = 255
    logp = out.detach().log_softmax(1)
    terms = [-logp[n, y[n, i, j], i, j] for n in range(2) for i in range(4) for j in range(4) if y[n, i, j] != 255]
    assert task.loss(out, y).detach().item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-6)
    loss = task.loss(out, torch.full((2, 4, 4), 255))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(out.grad).all()


def test_dice_loss_by_hand():
    # one image, 2 classes, 2 pixels; the second pixel ignored
    out = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # (1, 2, 1, 2)
    y = torch.tensor([[[1, 255]]])
    p1 = math.exp(0) / (math.exp(2) + math.exp(0))  # prob of class 1 at pixel 0
    p0 = 1 - p1
    # class 0: inter 0, sum p = p0, sum t = 0; class 1: inter p1, sum p = p1, sum t = 1
    d0 = (0 + 1) / (p0 + 0 + 1)
    d1 = (2 * p1 + 1) / (p1 + 1 + 1)
    assert dice_loss(out, y, 255).item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)
    task = build_task(cfg(name="segmentation", dice_weight=0.5), data(2))
    ce = -math.log(p1)
    assert task.loss(out, y).item() == pytest.approx(ce + 0.5 * (1 - (d0 + d1) / 2), rel=1e-6)


def test_segmentation_images():
    task = build_task(cfg(name="segmentation"), data(3))
    w = FakeWriter()
    y = torch.randint(0, 3, (2, 8, 8))
    y[0, 0] = 255
    task.log_images(w, "val/samples", torch.randn(2, 3, 8, 8), y, torch.randn(2, 3, 8, 8), 1)
    img = w.images["val/samples"][0]
    assert img.shape[0] == 3 and img.min() >= 0 and img.max() <= 1


# --- distributed meters ---------------------------------------------------------------------

def test_meter_all_reduce_sums_ranks_once(monkeypatch):
    """Two ranks simulated: torch.distributed's all_reduce adds the other rank's accumulator."""
    import torch.distributed as dist

    torch.manual_seed(0)
    out, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    task = build_task(cfg(topk=2), data(4))
    mine, other, single = task.new_meter(), task.new_meter(), task.new_meter()
    mine.update(out[:4], y[:4])
    other.update(out[4:], y[4:])
    single.update(out, y)
    pending = list(other.sums.values())  # the same accumulators, in the same order, on every rank

    def fake_all_reduce(t, op=None):
        t += pending.pop(0).to(t)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "gloo")
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    mine.all_reduce()
    mine.all_reduce()  # a second call must not add again
    assert not pending
    assert mine.compute() == pytest.approx(single.compute())
    assert torch.equal(mine.confusion, single.confusion)
    with pytest.raises(RuntimeError):
        mine.update(out, y)


def test_meter_all_reduce_in_a_real_process_group(tmp_path):
    """A one-process gloo group: the real collective runs and leaves the sums unchanged."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        task = build_task(cfg(), data(4))
        meter = task.new_meter()
        out, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
        meter.update(out, y)
        before = meter.compute()
        meter.all_reduce()
        assert meter.compute() == pytest.approx(before)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("topk", [1, 3])
def test_classification_metrics_reported_name_what_the_meter_computes(topk):
    """search.metric is checked against Task.metrics_reported: the keys a validation pass yields."""
    task = build_task(cfg(topk=topk), data(4))
    meter = task.new_meter()
    meter.update(torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0]))
    assert set(meter.compute()) == set(type(task).metrics_reported(cfg(topk=topk)))


def test_segmentation_metrics_reported_name_what_the_meter_computes():
    task = build_task(cfg(name="segmentation"), data(3))
    meter = task.new_meter()
    meter.update(torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4)))
    assert set(meter.compute()) == set(type(task).metrics_reported(cfg(name="segmentation")))
