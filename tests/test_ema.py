"""Issue 11: the EMA of the weights (trainer.ema) — hand-computed average, checkpoints, best.pt on
the EMA, and an interrupted run with EMA and augmentation on resuming to the uninterrupted one."""
from __future__ import annotations

import json
import signal

import pytest
import torch
from torch import nn

from crash_runs import invoke, the_run
from vaitrain.engine.checkpoint import load_checkpoint
from vaitrain.engine.checkpointing import StopFlag
from vaitrain.engine.ema import WeightEMA, ema_weights

pytestmark = pytest.mark.usefixtures("one_thread")

RUN = [
    "model=resnet20", "model.width_mult=0.25", "norm=batch", "optim=sgd", "optim.lr=0.05",
    "data.image_size=16", "data.num_train=96", "data.num_val=32", "trainer.batch_size=16", "trainer.epochs=2",
    "trainer.log_every=2", "trainer.progress=none", "trainer.image_every=0", "trainer.threads=1",
    "trainer.device=cpu", "trainer.ema=0.8", "data.augment=trivial", "data.mixup=0.2", "data.cutmix=1.0",
    "data.color_jitter=0.3", "data.erasing=0.25", "data.rotate=true",
]


def test_ema_after_k_steps_equals_the_hand_computed_average_of_weights_and_bn_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    decay = 0.7
    ema = WeightEMA(model, decay)
    expected: dict[str, torch.Tensor] = {}
    for k in range(6):
        loss = model(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update()
        for name, t in model.state_dict().items():
            if t.is_floating_point():  # e_1 = w_1, e_k = d e_(k-1) + (1 - d) w_k
                expected[name] = t.clone() if k == 0 else decay * expected[name] + (1 - decay) * t
    got = ema.module.state_dict()
    for name, value in expected.items():
        assert torch.allclose(got[name], value, atol=1e-6), name
    assert "1.running_mean" in expected and not torch.allclose(got["1.running_mean"], model[1].running_mean)
    assert int(ema.state_dict()["n_averaged"]) == 6


def _final(run) -> dict:
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [l for l in lines if l["kind"] == "final"][-1]


def test_ema_is_validated_checkpointed_and_a_mid_epoch_resume_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    ref = invoke(["train", *RUN, f"out_dir={tmp_path / 'ref'}"])
    assert ref.exit_code == 0, ref.output
    ref_run = the_run(tmp_path / "ref")
    final = _final(ref_run)
    assert "val_ema/acc1" in final and "val/acc1" in final
    state = load_checkpoint(ref_run / "checkpoints" / "last.pt")
    assert int(state["ema"]["n_averaged"]) == 12  # 2 epochs x 6 steps
    assert state["best"]["metric"] == "val_ema/acc1"  # best.pt is chosen on the EMA
    raw, avg = state["model"], ema_weights(state["ema"])
    assert raw.keys() == avg.keys() and any(not torch.equal(raw[k], avg[k]) for k in raw)

    calls = {"n": 0}

    def stop_at_step_4(self):  # a SIGTERM that arrives during step 4 (mid epoch 1)
        calls["n"] += 1
        return signal.SIGTERM if calls["n"] == 4 else 0

    with monkeypatch.context() as m:
        m.setattr(StopFlag, "agree", stop_at_step_4)
        cut = invoke(["train", *RUN, f"out_dir={tmp_path / 'cut'}"])
    assert cut.exit_code == 128 + signal.SIGTERM, cut.output  # stopped by the signal, last.pt written
    run = the_run(tmp_path / "cut")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    resumed = invoke(["train", f"resume={run}"])
    assert resumed.exit_code == 0, resumed.output
    a, b = load_checkpoint(ref_run / "checkpoints" / "last.pt"), load_checkpoint(run / "checkpoints" / "last.pt")
    for part in ("model", "ema"):
        for k, v in a[part].items():
            assert torch.allclose(v.float(), b[part][k].float(), atol=1e-6), (part, k)
    assert _final(run)["val_ema/acc1"] == pytest.approx(final["val_ema/acc1"])
    ev = invoke(["eval", str(ref_run)])
    assert ev.exit_code == 0 and "val_ema/acc1" in ev.output
