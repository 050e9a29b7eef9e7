"""Lab topics that need no training: each measures, on vaitrain's own models, data and optimizers,
the quantity a lecture argument is about (variance by depth, gradient by depth, the update of one
step, the passes a Jacobian costs, the covariance left after normalization, the loss as an NLL)."""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from vaitrain.lab.base import Figure, Finding, LabContext, Outcome

# --------------------------------------------------------------------------- shared helpers


def build(overrides: Sequence[str]) -> tuple[Any, Any, Any, nn.Module]:
    """(cfg, data, task, model) as `vaitrain inspect` builds them, seeded by cfg.seed."""
    from vaitrain.config import compose
    from vaitrain.models import build_model
    from vaitrain.zoo import _data_and_task

    cfg = compose(list(overrides))
    torch.manual_seed(int(cfg.seed))
    data, task = _data_and_task(cfg)
    model = build_model(cfg.model, cfg.norm, in_channels=data.in_channels, num_outputs=task.num_outputs,
                        image_size=data.image_size, dense=task.dense)
    return cfg, data, task, model


def small_data(batch: int) -> list[str]:
    """Only one batch of shapes is needed: generate that many scenes, not 4,000."""
    return [f"data.num_train={batch}", "data.num_val=16", f"trainer.batch_size={batch}"]


def _fig(fn: Callable[[], Any], caption: str) -> list[Figure]:
    from vaitrain.report import png_bytes

    return [Figure(caption, png_bytes(fn()))]


# --------------------------------------------------------------------------- init


def init_measure(ctx: LabContext) -> tuple[Any, dict[str, float]]:
    """The at-init reports of a deep ReLU MLP under four inits and of the SELU net, and the numbers
    the lecture predicts: He's variance ratio over the depth, Xavier/LeCun's per-layer factor, the
    SELU fixed point."""
    from vaitrain.inspect_init import InspectResult, activation_profile, depth_profile, inspect_jobs

    depth = 32
    width, batch = (128, 64) if ctx.tiny else (512, 256)
    extra = ctx.compose_extra()
    relu = inspect_jobs(["model=plain_mlp", f"model.depth={depth}", f"model.width={width}", "model.act=relu",
                         "model.init=he,xavier,lecun,default", *small_data(batch), *extra])
    # SELU's fixed point is a statistical statement: wide layers and a large batch (also when tiny)
    selu = inspect_jobs(["model=selu_mlp", f"model.depth={depth}", "model.width=512", "model.dropout=0",
                         *small_data(256), *extra])
    nums: dict[str, float] = {}
    for job in relu.jobs:
        v = depth_profile(job.rows)["var"][:depth]  # the hidden layers (the output layer is not square)
        nums[f"{job.init}_ratio"] = v[-1] / v[0]
        nums[f"{job.init}_factor"] = (v[-1] / v[1]) ** (1 / (depth - 2))  # layers 2..32: square
    acts = activation_profile(selu.jobs[0].rows)
    settled = slice(depth // 4, depth)  # the fixed point is an attractor: from layer 9 of 32 on
    nums["selu_max_abs_mean"] = max(abs(m) for m in acts["mean"][settled])
    nums["selu_var_min"] = min(acts["var"][settled])
    nums["selu_var_max"] = max(acts["var"][settled])
    nums["selu_layer1_var"] = acts["var"][0]
    both = InspectResult(relu.jobs + selu.jobs)
    return both, nums


def topic_init(ctx: LabContext) -> Outcome:
    from vaitrain.inspect_init import plot_inspection

    result, n = init_measure(ctx)
    he, xav, lec = n["he_ratio"], n["xavier_factor"], n["lecun_factor"]
    findings = [
        Finding("He init (Var w = 2/fan_in) keeps a ReLU net's pre-activation variance constant with depth.",
                f"variance at layer 32 / layer 1 = {he:.3g}", 0.25 <= he <= 4.0, {"he_ratio": he}),
        Finding("With Var w = 1/fan_in (the lecture's Xavier; LeCun) ReLU halves the variance at every layer.",
                f"per-layer factor: lecun {lec:.3g}, xavier (Glorot, square layers) {xav:.3g}; "
                f"layer 32 / layer 1 = {n['lecun_ratio']:.2g}",
                0.4 <= lec <= 0.6 and 0.4 <= xav <= 0.6, {"lecun_factor": lec, "xavier_factor": xav}),
        Finding("PyTorch's default init (Var w = 1/(3 fan_in)) is not He: with ReLU the variance falls "
                "by about 1/6 per layer until the biases' variance is all that is left.",
                f"layer 32 / layer 1 = {n['default_ratio']:.2g}", n["default_ratio"] < 0.1,
                {"default_ratio": n["default_ratio"]}),
        Finding("SELU with LeCun-normal weights has a stable fixed point at mean 0, variance 1.",
                f"layers 9-32 of 32: |mean| <= {n['selu_max_abs_mean']:.3f}, variance in "
                f"[{n['selu_var_min']:.3f}, {n['selu_var_max']:.3f}] (layer 1: {n['selu_layer1_var']:.3f})",
                n["selu_max_abs_mean"] <= 0.05 and 0.9 <= n["selu_var_min"] and n["selu_var_max"] <= 1.1,
                {k: v for k, v in n.items() if k.startswith("selu")}),
    ]
    return Outcome(findings, _fig(lambda: plot_inspection(result),
                                  "Variance and gradient by depth at init, 32-layer MLP; dashed: the lecture's prediction"))


# --------------------------------------------------------------------------- gradients


GRADIENT_CASES = [  # (label, overrides): plain nets with and without norm layers and skips
    ("MLP sigmoid", ["model=plain_mlp", "model.act=sigmoid", "model.init=xavier", "norm=none"]),
    ("MLP sigmoid + batch norm", ["model=plain_mlp", "model.act=sigmoid", "model.init=xavier", "norm=batch"]),
    ("MLP relu + He", ["model=plain_mlp", "model.act=relu", "model.init=he", "norm=none"]),
    ("MLP selu + LeCun", ["model=selu_mlp", "model.dropout=0"]),
    ("CNN sigmoid, no skips", ["model=plain_cnn", "model.act=sigmoid", "model.init=xavier", "norm=none"]),
    ("ResNet-20 sigmoid (skips)", ["model=resnet20", "model.act=sigmoid", "model.init=xavier", "norm=none"]),
]


def gradient_ratio(rows: Sequence[dict]) -> float:
    """Gradient RMS at the first weighted layer / at the last hidden one: how much of the
    gradient reaching the top of the body arrives at the bottom."""
    from vaitrain.inspect_init import depth_profile

    g = depth_profile(rows)["grad_rms"]
    return g[0] / g[-2]


def gradients_measure(ctx: LabContext) -> tuple[Any, dict[str, float]]:
    from vaitrain.inspect_init import InspectResult, inspect_jobs

    width, cnn_width, batch = (64, 16, 32) if ctx.tiny else (256, 32, 128)
    jobs = []
    for label, ovs in GRADIENT_CASES:
        size = [f"model.width={cnn_width if 'cnn' in ovs[0] else width}"] if "resnet" not in ovs[0] else []
        depth = ["model.depth=20"] if "resnet" not in ovs[0] else []
        job = inspect_jobs([*ovs, *depth, *size, *small_data(batch), *ctx.compose_extra()]).jobs[0]
        job.label = label
        jobs.append(job)
    return InspectResult(jobs), {j.label: gradient_ratio(j.rows) for j in jobs}


def topic_gradients(ctx: LabContext) -> Outcome:
    from vaitrain.inspect_init import plot_inspection

    result, r = gradients_measure(ctx)
    sig, bn, relu = r["MLP sigmoid"], r["MLP sigmoid + batch norm"], r["MLP relu + He"]
    cnn, res = r["CNN sigmoid, no skips"], r["ResNet-20 sigmoid (skips)"]
    findings = [
        Finding("Sigmoid's slope is at most 1/4, so in a deep plain net the gradient vanishes on its way down.",
                f"20-layer MLP, gradient RMS first layer / last layer = {sig:.2g}", sig < 1e-3, {"sigmoid": sig}),
        Finding("ReLU with He init (and SELU) passes the gradient down undiminished.",
                f"ratio ReLU+He {relu:.3g}, SELU {r['MLP selu + LeCun']:.3g}",
                0.1 <= relu <= 10 and 0.1 <= r["MLP selu + LeCun"] <= 10, {"relu": relu, "selu": r["MLP selu + LeCun"]}),
        Finding("Batch norm re-scales every layer and brings the sigmoid net's gradient back.",
                f"ratio with batch norm {bn:.3g} vs {sig:.2g} without", bn > 1e3 * sig, {"sigmoid_bn": bn}),
        Finding("Skip connections give the gradient a short path: a sigmoid ResNet keeps far more of it.",
                f"ratio ResNet-20 {res:.2g} vs plain 20-layer CNN {cnn:.2g}", res > 1e3 * cnn,
                {"resnet": res, "plain_cnn": cnn}),
    ]
    table = ("gradient RMS, first layer / last hidden layer, at init", ["network", "ratio"],
             [[k, v] for k, v in r.items()])
    return Outcome(findings, _fig(lambda: plot_inspection(result), "Gradient by depth at init; left: variance"),
                   [table])


# --------------------------------------------------------------------------- weight decay


def decay_runs(optim: list[str], steps: int, seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor]]:
    """The weights after `steps` steps of vaitrain's optimizer with weight decay coupled (an L2 term
    in the gradient) and decoupled, from the same init on the same batches; and the start."""
    from vaitrain.config import compose
    from vaitrain.engine.components import build_components

    base = ["model=plain_mlp", "model.depth=2", "model.width=32", "norm=none", "sched=constant",
            f"data.num_train={16 * steps}", "data.num_val=16", "trainer.batch_size=16", "trainer.device=cpu",
            f"seed={seed}", *optim]
    out = []
    for decoupled in (False, True):
        cfg = compose([*base, f"optim.decoupled_wd={str(decoupled).lower()}"])
        torch.manual_seed(seed)
        c = build_components(cfg, torch.device("cpu"))
        start = {k: v.detach().clone() for k, v in c.model.state_dict().items()}
        c.data.train.set_epoch(0)
        batches = iter(c.data.train)
        for _ in range(steps):
            x, y = next(batches)
            c.opt.optimizer.zero_grad()
            loss, _ = c.opt.objective(c.model, x, y)
            loss.backward()
            c.opt.optimizer.step()
        out.append({k: v.detach().clone() for k, v in c.model.state_dict().items()})
    return out[0], out[1], start


def max_rel_diff(a: dict[str, Tensor], b: dict[str, Tensor], start: dict[str, Tensor]) -> float:
    """Largest difference of the two results relative to how far the weights moved."""
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    return max((a[k] - b[k]).abs().max().item() for k in a) / max(moved, 1e-30)


def l2_step_matches(lr: float, wd: float, seed: int = 0) -> float:
    """One momentum-free SGD step with decoupled decay vs the hand-computed L2 step
    w - lr (grad + wd w), same model and batch: the largest difference."""
    from vaitrain.config import compose
    from vaitrain.engine.components import build_components

    cfg = compose(["model=plain_mlp", "model.depth=2", "model.width=32", "norm=none", "sched=constant",
                   "data.num_train=64", "data.num_val=16", "trainer.batch_size=16", "trainer.device=cpu",
                   "optim=sgd", f"optim.lr={lr}", "optim.momentum=0", "optim.nesterov=false",
                   f"optim.weight_decay={wd}", "optim.decoupled_wd=true", f"seed={seed}"])
    torch.manual_seed(seed)
    c = build_components(cfg, torch.device("cpu"))
    c.data.train.set_epoch(0)
    x, y = next(iter(c.data.train))
    loss, _ = c.opt.objective(c.model, x, y)
    c.opt.optimizer.zero_grad()
    loss.backward()
    expect = {}
    for name, p in c.model.named_parameters():
        decay = wd if p.ndim > 1 else 0.0  # biases are exempt from decay (vaitrain.optim)
        expect[name] = (p - lr * (p.grad + decay * p)).detach().clone()
    c.opt.optimizer.step()
    return max((p.detach() - expect[n]).abs().max().item() for n, p in c.model.named_parameters())


def topic_weightdecay(ctx: LabContext) -> Outcome:
    steps = 5 if ctx.tiny else 20
    cases = {
        "SGD, no momentum": ["optim=sgd", "optim.lr=0.1", "optim.momentum=0", "optim.nesterov=false", "optim.weight_decay=0.05"],
        "SGD, momentum 0.9": ["optim=sgd", "optim.lr=0.1", "optim.momentum=0.9", "optim.nesterov=false", "optim.weight_decay=0.05"],
        "Adam": ["optim=adam", "optim.lr=0.01", "optim.weight_decay=0.05"],
    }
    diffs = {k: max_rel_diff(*decay_runs(v, steps)) for k, v in cases.items()}
    hand = l2_step_matches(0.1, 0.05)
    sgd, mom, adam = diffs["SGD, no momentum"], diffs["SGD, momentum 0.9"], diffs["Adam"]
    findings = [
        Finding("For SGD without momentum, decoupled weight decay is the same update as an L2 term in the loss.",
                f"after {steps} steps the weights differ by {sgd:.2g} of how far they moved; one step vs the hand-"
                f"computed w - lr(g + wd w): {hand:.2g}", sgd < 1e-4 and hand < 1e-6, {"sgd": sgd, "hand": hand}),
        Finding("With momentum the two differ: the L2 term enters the velocity, decoupled decay does not.",
                f"relative difference after {steps} steps: {mom:.2g}", mom > 1e-3, {"momentum": mom}),
        Finding("With Adam they differ most: the L2 gradient is divided by Adam's per-weight scale, "
                "decoupled decay (AdamW) is not.", f"relative difference after {steps} steps: {adam:.2g}",
                adam > 1e-2, {"adam": adam}),
    ]
    table = ("coupled (L2) vs decoupled weight decay: |w_L2 - w_decoupled| / |w_t - w_0| (max over weights)",
             ["optimizer", "relative difference"], [[k, v] for k, v in diffs.items()])
    return Outcome(findings, [], [table])


# --------------------------------------------------------------------------- autodiff


class PassCounter(torch.autograd.Function):
    """Identity that counts the backward passes (VJPs) and forward-mode passes (JVPs) through it."""
    counts = {"vjp": 0, "jvp": 0}

    @staticmethod
    def forward(x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> Tensor:  # type: ignore[override]
        PassCounter.counts["vjp"] += 1
        return g

    @staticmethod
    def jvp(ctx: Any, t: Tensor) -> Tensor:  # type: ignore[override]
        PassCounter.counts["jvp"] += 1
        return t.clone()


def mlp(n: int, m: int, hidden: int = 256, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, m))


def jacobian_reverse(f: nn.Module, x: Tensor) -> Tensor:
    """One forward, then one backward pass (a vector-Jacobian product) per output."""
    x = x.detach().requires_grad_(True)
    y = f(PassCounter.apply(x))
    rows = [torch.autograd.grad(y[i], x, retain_graph=True)[0] for i in range(y.shape[0])]
    return torch.stack(rows)


def jacobian_forward(f: nn.Module, x: Tensor) -> Tensor:
    """One forward pass with a tangent (a Jacobian-vector product) per input."""
    import torch.autograd.forward_ad as fwAD

    cols = []
    with torch.no_grad(), fwAD.dual_level():
        for j in range(x.shape[0]):
            e = torch.zeros_like(x)
            e[j] = 1.0
            cols.append(fwAD.unpack_dual(f(PassCounter.apply(fwAD.make_dual(x, e)))).tangent)
    return torch.stack(cols, dim=1)


def autodiff_measure(shapes: Sequence[tuple[int, int]], repeats: int = 1) -> list[dict[str, float]]:
    """Per (n inputs, m outputs): passes counted and CPU seconds of each mode; the Jacobians' gap."""
    rows = []
    for n, m in shapes:
        f = mlp(n, m)
        x = torch.randn(n)
        out: dict[str, float] = {"n": n, "m": m}
        for mode, fn in (("reverse", jacobian_reverse), ("forward", jacobian_forward)):
            PassCounter.counts.update(vjp=0, jvp=0)
            t0 = time.process_time()
            for _ in range(repeats):
                jac = fn(f, x)
            out[f"{mode}_s"] = (time.process_time() - t0) / repeats
            out[f"{mode}_passes"] = (PassCounter.counts["vjp"] if mode == "reverse" else PassCounter.counts["jvp"]) / repeats
            out[f"{mode}_jac"] = jac  # type: ignore[assignment]
        out["gap"] = (out.pop("reverse_jac") - out.pop("forward_jac")).abs().max().item()  # type: ignore[operator]
        rows.append(out)
    return rows


def topic_autodiff(ctx: LabContext) -> Outcome:
    shapes = [(256, 4), (64, 64), (4, 256)] if not ctx.tiny else [(32, 2), (2, 32)]
    rows = autodiff_measure(shapes, repeats=1 if ctx.tiny else 5)
    counts_ok = all(r["reverse_passes"] == r["m"] and r["forward_passes"] == r["n"] for r in rows)
    wide, tall = rows[0], rows[-1]  # many inputs few outputs; few inputs many outputs
    findings = [
        Finding("A Jacobian of f: R^n -> R^m costs one backward pass per output in reverse mode and one "
                "JVP per input in forward mode.",
                "; ".join(f"n={r['n']:.0f}, m={r['m']:.0f}: {r['reverse_passes']:.0f} backward, "
                          f"{r['forward_passes']:.0f} JVPs" for r in rows) + f"; the two Jacobians agree to "
                f"{max(r['gap'] for r in rows):.1g}", counts_ok and max(r["gap"] for r in rows) < 1e-4,
                {"gap": max(r["gap"] for r in rows)}),
        Finding("So reverse mode (backprop) wins for many inputs and few outputs (a loss), forward mode for few inputs.",
                f"CPU time reverse/forward: n={wide['n']:.0f}, m={wide['m']:.0f}: {wide['reverse_s'] / wide['forward_s']:.2g}; "
                f"n={tall['n']:.0f}, m={tall['m']:.0f}: {tall['reverse_s'] / tall['forward_s']:.2g}",
                wide["reverse_s"] < wide["forward_s"] and tall["reverse_s"] > tall["forward_s"],
                {"wide_ratio": wide["reverse_s"] / wide["forward_s"], "tall_ratio": tall["reverse_s"] / tall["forward_s"]}),
    ]
    table = ("Jacobian of an MLP R^n -> R^m", ["n", "m", "backward passes", "JVPs", "reverse s", "forward s"],
             [[int(r["n"]), int(r["m"]), int(r["reverse_passes"]), int(r["forward_passes"]), r["reverse_s"], r["forward_s"]]
              for r in rows])

    def draw() -> Any:
        from vaitrain.report import figure

        fig = figure(figsize=(6, 3.4))
        ax = fig.subplots()
        labels = [f"n={r['n']:.0f}\nm={r['m']:.0f}" for r in rows]
        xs = range(len(rows))
        ax.bar([i - 0.2 for i in xs], [r["reverse_s"] * 1e3 for r in rows], 0.4, label="reverse (backward per output)")
        ax.bar([i + 0.2 for i in xs], [r["forward_s"] * 1e3 for r in rows], 0.4, label="forward (JVP per input)")
        ax.set_xticks(list(xs), labels)
        ax.set_ylabel("CPU ms per Jacobian")
        ax.set_yscale("log")
        ax.legend(fontsize="small")
        ax.set_title("cost of a full Jacobian")
        return fig

    return Outcome(findings, _fig(draw, "CPU time of a full Jacobian by mode"), [table])


# --------------------------------------------------------------------------- input normalization


def patches(x: Tensor, k: int = 3) -> Tensor:
    """All k x k patches of a N,C,H,W batch as rows (C k k values each)."""
    cols = torch.nn.functional.unfold(x, k)  # N, C k k, L
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def covariance(rows: Tensor) -> Tensor:
    rows = rows.double()
    centred = rows - rows.mean(0)
    return centred.T @ centred / (rows.shape[0] - 1)


def inputnorm_measure(ctx: LabContext) -> dict[str, Any]:
    """Channel and 3x3-patch covariance of shapes images as the loader delivers them (per-channel
    normalized with the training split's statistics), and after ZCA whitening fitted on train."""
    from vaitrain.config import compose
    from vaitrain.data import build_data

    n = 512 if ctx.tiny else 2000
    # augmentation off: pad-and-crop pads with black, which would add a shift of its own
    cfg = compose(["data.normalize=channel", "data.augment=false", f"data.num_train={n}", f"data.num_val={n // 2}", *ctx.compose_extra()])
    data = build_data(cfg.data, "classification", device=torch.device("cpu"), batch_size=n // 4,
                      val_batch_size=n // 2, seed=int(cfg.seed))
    data.train.set_epoch(0)
    train = torch.cat([x for x, _ in data.train])
    val = torch.cat([x for x, _ in data.val])
    pix = train.permute(0, 2, 3, 1).reshape(-1, train.shape[1])
    chan = covariance(pix)
    p_train, p_val = patches(train), patches(val)
    cov = covariance(p_train)
    evals, evecs = torch.linalg.eigh(cov)
    zca = evecs @ torch.diag((evals + 1e-5).rsqrt()) @ evecs.T
    mean = p_train.double().mean(0)
    white_val = covariance((p_val.double() - mean) @ zca)
    eye = torch.eye(cov.shape[0], dtype=torch.float64)
    off = cov - torch.diag(torch.diag(cov))
    return {"channel_mean": pix.double().mean(0).abs().max().item(), "channel_var": torch.diag(chan).tolist(),
            "patch_max_offdiag": off.abs().max().item(), "patch_cov": cov, "white_cov": white_val,
            "white_gap": (white_val - eye).abs().max().item(), "dims": cov.shape[0]}


def topic_inputnorm(ctx: LabContext) -> Outcome:
    r = inputnorm_measure(ctx)
    var = r["channel_var"]
    findings = [
        Finding("Per-channel normalization with the training split's mean and std gives every channel mean 0, variance 1.",
                f"training images as loaded: |channel mean| <= {r['channel_mean']:.2g}, variances "
                + ", ".join(f"{v:.3f}" for v in var), r["channel_mean"] < 0.05 and all(0.95 <= v <= 1.05 for v in var),
                {"channel_mean": r["channel_mean"]}),
        Finding("It leaves the correlations: neighbouring pixels stay strongly correlated.",
                f"largest off-diagonal covariance of 3x3 patches ({r['dims']} values): {r['patch_max_offdiag']:.3f}",
                r["patch_max_offdiag"] > 0.3, {"patch_max_offdiag": r["patch_max_offdiag"]}),
        Finding("Whitening (ZCA, fitted on the training split) removes them: the covariance becomes the identity.",
                f"validation patches after whitening: max |C - I| = {r['white_gap']:.3f}", r["white_gap"] < 0.15,
                {"white_gap": r["white_gap"]}),
    ]

    def draw() -> Any:
        from vaitrain.report import figure

        fig = figure(figsize=(9, 4))
        a, b = fig.subplots(1, 2)
        for ax, cov, title in ((a, r["patch_cov"], "per-channel normalized (train)"),
                               (b, r["white_cov"], "ZCA-whitened (validation)")):
            im = ax.imshow(cov.numpy(), cmap="RdBu_r", vmin=-1.2, vmax=1.2)
            ax.set_title(f"3x3 patch covariance: {title}", fontsize="small")
            ax.set_xlabel("channel x 3 x 3 position")
        fig.colorbar(im, ax=[a, b])
        return fig

    return Outcome(findings, _fig(draw, "Covariance of 3x3 patches (27 values) before and after whitening"))


# --------------------------------------------------------------------------- losses


def topic_losses(ctx: LabContext) -> Outcome:
    """Cross-entropy is the NLL of the softmax; MSE is the Gaussian NLL with a fixed sigma."""
    from vaitrain.tasks.regression import LOG_2PI

    cfg, data, task, model = build(["model=plain_mlp", "model.depth=2", "model.width=32", "norm=none",
                                    *small_data(64), *ctx.compose_extra()])
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    with torch.no_grad():
        logits = model(x).float()
    ce = task.loss(logits, y).item()
    by_hand = -torch.log(torch.softmax(logits.double(), 1)[torch.arange(len(y)), y]).mean().item()
    _, rdata, rtask, rmodel = build(["model=plain_mlp", "model.depth=2", "model.width=32", "norm=none",
                                     "task=regression", "task.head=gaussian", "task.sigma_param=exp",
                                     "task.min_sigma=0", *small_data(64), *ctx.compose_extra()])
    rdata.train.set_epoch(0)
    rx, ry = next(iter(rdata.train))
    with torch.no_grad():
        out = rmodel(rx).float()
    d = ry.shape[1]
    fixed = torch.cat([out[:, :d], torch.zeros_like(out[:, d:])], 1)  # log sigma = 0: sigma 1
    nll = rtask.loss(fixed, ry).item()
    mse = torch.nn.functional.mse_loss(out[:, :d], ry).item()
    as_mse = 0.5 * d * mse + 0.5 * d * LOG_2PI
    findings = [
        Finding("Cross-entropy is the negative log-likelihood of the softmax's probability of the true class.",
                f"task loss {ce:.6f}, -mean log softmax by hand {by_hand:.6f}", abs(ce - by_hand) < 1e-5,
                {"ce": ce, "by_hand": by_hand}),
        Finding("Mean squared error is the Gaussian NLL with a fixed sigma, up to scale and a constant.",
                f"Gaussian NLL with sigma=1: {nll:.6f}; D/2 MSE + D/2 log 2 pi: {as_mse:.6f}",
                abs(nll - as_mse) < 1e-4, {"nll": nll, "from_mse": as_mse}),
    ]
    return Outcome(findings)


__all__ = ["topic_init", "topic_gradients", "topic_weightdecay", "topic_autodiff", "topic_inputnorm", "topic_losses",
           "init_measure", "gradients_measure", "decay_runs", "l2_step_matches", "autodiff_measure",
           "inputnorm_measure", "jacobian_forward", "jacobian_reverse"]
