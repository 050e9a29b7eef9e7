"""The at-init variance report: per layer, the forward activation mean/variance and the backward
gradient norm for one batch, the variance-preservation argument for Xavier/He/LeCun made visible.

`init_report` returns plain rows; `vaitrain inspect` renders them as a table.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn

# Layers reported by default: the weighted ones (their outputs are the pre-activations the
# initialization arguments are about) and the activations after them.
DEFAULT_KINDS: tuple[type, ...] = (
    nn.Linear, nn.Conv2d, nn.ConvTranspose2d,
    nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.GELU,
)


def init_report(model: nn.Module, x: Tensor, *,
                loss_fn: Optional[Callable[[Tensor], Tensor]] = None,
                kinds: tuple[type, ...] = DEFAULT_KINDS, seed: int = 0) -> list[dict]:
    """One forward and backward pass of `x`; one row per call of a reported layer, in call order.

    Row keys: name (dotted module name; `#k` appended from a module's second call on), type,
    shape (output shape), act_mean, act_var (of the layer's output over the whole batch),
    grad_norm (L2 norm of the loss gradient w.r.t. that output), grad_rms (the same divided by
    sqrt(numel), so layers of different sizes compare), grad_var, and for weighted layers
    weight_var and weight_grad_norm (L2 norm of the weight's gradient).

    The loss defaults to <out, g> with g standard normal: the backward pass then starts from a
    unit-variance gradient, as the backward variance argument assumes. Model parameters' .grad are
    restored afterwards and the model's train/eval mode is left as it was.
    """
    rows: list[dict] = []
    calls: dict[str, int] = {}
    handles = []
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None

    def make_hook(name: str):
        def hook(mod: nn.Module, inputs: tuple, output: Tensor) -> None:
            if not isinstance(output, Tensor):
                return
            k = calls.get(name, 0)
            calls[name] = k + 1
            out = output.detach().float()
            row = {"name": name if k == 0 else f"{name}#{k + 1}", "type": type(mod).__name__,
                   "shape": tuple(output.shape), "act_mean": out.mean().item(),
                   "act_var": out.var(unbiased=False).item(), "grad_norm": float("nan"),
                   "grad_rms": float("nan"), "grad_var": float("nan")}
            weight = getattr(mod, "weight", None)
            if isinstance(weight, Tensor):
                row["weight_var"] = weight.detach().float().var(unbiased=False).item()
            rows.append(row)
            if output.requires_grad:
                # A tensor hook receives the gradient w.r.t. this output even if a later in-place
                # op (inplace ReLU) modifies the tensor; module backward hooks would fail there.
                def grad_hook(g: Tensor, row: dict = row) -> None:
                    g = g.detach().float()
                    row["grad_norm"] = g.norm().item()
                    row["grad_rms"] = row["grad_norm"] / g.numel() ** 0.5
                    row["grad_var"] = g.var(unbiased=False).item()
                output.register_hook(grad_hook)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, kinds):
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.enable_grad():
            out = model(x)
            if loss_fn is None:
                gen = torch.Generator(device=out.device).manual_seed(seed)
                g = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
                loss = (out * g).sum()
            else:
                loss = loss_fn(out)
            loss.backward()
        modules = dict(model.named_modules())
        for row in rows:
            base = row["name"].split("#")[0]
            weight = getattr(modules[base], "weight", None)
            if isinstance(weight, Tensor) and weight.grad is not None:
                row["weight_grad_norm"] = weight.grad.detach().float().norm().item()
    finally:
        for h in handles:
            h.remove()
        for n, p in model.named_parameters():
            p.grad = saved_grads.get(n)
    return rows


# ----------------------------------------------------------------------------- `vaitrain inspect`
# The lecture's variance argument assumes no normalization layer: a norm layer re-standardizes
# every layer's output, so any init gives the same variances. inspect therefore defaults to
# norm=none and says so in one line when a user's norm= hides the effect.
LECTURE_NORM = "none"
WEIGHTED: tuple[type, ...] = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)

# The lecture's per-layer factor of the pre-activation variance, for square layers:
# Var(z_{l+1}) = fan_in * Var(w) * E[act(z_l)^2], E[relu(z)^2] = Var(z)/2.
RELU_FACTOR = {"he": 1.0, "xavier": 0.5, "lecun": 0.5, "default": 1.0 / 6.0}


@dataclass
class InspectJob:
    """One configuration's at-init report: `rows` as init_report returns them."""
    overrides: list[str]
    label: str  # the swept values that tell this job apart (or the model's name)
    title: str
    rows: list[dict]
    act: str
    init: str
    norm: str  # "none" when the model has no norm layers whatever norm= says


@dataclass
class InspectResult:
    jobs: list[InspectJob]
    notes: list[str] = field(default_factory=list)  # one line each: settings that hide the effect


def uses_norm(model_cfg: Any, norm_cfg: Any) -> bool:
    return str(norm_cfg.name) != "none" and bool(getattr(model_cfg, "use_norm", True))


def lecture_overrides(overrides: Sequence[str]) -> list[str]:
    """The user's overrides with the lecture's setting in front: norm=none unless norm= is given."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return ([] if "norm" in given else [f"norm={LECTURE_NORM}"]) + list(overrides)


def inspect_jobs(overrides: Sequence[str]) -> InspectResult:
    """At-init reports for every combination of the given values (`model.init=he,xavier`: two)."""
    from vaitrain.config import compose, expand_sweep
    from vaitrain.models import build_model
    from vaitrain.zoo import _data_and_task

    jobs_overrides = expand_sweep(lecture_overrides(overrides))
    common = set.intersection(*(set(j) for j in jobs_overrides)) if len(jobs_overrides) > 1 else set()
    result = InspectResult([])
    for job in jobs_overrides:
        cfg = compose(job)
        torch.manual_seed(int(cfg.seed))
        data, task = _data_and_task(cfg)
        model = build_model(cfg.model, cfg.norm, in_channels=data.in_channels, num_outputs=task.num_outputs,
                            image_size=data.image_size, dense=task.dense)
        data.train.set_epoch(0)
        x, y = next(iter(data.train))
        rows = init_report(model, x, loss_fn=lambda out, y=y: task.loss(out, y), seed=int(cfg.seed))
        norm = str(cfg.norm.name) if uses_norm(cfg.model, cfg.norm) else "none"
        swept = [o for o in job if o not in common and not o.startswith("norm=none")] if common or len(jobs_overrides) > 1 else []
        label = " ".join(swept) or str(cfg.model.name)
        title = (f"{cfg.model.name} at init (init={cfg.model.init}, act={cfg.model.act}, norm={norm}), "
                 f"one batch of {x.shape[0]}, loss = the task's")
        # an ImageNet-style ResNet's own init (model.init=default) is torchvision's He-normal convs
        own_he = cfg.model.get("family") == "resnet" and cfg.model.get("style") == "imagenet"
        init = "he" if cfg.model.init == "default" and own_he else str(cfg.model.init)
        result.jobs.append(InspectJob(list(job), label, title, rows, str(cfg.model.act), init, norm))
        if norm != "none":
            note = (f"note: norm={norm} re-normalizes every layer's output, which hides the init's effect "
                    "on the variance; add norm=none to see it")
            if note not in result.notes:
                result.notes.append(note)
    return result


def table(job: InspectJob) -> tuple[list[str], list[list[Any]]]:
    columns = ["layer", "type", "shape", "act mean", "act var", "grad norm", "grad rms", "weight var"]
    rows = [[r["name"], r["type"], "x".join(map(str, r["shape"])), r["act_mean"], r["act_var"],
             r["grad_norm"], r["grad_rms"], r.get("weight_var", "")] for r in job.rows]
    return columns, rows


def depth_profile(rows: Sequence[dict], kinds: tuple[type, ...] = WEIGHTED) -> dict[str, list[float]]:
    """Per weighted layer in call order (depth 1, 2, ...): the pre-activation variance (its output's),
    mean, and the gradient RMS w.r.t. that output."""
    names = {k.__name__ for k in kinds}
    picked = [r for r in rows if r["type"] in names]
    return {"depth": [float(i + 1) for i in range(len(picked))],
            "var": [r["act_var"] for r in picked], "mean": [r["act_mean"] for r in picked],
            "grad_rms": [r["grad_rms"] for r in picked]}


def activation_profile(rows: Sequence[dict]) -> dict[str, list[float]]:
    """The same for the activation layers' outputs (SELU's fixed point is about these)."""
    acts = [r for r in rows if r["type"] not in {k.__name__ for k in WEIGHTED}]
    return {"depth": [float(i + 1) for i in range(len(acts))], "var": [r["act_var"] for r in acts],
            "mean": [r["act_mean"] for r in acts]}


def lecture_prediction(act: str, init: str, norm: str) -> tuple[float, str] | None:
    """(per-layer factor of the pre-activation variance, label) the lecture predicts, or None."""
    if norm != "none":
        return None
    if act == "relu" and init in RELU_FACTOR:
        f = RELU_FACTOR[init]
        return f, ("He + ReLU: flat" if init == "he" else f"{init} + ReLU: x{f:.3g} per layer")
    if act == "selu" and init == "lecun":
        return 1.0, "SELU fixed point: variance 1"
    return None


def lecture_reference(job: InspectJob) -> tuple[list[float], list[float], str] | None:
    """The lecture's pre-activation variances for the hidden layers of `job` (depths, values,
    label), from layer 1's measured value: Var(z_{l+1}) = factor * Var(z_l) + Var(bias); PyTorch's
    default init also draws biases, with the weights' variance 1/(3 fan_in). None without one."""
    pred = lecture_prediction(job.act, job.init, job.norm)
    prof = depth_profile(job.rows)
    if pred is None or not prof["var"]:
        return None
    factor, text = pred
    picked = [r for r in job.rows if r["type"] in {k.__name__ for k in WEIGHTED}]
    depths = prof["depth"][:-1] or prof["depth"]  # the output layer is not square
    if job.act == "selu":
        return depths, [1.0] * len(depths), text
    values = [prof["var"][0]]
    for r in picked[1:len(depths)]:
        bias_var = r.get("weight_var", 0.0) if job.init == "default" else 0.0
        values.append(values[-1] * factor + bias_var)
    return depths, values, text + (" + bias variance" if job.init == "default" else "")


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        from vaitrain.errors import VaitrainError

        raise VaitrainError("--plot needs matplotlib: install vaitrain[plot] (pip install 'vaitrain[plot]')") from None
    matplotlib.use("Agg")  # files only, no display needed
    from matplotlib.figure import Figure

    return Figure


def plot_inspection(result: InspectResult, path: Any = None) -> Any:
    """Two panels against depth, log y: pre-activation variance and gradient RMS, one line per job,
    the lecture's predictions dashed in the same colour. Saved as PNG to `path` when given."""
    Figure = _matplotlib()
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2 + 0.22 * len(result.jobs)), layout="constrained")
    ax_var, ax_grad = fig.subplots(1, 2)
    for i, job in enumerate(result.jobs):
        prof = depth_profile(job.rows)
        color = f"C{i % 10}"
        ax_var.plot(prof["depth"], prof["var"], marker="o", markersize=3, color=color, label=job.label)
        ax_grad.plot(prof["depth"], prof["grad_rms"], marker="o", markersize=3, color=color, label=job.label)
        ref = lecture_reference(job)
        if ref is not None:
            depths, values, text = ref
            ax_var.plot(depths, values, linestyle="--", color=color, alpha=0.7, label=f"lecture: {text}")
            factor = RELU_FACTOR.get(job.init) if job.act == "relu" else None
            if factor and len(depths) > 1:  # backward: the same factor per layer, from the top down
                top = prof["grad_rms"][len(depths) - 1]
                gref = [top * factor ** ((len(depths) - d) / 2) for d in depths]  # RMS: sqrt of variance
                ax_grad.plot(depths, gref, linestyle="--", color=color, alpha=0.7)
    for ax, what in ((ax_var, "pre-activation variance"), (ax_grad, "gradient RMS w.r.t. pre-activation")):
        ax.set_yscale("log")
        ax.set_xlabel("layer (weighted layers in call order)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # layer 5, not 2.5
        ax.set_ylabel(what)
        ax.set_title(what + " by depth, at init")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax_var.get_legend_handles_labels()
    if handles:  # below both panels: inside, it would hide the lines it explains
        fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize="small")
    if path is not None:
        save_png(fig, path)
    return fig


def save_png(fig: Any, path: Any) -> None:
    from vaitrain.errors import VaitrainError
    from vaitrain.track.rundir import check_output

    check_output("--plot", path)

    try:
        fig.savefig(str(path), format="png", dpi=100)
    except OSError as err:
        raise VaitrainError(f"cannot write the plot '{path}': {err.strerror or err}") from None
