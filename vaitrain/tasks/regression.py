"""Regression with three heads on standardized targets y (N, D).

Output layouts (what the model's last layer produces, D = target_dim):
- plain:    (N, D) predictions; loss MSE or L1 (`task.loss`).
- gaussian: (N, 2D) = [mu (D) | s (D)], a mean and a scale per target dimension; loss the
            Gaussian NLL -log N(y | mu, diag(sigma^2)), summed over D, averaged over N.
- mdn:      (N, K(D+2)) = [alpha logits (K) | s (K) | mu (K*D, component-major)]; component k is
            N(mu_k, sigma_k^2 I) (one scale per component); loss -log sum_k alpha_k N(y | mu_k,
            sigma_k^2 I) by log-sum-exp.

Scale parameterizations (`task.sigma_param`), both floored smoothly at min_sigma:
- softplus: sigma = softplus(s) + min_sigma.
- exp:      s is log-sigma: sigma = exp(s) + min_sigma; log sigma = logaddexp(s, log min_sigma)
            is computed without forming sigma, so large |s| stays finite.

NLLs include the 0.5 log(2 pi) constant per dimension, so they are true negative log densities.
Metrics are in the targets' original units: predictions are mapped back with the training
split's target_mean/target_std; `nll` adds sum_d log target_std_d (the change of variables).
- rmse, mae: over all target elements, of the point prediction (gaussian: mu; mdn: the mean of
  the component with the highest alpha_k);
- err: per-sample Euclidean error of the point prediction divided by sqrt(D) (an RMS over
  dimensions), averaged over samples;
- best_of_k (gaussian, mdn): the same per-sample error of the closest of the K means ("multiple
  hypotheses"), averaged over samples (= err for the gaussian head);
- nll (gaussian, mdn): mean per-sample NLL.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from vaitrain.errors import ConfigError
from vaitrain.tasks import images
from vaitrain.tasks.base import Meter, Task

LOG_2PI = math.log(2 * math.pi)


def log_sigma(s: Tensor, param: str, min_sigma: float) -> Tensor:
    """log of the scale from the raw output s (see the module docstring)."""
    if param == "softplus":
        return torch.log(F.softplus(s) + min_sigma)
    if param == "exp":
        if min_sigma <= 0:
            return s
        return torch.logaddexp(s, torch.full_like(s, math.log(min_sigma)))
    raise ConfigError(f"task.sigma_param={param} is not a valid choice; choose one of: softplus, exp")


def gaussian_nll(mu: Tensor, logsig: Tensor, y: Tensor) -> Tensor:
    """Per-sample -log N(y | mu, diag(exp(logsig)^2)), (N,) for (N, D) inputs. Not
    F.gaussian_nll_loss: that takes a variance and clamps it at 1e-6, which changes the density
    below sigma = 1e-3 (task.min_sigma may be lower); this stays in log-sigma (tests/test_user_feedback.py compares the two)."""
    z = (y - mu) * torch.exp(-logsig)
    return (logsig + 0.5 * z * z + 0.5 * LOG_2PI).sum(-1)


def mdn_nll(logit_alpha: Tensor, mu: Tensor, logsig: Tensor, y: Tensor) -> Tensor:
    """Per-sample -log sum_k alpha_k N(y | mu_k, sigma_k^2 I).

    logit_alpha (N, K), mu (N, K, D), logsig (N, K), y (N, D) -> (N,). Each component's log
    density is formed in log space and combined with logsumexp, so tiny sigma and far targets
    give large finite values rather than log(0).
    """
    d = y.shape[-1]
    sq = ((y[:, None, :] - mu) ** 2).sum(-1)  # (N, K)
    log_comp = -d * logsig - 0.5 * sq * torch.exp(-2 * logsig) - 0.5 * d * LOG_2PI
    return -torch.logsumexp(F.log_softmax(logit_alpha, -1) + log_comp, dim=-1)


class RegressionMeter(Meter):
    def __init__(self, task: "RegressionTask"):
        # best_of_k and nll only where they say something: a plain head has one mean and no density
        keys = ["loss", "count", "sq", "abs", "elems", "err"] + (["best", "nll"] if task.head != "plain" else [])
        super().__init__({k: () for k in keys})
        self.task = task

    @torch.no_grad()
    def update(self, out: Tensor, y: Tensor) -> None:
        self._check_open()
        t = self.task
        n, d = y.shape
        self._add("loss", t.loss(out, y) * n)
        self._add("count", torch.tensor(float(n), device=out.device))
        p = t.decode(out)
        mean, std = t.target_stats(y.device)
        y_orig = y.float() * std + mean
        pred = p["pred"] * std + mean
        diff = pred - y_orig
        self._add("sq", (diff**2).sum())
        self._add("abs", diff.abs().sum())
        self._add("elems", torch.tensor(float(diff.numel()), device=out.device))
        self._add("err", diff.pow(2).mean(-1).sqrt().sum())
        means = p["means"] * std + mean  # (N, K, D)
        per_k = (means - y_orig[:, None, :]).pow(2).mean(-1).sqrt()  # (N, K)
        if "best" in self.sums:
            self._add("best", per_k.min(-1).values.sum())
        if t.head != "plain":
            self._add("nll", (t.nll(out, y) + torch.log(std).sum()).sum())

    def compute(self) -> dict[str, float]:
        s = {k: float(v) for k, v in self.sums.items()}
        n, e = max(s["count"], 1.0), max(s["elems"], 1.0)
        res = {
            "loss": s["loss"] / n,
            "rmse": math.sqrt(s["sq"] / e),
            "mae": s["abs"] / e,
            "err": s["err"] / n,
        }
        if "best" in s:
            res["best_of_k"] = s["best"] / n
        if "nll" in s:
            res["nll"] = s["nll"] / n
        return res


class RegressionTask(Task):
    name = "regression"
    dense = False
    main_metric = "rmse"
    main_mode = "min"
    metric_modes = {"loss": "min", "rmse": "min", "mae": "min", "err": "min", "best_of_k": "min"}

    @classmethod
    def metrics_reported(cls, task_cfg: Any) -> dict[str, str]:
        modes = {**cls.metric_modes, **({"nll": "min"} if str(task_cfg.head) != "plain" else {})}
        return modes if str(task_cfg.head) != "plain" else {k: v for k, v in modes.items() if k != "best_of_k"}

    def __init__(self, cfg: Any, data: Any):
        dim = getattr(data, "target_dim", None)
        if not dim or dim < 1:
            raise ConfigError("task=regression needs a dataset with regression targets (target_dim >= 1)")
        self.dim = int(dim)
        self.head = str(cfg.head)
        self.plain_loss = str(cfg.loss)
        self.k = int(cfg.components) if self.head == "mdn" else 1
        self.sigma_param = str(cfg.sigma_param)
        self.min_sigma = float(cfg.min_sigma)
        if self.head not in ("plain", "gaussian", "mdn"):
            raise ConfigError(f"task.head={self.head} is not a valid choice; choose one of: plain, gaussian, mdn")
        if self.head == "plain" and self.plain_loss not in ("mse", "l1"):
            raise ConfigError(f"task.loss={self.plain_loss} is not a valid choice; choose one of: mse, l1")
        if self.k < 1:
            raise ConfigError(f"task.components={self.k} must be >= 1")
        self.num_outputs = {"plain": self.dim, "gaussian": 2 * self.dim, "mdn": self.k * (self.dim + 2)}[self.head]
        stats: Mapping[str, Tensor] | None = getattr(data, "stats", None)
        self.stats = stats
        d = self.dim
        self._mean = torch.as_tensor(stats["target_mean"]).float().view(d) if stats and "target_mean" in stats else torch.zeros(d)
        self._std = torch.as_tensor(stats["target_std"]).float().view(d) if stats and "target_std" in stats else torch.ones(d)

    def target_stats(self, device: torch.device) -> tuple[Tensor, Tensor]:
        return self._mean.to(device), self._std.to(device)

    def decode(self, out: Tensor) -> dict[str, Tensor]:
        """Split the raw output into the head's parts (standardized units); `pred` is the point
        prediction and `means` (N, K, D) the hypotheses."""
        out = out.float()
        n, d, k = out.shape[0], self.dim, self.k
        if out.shape[1] != self.num_outputs:
            raise ValueError(f"regression head {self.head} expects {self.num_outputs} outputs, got {out.shape[1]}")
        if self.head == "plain":
            return {"pred": out, "means": out[:, None, :]}
        if self.head == "gaussian":
            mu, logsig = out[:, :d], log_sigma(out[:, d:], self.sigma_param, self.min_sigma)
            return {"pred": mu, "means": mu[:, None, :], "mu": mu, "logsig": logsig}
        logit_alpha = out[:, :k]
        logsig = log_sigma(out[:, k : 2 * k], self.sigma_param, self.min_sigma)
        mu = out[:, 2 * k :].reshape(n, k, d)
        top = logit_alpha.argmax(-1)
        pred = mu[torch.arange(n, device=out.device), top]
        return {"pred": pred, "means": mu, "logit_alpha": logit_alpha, "logsig": logsig, "mu": mu}

    def nll(self, out: Tensor, y: Tensor) -> Tensor:
        """Per-sample NLL in standardized units (density heads)."""
        p = self.decode(out)
        y = y.float()
        if self.head == "gaussian":
            return gaussian_nll(p["mu"], p["logsig"], y)
        return mdn_nll(p["logit_alpha"], p["mu"], p["logsig"], y)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        if self.head == "plain":
            fn = F.mse_loss if self.plain_loss == "mse" else F.l1_loss
            return fn(out.float(), y.float())
        p = self.decode(out)
        y = y.float()
        if self.head == "gaussian":
            return gaussian_nll(p["mu"], p["logsig"], y).mean()
        return mdn_nll(p["logit_alpha"], p["mu"], p["logsig"], y).mean()

    def new_meter(self) -> RegressionMeter:
        return RegressionMeter(self)

    def log_images(self, writer: Any, tag: str, x: Tensor, y: Tensor, out: Tensor, step: int,
                   max_images: int = 16) -> None:
        """Inputs captioned with the target and the point prediction (original units, first 3 dims)."""
        k = min(max_images, x.shape[0])
        imgs = images.upscale(images.denormalize(x[:k], self.stats))
        mean, std = self.target_stats(torch.device("cpu"))
        with torch.no_grad():
            pred = self.decode(out[:k].detach().cpu())["pred"] * std + mean
        true = y[:k].detach().float().cpu() * std + mean

        def fmt(v: Tensor) -> str:
            return ",".join(f"{float(a):.3g}" for a in v[:3])

        cells = [images.captioned(imgs[i], [f"t:{fmt(true[i])}", f"p:{fmt(pred[i])}"]) for i in range(k)]
        writer.add_image(tag, images.grid(cells), step)
