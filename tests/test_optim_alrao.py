"""Alrao: per-feature rates, the copies' log-spaced rates, gradient routing (copies on their own
losses, body on the averaged model's), the switch posterior, errors and exact resume."""
from __future__ import annotations

import copy
import io
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from vaitrain.errors import ConfigError
from vaitrain.optim import build_optimization
from vaitrain.optim.alrao import SWITCH_THETA, AlraoModel
from vaitrain.schema.optim import OptimConfig, SchedConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


TASK = SimpleNamespace(name="classification", loss=lambda out, y: F.cross_entropy(out, y))
LR_MIN, LR_MAX = 1e-3, 1.0


class Net(nn.Module):
    """conv -> group norm -> relu -> (Linear | 1x1 conv) head."""

    def __init__(self, conv_head: bool = False, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.norm = nn.GroupNorm(2, 6)
        self.conv_head = conv_head
        if conv_head:
            self.cls = nn.Conv2d(6, classes, 1)
            self.final_layer = "cls"
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(6 * 4 * 4, classes))
            self.final_layer = "head.1"

    def features(self, x):
        return torch.relu(self.norm(self.conv(x)))

    def forward(self, x):
        h = self.features(x)
        return self.cls(h).mean((2, 3)) if self.conv_head else self.head(h)


def ocfg(**kw):
    c = OmegaConf.structured(OptimConfig)
    c.update(dict(name="alrao", lr=1.0, lr_min=LR_MIN, lr_max=LR_MAX, copies=5, momentum=0.0,
                  nesterov=False, weight_decay=0.0, body="sgd"))
    for k, v in kw.items():
        c[k] = v
    return c


def build(seed=0, conv_head=False, sched="constant", **kw):
    torch.manual_seed(seed)
    model = Net(conv_head).double()
    s = OmegaConf.structured(SchedConfig)
    s.name = sched
    return build_optimization(ocfg(**kw), s, model, TASK, steps_per_epoch=4, epochs=2)


def data(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, 4, generator=g).double(), torch.randint(0, 4, (n,), generator=g)


def _unit_step(opt):
    """One optimizer step with every gradient 1: each element moves by exactly its rate."""
    before = {n: p.detach().clone() for n, p in opt.model.named_parameters()}
    for p in opt.model.parameters():
        p.grad = torch.ones_like(p)
    opt.optimizer.step()
    return {n: before[n] - p.detach() for n, p in opt.model.named_parameters()}


def test_body_rates_are_per_feature_and_inside_the_bounds():
    opt = build()
    delta = _unit_step(opt)
    w, b = delta["model.conv.weight"], delta["model.conv.bias"]
    rows = w.flatten(1)
    torch.testing.assert_close(rows, rows[:, :1].expand_as(rows))  # constant within an output channel
    torch.testing.assert_close(b, rows[:, 0])  # the bias of a feature shares its rate
    assert rows[:, 0].unique().numel() == 6  # drawn per feature, not per layer
    gw, gb = delta["model.norm.weight"], delta["model.norm.bias"]
    torch.testing.assert_close(gw, gb)  # the norm layer's per-channel scale and shift share one
    for r in (rows[:, 0], gw):
        assert (r >= LR_MIN * (1 - 1e-9)).all() and (r <= LR_MAX * (1 + 1e-9)).all()


def test_body_rates_are_log_uniform_and_seeded():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 4000), nn.Linear(4000, 3))
    model.final_layer = "1"
    s = OmegaConf.structured(SchedConfig)
    s.name = "constant"
    opt = build_optimization(ocfg(lr_min=1e-4, lr_max=1e2), s, model, TASK, steps_per_epoch=1, epochs=1)
    rates = next(iter(opt.optimizer.state.values()))["alrao_lr"].flatten()
    u = (rates.double().log() - math.log(1e-4)) / (math.log(1e2) - math.log(1e-4))  # should be U(0, 1)
    assert 0 <= u.min() and u.max() <= 1
    assert abs(u.mean().item() - 0.5) < 3 * math.sqrt(1 / 12 / 4000)
    assert abs((u < 0.25).float().mean().item() - 0.25) < 0.03
    # same seed, same draw; another seed, another
    first, again, other = build(seed=7), build(seed=7), build(seed=8)
    r = lambda o: torch.cat([s["alrao_lr"].flatten() for s in o.optimizer.state.values()])  # noqa: E731
    assert torch.equal(r(first), r(again)) and not torch.equal(r(first), r(other))


@pytest.mark.parametrize("conv_head", [False, True])
def test_copies_have_log_spaced_rates(conv_head):
    opt = build(conv_head=conv_head, copies=5)
    delta = _unit_step(opt)
    name = opt.model.final_layer  # model.head.1 or model.cls
    rates = []
    for j in range(5):
        w, b = delta[f"{name}.copies.{j}.weight"], delta[f"{name}.copies.{j}.bias"]
        assert torch.allclose(w, w.flatten()[0].expand_as(w)) and torch.allclose(b, w.flatten()[0].expand_as(b))
        rates.append(float(w.flatten()[0]))
    logs = [math.log(r) for r in rates]
    assert logs[0] == pytest.approx(math.log(LR_MIN), abs=1e-6)
    assert logs[-1] == pytest.approx(math.log(LR_MAX), abs=1e-6)
    steps = [b - a for a, b in zip(logs, logs[1:])]
    assert steps == pytest.approx([math.log(LR_MAX / LR_MIN) / 4] * 4, rel=1e-5)


def test_schedule_scales_every_alrao_rate():
    opt = build(sched="cosine", lr=0.5)
    delta = _unit_step(opt)
    ref = _unit_step(build(lr=1.0))
    for n in delta:
        torch.testing.assert_close(delta[n], 0.5 * ref[n])


@pytest.mark.parametrize("conv_head", [False, True])
def test_gradient_routing(conv_head):
    """Copies: gradient of their own losses on detached features. Body: gradient of the
    averaged model's loss with the copies held fixed. Reported loss: the averaged model's."""
    opt = build(conv_head=conv_head)
    model: AlraoModel = opt.model
    torch.manual_seed(1)
    with torch.no_grad():
        for c in model.head.copies:  # make the copies differ
            for p in c.parameters():
                p.add_(0.3 * torch.randn_like(p))
        model.apply_switch(torch.tensor([-1.0, -0.5, -2.0, -0.2, -1.5], dtype=torch.float64))
    x, y = data()
    model.train()
    loss, out = opt.objective(model, x, y)
    loss.backward()

    net = model.model
    copies = list(model.head.copies)

    def head(c, h, params=None):
        w, b = (params or (c.weight, c.bias))
        z = F.conv2d(h, w, b).mean((2, 3)) if conv_head else F.linear(h.flatten(1), w, b)
        return z

    h = net.features(x)
    logw = model.log_posterior
    logp = torch.stack([F.log_softmax(head(c, h, (c.weight.detach(), c.bias.detach())), 1) for c in copies])
    mix = torch.logsumexp(logp + logw[:, None, None], 0)
    mix_loss = F.cross_entropy(mix, y)
    assert loss.item() == pytest.approx(mix_loss.item(), rel=1e-12)
    assert torch.allclose(out, mix)
    body = [net.conv.weight, net.conv.bias, net.norm.weight, net.norm.bias]
    for p, g in zip(body, torch.autograd.grad(mix_loss, body)):
        torch.testing.assert_close(p.grad, g)
    for c in copies:
        own = F.cross_entropy(head(c, h.detach()), y)
        for p, g in zip((c.weight, c.bias), torch.autograd.grad(own, (c.weight, c.bias))):
            torch.testing.assert_close(p.grad, g)


def test_eval_output_is_log_of_posterior_averaged_probabilities():
    opt = build()
    model = opt.model
    model.apply_switch(torch.tensor([-3.0, -0.1, -1.0, -2.0, -0.5], dtype=torch.float64))
    model.eval()
    x, _ = data()
    with torch.no_grad():
        out = model(x)
        h = model.model.features(x).flatten(1)
        probs = sum(w * F.softmax(c(h), 1) for w, c in zip(model.posterior, model.head.copies))
    torch.testing.assert_close(out.exp().sum(1), torch.ones(len(x), dtype=out.dtype))
    torch.testing.assert_close(out, probs.log())


def test_switch_posterior_sums_to_one_and_follows_the_better_copy():
    opt = build(copies=4)
    model = opt.model
    ll = torch.tensor([-2.0, -1.0, -0.5, -3.0])
    history = []
    for _ in range(15):
        model.apply_switch(ll)
        post = model.posterior
        assert post.sum().item() == pytest.approx(1.0, abs=1e-12)
        history.append(post[2].item())
    assert int(model.posterior.argmax()) == 2
    assert all(b > a for a, b in zip(history, history[1:]))


def test_switch_update_matches_algorithm_1_by_hand():
    """van Erven et al. (2007), Algorithm 1, in plain floats: weights a (theta), b (1 - theta)."""
    n = 3
    opt = build(copies=n)
    model = opt.model
    wa = [SWITCH_THETA / n] * n
    wb = [(1 - SWITCH_THETA) / n] * n
    for t, ll in enumerate([[-1.0, -0.5, -2.0], [-0.3, -0.9, -0.1], [-2.0, -0.2, -0.4]], start=1):
        model.apply_switch(torch.tensor(ll, dtype=torch.float64))
        p = [math.exp(v) for v in ll]
        wa = [w * q for w, q in zip(wa, p)]
        wb = [w * q for w, q in zip(wb, p)]
        pi = 1 / (t + 1)
        pool = pi * sum(wa)
        wa = [w * (1 - pi) + pool * SWITCH_THETA / n for w in wa]
        wb = [w + pool * (1 - SWITCH_THETA) / n for w in wb]
        z = sum(wa) + sum(wb)
        post = [(a + b) / z for a, b in zip(wa, wb)]
        assert model.posterior.tolist() == pytest.approx(post, rel=1e-9)


def test_after_step_updates_the_posterior_from_the_copies_losses():
    opt = build(copies=3)
    model = opt.model
    x, y = data()
    model.train()
    lls = []
    for half in (slice(0, 4), slice(4, 8)):  # two micro-batches (gradient accumulation)
        opt.objective(model, x[half], y[half])
        with torch.no_grad():
            h = model.model.features(x[half]).flatten(1)
            lls.append(torch.stack([-F.cross_entropy(c(h), y[half]) for c in model.head.copies]))
    ref = copy.deepcopy(model)
    ref.apply_switch((lls[0] + lls[1]) / 2)
    opt.after_step()
    torch.testing.assert_close(model.log_posterior, ref.log_posterior)
    assert int(model.switch_t) == 2
    opt.after_step()  # nothing recorded since: no change
    assert int(model.switch_t) == 2


def test_alrao_errors():
    torch.manual_seed(0)
    s = OmegaConf.structured(SchedConfig)
    with pytest.raises(ConfigError, match="classification"):
        build_optimization(ocfg(), s, Net().double(), SimpleNamespace(name="regression"), steps_per_epoch=1, epochs=1)
    with pytest.raises(ConfigError, match="lr_min"):
        build(lr_min=1.0, lr_max=0.1)
    bad = Net()
    bad.final_layer = "norm"
    with pytest.raises(ConfigError, match="Linear or Conv2d"):
        build_optimization(ocfg(), s, bad, TASK, steps_per_epoch=1, epochs=1)


@pytest.mark.parametrize("body,momentum", [("sgd", 0.9), ("adam", 0.0)])
def test_state_roundtrip_with_weights_only_gives_identical_steps(body, momentum):
    x, y = data()

    def train(opt, steps):
        opt.model.train()
        for _ in range(steps):
            loss, _ = opt.objective(opt.model, x, y)
            opt.optimizer.zero_grad()
            loss.backward()
            opt.optimizer.step()
            opt.scheduler.step()
            opt.after_step()

    kw = dict(body=body, momentum=momentum, lr_min=1e-4, lr_max=0.1, weight_decay=1e-3, sched="cosine")
    a = build(seed=0, **kw)
    train(a, 2)
    buf = io.BytesIO()
    torch.save({"model": a.model.state_dict(), "optimizer": a.optimizer.state_dict(),
                "scheduler": a.scheduler.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = build(seed=1, **kw)  # other weights and other rates until the state is loaded
    b.model.load_state_dict(state["model"])
    b.optimizer.load_state_dict(state["optimizer"])
    b.scheduler.load_state_dict(state["scheduler"])
    train(a, 3)
    train(b, 3)
    for (n, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(pa, pb), n
    assert torch.equal(a.model.log_posterior, b.model.log_posterior)
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"]


def test_alrao_learns_a_separable_problem():
    opt = build(lr_min=1e-3, lr_max=1.0, copies=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 4, 4, generator=g).double()
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    opt.model.train()
    first = None
    for _ in range(60):
        loss, _ = opt.objective(opt.model, x, y)
        first = first if first is not None else loss.item()
        opt.optimizer.zero_grad()
        loss.backward()
        opt.optimizer.step()
        opt.after_step()
    assert loss.item() < 0.5 * first


@pytest.mark.parametrize("name", ["resnet20", "densenet40", "randwire_small", "selu_mlp", "plain_cnn"])
def test_alrao_wraps_zoo_models(name):
    """Each family's final layer is found, replaced by copies, and a step trains every part."""
    from vaitrain.config import compose
    from vaitrain.models import build_model

    cfg = compose([f"model={name}", "optim=alrao", "optim.copies=3", "optim.lr_max=0.1", "sched=constant"])
    torch.manual_seed(0)
    net = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=5, image_size=16)
    opt = build_optimization(cfg.optim, cfg.sched, net, TASK, steps_per_epoch=1, epochs=1)
    x, y = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 4])
    opt.model.train()
    loss, out = opt.objective(opt.model, x, y)
    loss.backward()
    missing = [n for n, p in opt.model.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    opt.optimizer.step()
    opt.after_step()
    opt.model.eval()
    with torch.no_grad():
        out = opt.model(x)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(4))


def test_switch_state_starts_on_the_models_device():
    wrapped = AlraoModel(Net().to("meta"), 3)  # stands in for a model already moved to a GPU
    assert {b.device.type for b in wrapped.buffers()} == {"meta"}
