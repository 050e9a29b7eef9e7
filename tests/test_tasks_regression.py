"""Regression heads: plain, Gaussian (mean + std) and mixture density, against torch references
and hand computations; metrics in the targets' original units."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.distributions as D
from omegaconf import OmegaConf

from vaitrain.schema.task import TaskConfig
from vaitrain.tasks import build_task


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest


MEAN, STD = torch.tensor([10.0, -5.0]), torch.tensor([2.0, 4.0])


def task(head="plain", dim=2, stats=True, **kw):
    c = OmegaConf.structured(TaskConfig)
    c.name, c.head = "regression", head
    for k, v in kw.items():
        c[k] = v
    st = {"mean": torch.zeros(3), "std": torch.ones(3)}
    if stats:
        st.update(target_mean=MEAN[:dim], target_std=STD[:dim])
    return build_task(c, SimpleNamespace(num_classes=None, target_dim=dim, stats=st, class_names=None))


def mdn_out(logit_alpha, s, mu):
    """Pack (N, K), (N, K), (N, K, D) into the documented MDN layout."""
    return torch.cat([logit_alpha, s, mu.flatten(1)], 1)


def test_output_sizes_and_main_metric():
    assert task("plain").num_outputs == 2
    assert task("gaussian").num_outputs == 4
    t = task("mdn", components=3)
    assert t.num_outputs == 3 * (2 + 2)
    assert (t.main_metric, t.main_mode, t.dense) == ("rmse", "min", False)


def test_plain_losses():
    torch.manual_seed(0)
    out, y = torch.randn(6, 2), torch.randn(6, 2)
    assert task(loss="mse").loss(out, y).item() == pytest.approx(float(((out - y) ** 2).mean()), rel=1e-6)
    assert task(loss="l1").loss(out, y).item() == pytest.approx(float((out - y).abs().mean()), rel=1e-6)


@pytest.mark.parametrize("param", ["softplus", "exp"])
def test_gaussian_nll_matches_manual(param):
    torch.manual_seed(1)
    t = task("gaussian", sigma_param=param, min_sigma=1e-3)
    out, y = torch.randn(4, 4), torch.randn(4, 2)
    total = 0.0
    for n in range(4):
        for d in range(2):
            s = float(out[n, 2 + d])
            sigma = (math.log1p(math.exp(s)) if param == "softplus" else math.exp(s)) + 1e-3
            mu = float(out[n, d])
            total += math.log(sigma) + 0.5 * ((float(y[n, d]) - mu) / sigma) ** 2 + 0.5 * math.log(2 * math.pi)
    assert t.loss(out, y).item() == pytest.approx(total / 4, rel=1e-5)


@pytest.mark.parametrize("param", ["softplus", "exp"])
def test_mdn_with_one_component_and_fixed_sigma_is_the_gaussian_nll(param):
    """torch's GaussianNLLLoss takes the variance and averages over all N*D elements; the MDN
    loss sums over D and averages over N, so MDN = D * GaussianNLL(full=True), and with
    full=False (no 0.5 log 2 pi per element) MDN = D * GaussianNLL + D/2 log(2 pi)."""
    torch.manual_seed(2)
    n, dim, sigma, min_sigma = 8, 2, 0.7, 1e-3
    t = task("mdn", components=1, sigma_param=param, min_sigma=min_sigma)
    s = math.log(math.expm1(sigma - min_sigma)) if param == "softplus" else math.log(sigma - min_sigma)
    mu, y = torch.randn(n, dim), torch.randn(n, dim)
    out = mdn_out(torch.randn(n, 1), torch.full((n, 1), s), mu[:, None, :])
    var = torch.full((n, dim), sigma**2)
    full = torch.nn.GaussianNLLLoss(full=True)(mu, y, var).item()
    part = torch.nn.GaussianNLLLoss(full=False)(mu, y, var).item()
    mdn = t.loss(out, y).item()
    assert mdn == pytest.approx(dim * full, rel=1e-5)
    assert mdn == pytest.approx(dim * part + dim / 2 * math.log(2 * math.pi), rel=1e-5)


def test_mdn_nll_matches_torch_mixture_distribution():
    torch.manual_seed(3)
    n, k, dim = 5, 3, 2
    t = task("mdn", components=k, sigma_param="exp", min_sigma=0.0)
    la, s, mu, y = torch.randn(n, k), torch.randn(n, k) * 0.5, torch.randn(n, k, dim), torch.randn(n, dim)
    comp = D.Independent(D.Normal(mu, s.exp()[..., None].expand(n, k, dim)), 1)
    ref = -D.MixtureSameFamily(D.Categorical(logits=la), comp).log_prob(y).mean()
    assert t.loss(mdn_out(la, s, mu), y).item() == pytest.approx(ref.item(), rel=1e-5)


def test_mdn_stays_finite_with_tiny_sigma_and_far_targets():
    """sigma = 1e-3 and distance 1e3: each density is exp(-5e11), zero in any float; the
    log-sum-exp gives the finite value, and finite gradients."""
    t = task("mdn", dim=1, components=2, sigma_param="exp", min_sigma=0.0)
    sig = 1e-3
    la = torch.tensor([[0.3, -0.2]])
    s = torch.full((1, 2), math.log(sig))
    mu = torch.tensor([[[1e3], [-1e3 - 1.0]]])
    out = mdn_out(la, s, mu).requires_grad_(True)
    y = torch.zeros(1, 1)
    loss = t.loss(out, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(out.grad).all()
    # by hand in float64: log alpha_k + log N_k, then log-sum-exp with the max taken out
    log_alpha = torch.log_softmax(la.double(), 1)[0].tolist()
    terms = [log_alpha[j] - math.log(sig) - d**2 / (2 * sig**2) - 0.5 * math.log(2 * math.pi)
             for j, d in enumerate([1e3, 1e3 + 1.0])]
    m = max(terms)
    expected = -(m + math.log(sum(math.exp(x - m) for x in terms)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    naive = (torch.softmax(la, 1) * torch.exp(-(mu[..., 0] ** 2) / (2 * sig**2))).sum()
    assert naive.item() == 0.0  # what the log-sum-exp avoids


def test_plain_metrics_in_original_units():
    torch.manual_seed(4)
    t = task("plain")
    out, y = torch.randn(6, 2), torch.randn(6, 2)
    m = t.new_meter()
    m.update(out[:3], y[:3])
    m.update(out[3:], y[3:])
    res = m.compute()
    diff = (out * STD + MEAN) - (y * STD + MEAN)
    assert res["rmse"] == pytest.approx(float(diff.pow(2).mean().sqrt()), rel=1e-5)
    assert res["mae"] == pytest.approx(float(diff.abs().mean()), rel=1e-5)
    assert res["err"] == pytest.approx(float(diff.pow(2).mean(1).sqrt().mean()), rel=1e-5)
    assert "best_of_k" not in res and "nll" not in res  # one mean, no density: err says it all


def test_gaussian_nll_metric_is_in_original_units():
    torch.manual_seed(5)
    t = task("gaussian", sigma_param="exp", min_sigma=0.0)
    out, y = torch.randn(5, 4), torch.randn(5, 2)
    m = t.new_meter()
    m.update(out, y)
    mu, sig = out[:, :2] * STD + MEAN, out[:, 2:].exp() * STD
    ref = -D.Normal(mu, sig).log_prob(y * STD + MEAN).sum(1).mean()
    assert m.compute()["nll"] == pytest.approx(ref.item(), rel=1e-5)


def test_mdn_point_prediction_is_the_most_likely_component_and_best_of_k():
    t = task("mdn", dim=1, components=2, stats=False)
    # sample 0: component 1 more likely (alpha), component 0 closer to the target
    la = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    s = torch.zeros(2, 2)
    mu = torch.tensor([[[1.0], [4.0]], [[-2.0], [0.5]]])
    y = torch.tensor([[1.5], [0.0]])
    m = t.new_meter()
    m.update(mdn_out(la, s, mu), y)
    res = m.compute()
    # point predictions 4.0 and -2.0: errors 2.5 and 2.0; best of K: 0.5 and 0.5
    assert res["rmse"] == pytest.approx(math.sqrt((2.5**2 + 2.0**2) / 2))
    assert res["mae"] == pytest.approx((2.5 + 2.0) / 2)
    assert res["best_of_k"] == pytest.approx(0.5)


def test_mdn_fits_two_modes_that_one_gaussian_cannot():
    """Targets +-1 with nothing to tell them apart: the best Gaussian is N(0, 1) (error 1 on
    every sample); two components capture both modes (best-of-K error near 0, lower NLL)."""
    torch.manual_seed(6)
    y = torch.tensor([[1.0], [-1.0]]).repeat(32, 1)
    results = {}
    for head in ("gaussian", "mdn"):
        t = task(head, dim=1, components=2, stats=False)
        raw = torch.zeros(1, t.num_outputs)
        if head == "mdn":
            raw[0, 4:] = torch.tensor([0.3, -0.2])  # the two means start apart
        raw.requires_grad_(True)
        opt = torch.optim.Adam([raw], lr=0.05)
        for _ in range(200):  # fit the head's raw outputs directly
            opt.zero_grad()
            t.loss(raw.expand(len(y), -1), y).backward()
            opt.step()
        m = t.new_meter()
        m.update(raw.detach().expand(len(y), -1), y)
        results[head] = m.compute()
    g, mix = results["gaussian"], results["mdn"]
    assert g["best_of_k"] == pytest.approx(1.0, abs=0.05)
    assert mix["best_of_k"] < 0.1
    assert mix["nll"] < g["nll"] - 1.0


def test_regression_images():
    class W:
        images = {}

        def add_image(self, tag, img, step):
            self.images[tag] = img

    t = task("mdn", components=2)
    w = W()
    t.log_images(w, "val/samples", torch.randn(3, 3, 8, 8), torch.randn(3, 2), torch.randn(3, t.num_outputs), 0)
    assert w.images["val/samples"].shape[0] == 3



@pytest.mark.parametrize("head", ["plain", "gaussian", "mdn"])
def test_metrics_reported_names_what_the_meter_computes(head):
    """search.metric is checked against Task.metrics_reported: it must name exactly the keys a
    validation pass yields (here a real regression meter on one batch)."""
    t = task(head)
    m = t.new_meter()
    m.update(torch.randn(4, t.num_outputs), torch.randn(4, 2))
    assert set(m.compute()) == set(type(t).metrics_reported(OmegaConf.create({"head": head})))
