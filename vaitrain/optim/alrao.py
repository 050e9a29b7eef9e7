"""Alrao: learning with random learning rates (Blier, Wolinski, Ollivier, 2019).

- Body: every feature (output neuron of a Linear, output channel of a conv, channel of a norm
  layer) gets its own rate, drawn once log-uniform in [lr_min, lr_max]; a module's weight and
  bias rows of one feature share it. Parameters of other modules get one draw per index of
  their first dimension.
- Final layer (`model.final_layer`): replaced by `copies` copies, copy j with the fixed rate
  exp(log lr_min + j/(n-1) log(lr_max/lr_min)) (one copy: the geometric mean of the bounds).
  Each copy is trained on its own loss, computed on detached features.
- The body is trained on the loss of the averaged model: log sum_j w_j softmax(z_j), the copies'
  parameters detached in that path. The weights w are the posterior of the "switch" model
  averaging of van Erven, Grunwald and de Rooij (2007, Algorithm 1), updated after every step
  from each copy's mean log-likelihood on the batch (as the Alrao authors' implementation does).
- `optim.lr` multiplies every rate (1.0 = the paper's fixed rates), so the `sched` group still
  applies; `sched=constant` gives plain Alrao.

State: the switch weights are buffers of the wrapped model, the per-feature rates and the inner
optimizer's moments live in the optimizer's state_dict; all tensors, so weights_only loading works.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vaitrain.errors import ConfigError
from vaitrain.optim.optimizers import NORM_TYPES, split_decay

SWITCH_THETA = 0.9999  # prior mass of the "no more switching" half of the switch distribution


def copy_rates(lr_min: float, lr_max: float, n: int) -> list[float]:
    """The copies' log-spaced rates."""
    if n == 1:
        return [math.sqrt(lr_min * lr_max)]
    return [math.exp(math.log(lr_min) + j / (n - 1) * math.log(lr_max / lr_min)) for j in range(n)]


def _log_uniform(n: int, lr_min: float, lr_max: float, gen: torch.Generator) -> Tensor:
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(lr_min) + u * (math.log(lr_max) - math.log(lr_min))).float()


def _features(module: nn.Module) -> int | None:
    """Number of output features of a Linear / conv / norm module, else None."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, NORM_TYPES):
        w = getattr(module, "weight", None)
        return int(w.shape[0]) if w is not None else None
    return None


def feature_rates(module: nn.Module, lr_min: float, lr_max: float, gen: torch.Generator) -> dict[str, Tensor]:
    """Rates (broadcastable to each parameter) for the module's own parameters."""
    rates: dict[str, Tensor] = {}
    feats = _features(module)
    shared = _log_uniform(feats, lr_min, lr_max, gen) if feats else None
    for name, p in module.named_parameters(recurse=False):
        if shared is not None and isinstance(module, nn.modules.conv._ConvTransposeNd) and name == "weight":
            # weight (in, out/groups, ...): output channel g*out_g + j sits at [group g rows, j]
            g = module.groups
            r = shared.view(g, 1, -1).expand(g, p.shape[0] // g, -1).reshape(p.shape[0], p.shape[1])
            rates[name] = r.reshape(*r.shape, *([1] * (p.dim() - 2)))
        elif shared is not None and p.dim() >= 1 and p.shape[0] == feats:
            rates[name] = shared.view(feats, *([1] * (p.dim() - 1)))
        else:
            n = p.shape[0] if p.dim() else 1
            rates[name] = _log_uniform(n, lr_min, lr_max, gen).view(n, *([1] * max(p.dim() - 1, 0)))
            if p.dim() == 0:
                rates[name] = rates[name].view(())
    return rates


def _at_least_fp32(t: Tensor) -> Tensor:
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


class AlraoHead(nn.Module):
    """Stands in for the final layer: its copies' outputs stacked along the batch dimension.

    Training with gradients: 2n blocks, first each copy on detached features (trains the
    copies), then each copy with detached parameters on the live features (trains the body).
    Otherwise n blocks. Stacking on the batch keeps whatever per-sample ops follow the final
    layer in the model (flatten, pooling after a 1x1 conv) working unchanged.
    """

    def __init__(self, layer: nn.Module, copies: int):
        super().__init__()
        self.copies = nn.ModuleList(copy.deepcopy(layer) for _ in range(copies))

    def forward(self, h: Tensor) -> Tensor:
        if self.training and torch.is_grad_enabled():
            own = [c(h.detach()) for c in self.copies]
            body = [
                functional_call(c, {k: v.detach() for k, v in c.named_parameters()}, (h,))
                for c in self.copies
            ]
            return torch.cat(own + body, 0)
        return torch.cat([c(h) for c in self.copies], 0)


class AlraoModel(nn.Module):
    """The model with its final layer replaced by an AlraoHead; forward returns log p_mix."""

    def __init__(self, model: nn.Module, copies: int):
        super().__init__()
        name = getattr(model, "final_layer", None)
        if not name:
            raise ConfigError("optim=alrao needs a model with a final_layer attribute")
        layer = model.get_submodule(name)
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise ConfigError(f"optim=alrao: the final layer {name} is a {type(layer).__name__}, "
                              "not a Linear or Conv2d")
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, AlraoHead(layer, copies))
        self.model = model
        self.n = copies
        self.head_name = name
        self.final_layer = f"model.{name}"
        # Switch state (Algorithm 1 of van Erven et al.): row 0 "a" weights, row 1 "b" weights.
        # float64: the posterior must stay normalized over many thousands of updates.
        dev = next(model.parameters()).device  # the buffers start where the model already is
        prior = torch.tensor([[SWITCH_THETA], [1 - SWITCH_THETA]], dtype=torch.float64, device=dev)
        self.register_buffer("switch_logw", (prior.log() - math.log(copies)).expand(2, copies).clone())
        self.register_buffer("switch_t", torch.ones((), dtype=torch.int64, device=dev))
        self.register_buffer("log_posterior", torch.full((copies,), -math.log(copies), dtype=torch.float64,
                                                         device=dev))
        self.copy_logits: Tensor | None = None  # (n, N, ...) from the last forward
        self._ll_sum: Tensor | None = None
        self._ll_count = 0

    @property
    def head(self) -> AlraoHead:
        return self.model.get_submodule(self.head_name)  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        n_batch = x.shape[0]
        blocks = out.reshape(out.shape[0] // n_batch, n_batch, *out.shape[1:])
        self.copy_logits = blocks[: self.n]
        body = blocks[-self.n :]  # the detached-parameter path when training, else the copies
        logp = F.log_softmax(_at_least_fp32(body), dim=2)
        post = self.log_posterior.to(logp.dtype).view(self.n, *([1] * (logp.dim() - 1)))
        return torch.logsumexp(logp + post, dim=0)

    @torch.no_grad()
    def record(self, copy_logits: Tensor, y: Tensor) -> None:
        """Accumulate each copy's mean log-likelihood on a batch (for the next switch update)."""
        ll = torch.stack([-F.cross_entropy(_at_least_fp32(z), y) for z in copy_logits])
        self._ll_sum = ll if self._ll_sum is None else self._ll_sum + ll
        self._ll_count += 1

    @torch.no_grad()
    def switch_update(self) -> None:
        """One switch step from the recorded log-likelihoods (averaged over micro-batches/ranks)."""
        if self._ll_sum is None:
            return
        ll = self._ll_sum / self._ll_count
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(ll, op=dist.ReduceOp.SUM)
            ll /= dist.get_world_size()
        self._ll_sum, self._ll_count = None, 0
        self.apply_switch(ll)

    @torch.no_grad()
    def apply_switch(self, loglik: Tensor) -> None:
        if self.n == 1:
            return
        logw = self.switch_logw + loglik.to(self.switch_logw)  # both rows: Bayes' rule
        # prior probability of switching at step t: 1/(t+1), kept on the device (no host sync)
        log_pi = -torch.log1p(self.switch_t.to(logw.dtype))
        log_pool = torch.logsumexp(logw[0], 0) + log_pi
        logw[0] += torch.log1p(-torch.exp(log_pi))
        prior = torch.tensor([[SWITCH_THETA], [1 - SWITCH_THETA]], dtype=logw.dtype, device=logw.device)
        prior = prior.log() - math.log(self.n)
        logw = torch.logaddexp(logw, prior + log_pool)
        logw -= torch.logsumexp(logw.flatten(), 0)
        self.switch_logw.copy_(logw)
        self.log_posterior.copy_(torch.logsumexp(logw, 0))
        self.switch_t += 1

    @property
    def posterior(self) -> Tensor:
        return self.log_posterior.exp()


class AlraoOptimizer(torch.optim.Optimizer):
    """SGD or Adam where each parameter's step is scaled by its own rate tensor.

    Effective rate = group lr (optim.lr, scheduled) x state['alrao_lr'] (broadcast per feature).
    Weight decay as in optimizers.py: `weight_decay` coupled (added to the gradient),
    `decoupled_wd` applied as w <- w (1 - rate wd).
    """

    def __init__(self, groups: list[dict[str, Any]], rates: dict[int, Tensor], *, body: str, lr: float,
                 momentum: float = 0.0, nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, betas=betas, eps=eps,
                        weight_decay=0.0, decoupled_wd=0.0, body=body)
        super().__init__(groups, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["alrao_lr"] = rates[id(p)].to(p.device, p.dtype)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: Tensor, group: dict[str, Any]) -> None:
        state = self.state[p]
        if state["alrao_lr"].device != p.device:  # the model was moved after the optimizer was built
            state["alrao_lr"] = state["alrao_lr"].to(p.device)
        rate = state["alrao_lr"] * group["lr"]
        grad = p.grad
        if group["decoupled_wd"]:
            p.mul_(1 - rate * group["decoupled_wd"])
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        if group["body"] == "adam":
            b1, b2 = group["betas"]
            if "step" not in state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
            m_hat = state["exp_avg"] / (1 - b1**t)
            denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(group["eps"])
            p.sub_(rate * m_hat / denom)
            return
        mom = group["momentum"]
        if mom:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(mom).add_(grad)
            grad = grad.add(buf, alpha=mom) if group["nesterov"] else buf
        p.sub_(rate * grad)


def build_alrao(cfg: Any, model: nn.Module, task: Any) -> tuple[AlraoModel, AlraoOptimizer,
                                                                 Callable[..., tuple[Tensor, Tensor]],
                                                                 Callable[[], None]]:
    """Wrap the model, draw the rates, build the inner optimizer, the objective and after_step."""
    if getattr(task, "name", None) != "classification":
        raise ConfigError(f"optim=alrao works with task=classification only (got task={task.name}); "
                          "choose optim=sgd|adam|adamw")
    lr_min, lr_max, n = float(cfg.lr_min), float(cfg.lr_max), int(cfg.copies)
    if not 0 < lr_min <= lr_max:
        raise ConfigError(f"optim.lr_min={lr_min} and optim.lr_max={lr_max}: need 0 < lr_min <= lr_max")
    if n < 1:
        raise ConfigError(f"optim.copies={n} must be >= 1")
    body = str(cfg.body)
    if body not in ("sgd", "adam"):
        raise ConfigError(f"optim.body={body} is not a valid choice; choose one of: sgd, adam")
    if body == "sgd" and cfg.nesterov and float(cfg.momentum) <= 0:
        raise ConfigError("optim.nesterov=true needs optim.momentum > 0")

    # Seeded from torch's global RNG (set by the run's seed), so runs are reproducible.
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))
    wrapped = AlraoModel(model, n)
    head = wrapped.head
    head_modules = {id(m) for m in head.modules()}

    rates: dict[int, Tensor] = {}
    body_modules = [(k, m) for k, m in wrapped.model.named_modules() if id(m) not in head_modules]
    for _, module in body_modules:
        for name, r in feature_rates(module, lr_min, lr_max, gen).items():
            rates.setdefault(id(getattr(module, name)), r)
    for c, rate in zip(head.copies, copy_rates(lr_min, lr_max, n)):
        for p in c.parameters():
            rates[id(p)] = torch.full((), rate)

    wd, decoupled = float(cfg.weight_decay), bool(cfg.decoupled_wd)
    decay, exempt = split_decay(body_modules + list(head.named_modules()))
    groups = [
        {"params": decay, "weight_decay": 0.0 if decoupled else wd, "decoupled_wd": wd if decoupled else 0.0},
        {"params": exempt, "weight_decay": 0.0, "decoupled_wd": 0.0},
    ]
    optimizer = AlraoOptimizer(
        [g for g in groups if g["params"]], rates, body=body, lr=float(cfg.lr),
        momentum=float(cfg.momentum), nesterov=bool(cfg.nesterov),
        betas=(float(cfg.betas[0]), float(cfg.betas[1])), eps=float(cfg.eps),
    )

    def objective(m: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        out = m(x)  # m may be a DDP/compiled wrapper of `wrapped`; the forward sets copy_logits
        loss = task.loss(out, y)  # -log p_mix(y): trains the body
        z = wrapped.copy_logits
        if z is not None and z.requires_grad:
            copy_loss = torch.stack([task.loss(zj, y) for zj in z]).sum()
            # The copies' own losses add their gradients but not their value to the reported loss.
            loss = loss + (copy_loss - copy_loss.detach())
            wrapped.record(z, y)
        wrapped.copy_logits = None  # don't keep the graph alive until the next forward
        return loss, out

    return wrapped, optimizer, objective, wrapped.switch_update
