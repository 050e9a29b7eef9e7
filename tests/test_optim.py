"""SGD/Adam/AdamW (coupled and decoupled weight decay) against hand-written updates; schedules
against their formulas and torch's schedulers; exact resume through weights_only state_dicts."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from vaitrain.errors import ConfigError
from vaitrain.optim import build_optimization
from vaitrain.optim.optimizers import split_decay
from vaitrain.schema.optim import OptimConfig, SchedConfig


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


TASK = SimpleNamespace(name="classification", loss=lambda out, y: nn.functional.cross_entropy(out, y))


def ocfg(**kw):
    c = OmegaConf.structured(OptimConfig)
    for k, v in kw.items():
        c[k] = v
    return c


def scfg(**kw):
    c = OmegaConf.structured(SchedConfig)
    c.name = "constant"
    for k, v in kw.items():
        c[k] = v
    return c


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


DECAYED = {"0.weight", "3.weight"}  # biases and the norm layer's weight/bias are exempt


def test_norm_parameters_and_biases_get_no_weight_decay():
    m = net()
    decay, exempt = split_decay(m.named_modules())
    names = {id(p): n for n, p in m.named_parameters()}
    assert {names[id(p)] for p in decay} == DECAYED
    assert {names[id(p)] for p in exempt} == {"0.bias", "1.weight", "1.bias", "3.bias"}


def _grads(m, steps):
    g = torch.Generator().manual_seed(123)
    return [{n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in m.named_parameters()}
            for _ in range(steps)]


def _run(opt, m, grads, lrs):
    for g, lr in zip(grads, lrs):
        for group in opt.optimizer.param_groups:
            group["lr"] = lr  # the decay must use the current (scheduled) rate
        for n, p in m.named_parameters():
            p.grad = g[n].clone()
        opt.optimizer.step()
    return {n: p.detach().clone() for n, p in m.named_parameters()}


def _hand_sgd(w0, grads, lrs, mom, nesterov, wd, decoupled):
    out = {}
    for n, w in w0.items():
        w, buf = w.clone(), None
        decay = wd if n in DECAYED else 0.0
        for g, lr in zip(grads, lrs):
            d = g[n].clone()
            if decoupled:
                w = w - lr * decay * w
            else:
                d = d + decay * w
            buf = d.clone() if buf is None else mom * buf + d
            d = d + mom * buf if nesterov else buf
            w = w - lr * d
        out[n] = w
    return out


def _hand_adam(w0, grads, lrs, b1, b2, eps, wd, decoupled):
    out = {}
    for n, w in w0.items():
        w = w.clone()
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        decay = wd if n in DECAYED else 0.0
        for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
            d = g[n].clone()
            if decoupled:
                w = w - lr * decay * w
            else:
                d = d + decay * w
            m = b1 * m + (1 - b1) * d
            v = b2 * v + (1 - b2) * d * d
            w = w - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        out[n] = w
    return out


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("decoupled", [False, True])
def test_sgd_matches_hand_update(nesterov, decoupled):
    m = net()
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    cfg = ocfg(name="sgd", lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=0.05, decoupled_wd=decoupled)
    opt = build_optimization(cfg, scfg(), m, TASK, steps_per_epoch=4, epochs=1)
    grads, lrs = _grads(m, 4), [0.1, 0.1, 0.05, 0.2]
    got = _run(opt, m, grads, lrs)
    want = _hand_sgd(w0, grads, lrs, 0.9, nesterov, 0.05, decoupled)
    for n in w0:
        torch.testing.assert_close(got[n], want[n], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,decoupled", [("adam", False), ("adam", True), ("adamw", True)])
def test_adam_and_adamw_match_hand_update(name, decoupled):
    m = net()
    w0 = {n: p.detach().clone() for n, p in m.named_parameters()}
    cfg = ocfg(name=name, lr=0.01, betas=[0.8, 0.99], eps=1e-8, weight_decay=0.1, decoupled_wd=decoupled)
    opt = build_optimization(cfg, scfg(), m, TASK, steps_per_epoch=4, epochs=1)
    grads, lrs = _grads(m, 4), [0.01, 0.02, 0.01, 0.005]
    got = _run(opt, m, grads, lrs)
    want = _hand_adam(w0, grads, lrs, 0.8, 0.99, 1e-8, 0.1, decoupled)
    for n in w0:
        torch.testing.assert_close(got[n], want[n], rtol=1e-10, atol=1e-12)


def test_coupled_and_decoupled_decay_differ_for_adam():
    results = []
    for decoupled in (False, True):
        m = net()
        cfg = ocfg(name="adam", lr=0.01, weight_decay=0.5, decoupled_wd=decoupled)
        opt = build_optimization(cfg, scfg(), m, TASK, steps_per_epoch=3, epochs=1)
        results.append(_run(opt, m, _grads(m, 3), [0.01] * 3)["0.weight"])
    assert not torch.allclose(results[0], results[1])


def test_optimizer_config_errors():
    with pytest.raises(ConfigError, match="adamw"):
        build_optimization(ocfg(name="adamw", decoupled_wd=False), scfg(), net(), TASK, steps_per_epoch=2, epochs=1)
    with pytest.raises(ConfigError, match="nesterov"):
        build_optimization(ocfg(name="sgd", nesterov=True, momentum=0.0), scfg(), net(), TASK,
                           steps_per_epoch=2, epochs=1)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_optimization(ocfg(), scfg(warmup_epochs=3), net(), TASK, steps_per_epoch=2, epochs=3)


# --- schedules ------------------------------------------------------------------------------

def _lrs(sched_cfg, steps_per_epoch, epochs, lr=1.0, steps=None):
    opt = build_optimization(ocfg(name="sgd", lr=lr, nesterov=False), sched_cfg, net(), TASK,
                             steps_per_epoch=steps_per_epoch, epochs=epochs)
    out = []
    for _ in range(steps or steps_per_epoch * epochs):
        out.append(opt.optimizer.param_groups[0]["lr"])  # the rate this step uses
        opt.optimizer.step()
        opt.scheduler.step()
    return out


def test_cosine_with_fractional_warmup_matches_formula():
    spe, epochs, lr, w, start, floor = 10, 5, 0.4, 5, 0.1, 0.004
    got = _lrs(scfg(name="cosine", warmup_epochs=0.5, warmup_start=start, min_lr=floor), spe, epochs, lr)
    total = spe * epochs
    for t, value in enumerate(got):
        if t < w:
            want = lr * (start + (1 - start) * t / w)
        else:
            want = floor + (lr - floor) * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2
        assert value == pytest.approx(want, rel=1e-9), t
    assert got[w] == pytest.approx(lr)


def _torch_lrs(make, steps, lr=1.0, per_epoch=None):
    p = nn.Parameter(torch.zeros(1))
    o = torch.optim.SGD([p], lr=lr)
    s = make(o)
    out = []
    for t in range(steps):
        out.append(o.param_groups[0]["lr"])
        o.step()
        if per_epoch is None or (t + 1) % per_epoch == 0:
            s.step()
    return out


def test_cosine_without_warmup_equals_torch_cosine_annealing():
    got = _lrs(scfg(name="cosine", min_lr=0.01), 6, 4, lr=0.5)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=24, eta_min=0.01), 24, lr=0.5)
    assert got == pytest.approx(ref, rel=1e-9)


def test_step_and_multistep_equal_torch_stepped_per_epoch():
    spe = 3
    got = _lrs(scfg(name="step", step_size=2, gamma=0.5), spe, 7)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5), spe * 7, per_epoch=spe)
    assert got == pytest.approx(ref)
    got = _lrs(scfg(name="multistep", milestones=[1, 4, 5], gamma=0.1), spe, 7)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [1, 4, 5], 0.1), spe * 7, per_epoch=spe)
    assert got == pytest.approx(ref)


def _onecycle_ref(total, lr, pct, div, final_div):
    make = lambda o: torch.optim.lr_scheduler.OneCycleLR(  # noqa: E731
        o, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy="cos", cycle_momentum=False,
        div_factor=div, final_div_factor=final_div, three_phase=False)
    return _torch_lrs(make, total, lr=lr)


def test_onecycle_equals_torch_onecycle():
    got = _lrs(scfg(name="onecycle", pct_start=0.25, div_factor=10.0, final_div_factor=100.0), 8, 5, lr=0.3)
    ref = _onecycle_ref(40, 0.3, 0.25, 10.0, 100.0)
    assert got == pytest.approx(ref, rel=1e-9)


def test_onecycle_after_warmup_is_torch_onecycle_over_the_rest():
    spe, epochs, w = 8, 5, 4
    got = _lrs(scfg(name="onecycle", warmup_epochs=0.5, warmup_start=0.2, pct_start=0.3), spe, epochs, lr=0.3)
    ref = _onecycle_ref(spe * epochs - w, 0.3, 0.3, 25.0, 1e4)
    assert got[w:] == pytest.approx(ref, rel=1e-9)
    assert got[:w] == pytest.approx([0.3 / 25 * (0.2 + 0.8 * t / w) for t in range(w)], rel=1e-9)


def test_constant_with_warmup():
    got = _lrs(scfg(name="constant", warmup_epochs=1, warmup_start=0.0), 4, 2, lr=0.2)
    assert got == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2])


# --- exact resume ---------------------------------------------------------------------------

def _roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name,decoupled", [("sgd", False), ("adam", True), ("adamw", True)])
def test_state_dict_roundtrip_gives_identical_steps(name, decoupled):
    torch.manual_seed(0)
    x, y = torch.randn(8, 3).double(), torch.randint(0, 2, (8,))
    optim_cfg = ocfg(name=name, lr=0.05, weight_decay=0.01, decoupled_wd=decoupled)
    sched_cfg = scfg(name="cosine", warmup_epochs=0.5, min_lr=0.001)

    def train(opt, steps):
        for _ in range(steps):
            loss, _ = opt.objective(opt.model, x, y)
            opt.optimizer.zero_grad()
            loss.backward()
            opt.optimizer.step()
            opt.scheduler.step()
            opt.after_step()

    a = build_optimization(optim_cfg, sched_cfg, net(0), TASK, steps_per_epoch=4, epochs=2)
    train(a, 3)
    state = _roundtrip({"model": a.model.state_dict(), "optimizer": a.optimizer.state_dict(),
                        "scheduler": a.scheduler.state_dict()})
    b = build_optimization(optim_cfg, sched_cfg, net(1), TASK, steps_per_epoch=4, epochs=2)
    b.model.load_state_dict(state["model"])
    b.optimizer.load_state_dict(state["optimizer"])
    b.scheduler.load_state_dict(state["scheduler"])
    train(a, 4)
    train(b, 4)
    assert a.optimizer.param_groups[0]["lr"] == b.optimizer.param_groups[0]["lr"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
