"""Lab topics that train: each runs one or more normal vaitrain sweeps (through `ctx.sweep`) sized to
make the lecture's point in minutes on a laptop CPU (`default`) or seconds (`tiny`, for tests), and
reads the numbers back from the runs' own records."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from vaitrain.lab.base import Figure, Finding, LabContext, Outcome

# --------------------------------------------------------------------------- shared


def sized(ctx: LabContext, *, train: int, val: int, epochs: int, tiny_train: int = 128, tiny_val: int = 64,
          tiny_epochs: int = 1, image_size: int = 16) -> list[str]:
    """Data and epochs for the size; 16 px shapes by default: a small CNN learns them within
    minutes on one CPU thread, where at 32 px it is still near chance."""
    n, v, e = (tiny_train, tiny_val, tiny_epochs) if ctx.tiny else (train, val, epochs)
    return [f"data.num_train={n}", f"data.num_val={v}", f"trainer.epochs={e}", "trainer.log_every=5",
            f"data.image_size={image_size}"]


def records(result: Any) -> list[Any]:
    """The sweep's runs read back (vaitrain.compare.Run), in job order."""
    from vaitrain.track.runs import load_run

    return [load_run(p) for p in result.run_dirs]


def final(run: Any, tag: str) -> float:
    """The last recorded value of a metric in a run (nan if it has none)."""
    s = run.series.get(tag)
    return float(s.values[-1]) if s is not None and s.values else float("nan")


def value(run: Any, key: str) -> Any:
    return run.config.get(key)


SHAPES_CHANCE = 1 / 6  # the training topics classify shapes scenes: 6 classes


def near_chance(accs: dict[str, float], margin: float = 0.1) -> list[str]:
    """Names of runs whose accuracy is within `margin` of chance: a comparison among them shows
    nothing about the claim (they did not learn at this size), so it must not count as agreeing."""
    return [k for k, a in accs.items() if not a > SHAPES_CHANCE + margin]


def guarded(claim: str, measured: str, holds: bool, numbers: dict[str, float], accs: dict[str, float]) -> Finding:
    """A Finding that only agrees when the runs it compares learned something."""
    idle = near_chance(accs)
    if idle:
        measured += f"; inconclusive: {', '.join(idle)} stayed near chance ({SHAPES_CHANCE:.3f}), train longer"
    return Finding(claim, measured, holds and not idle, numbers)


def _gap(a: float, b: float) -> str:
    return f"{a:.3f} vs {b:.3f}"


# --------------------------------------------------------------------------- normalization


NORMS = ("batch", "group", "layer", "instance", "none")
TINY_NORMS = ("batch", "group", "none")
NORM_LR = 1e-3  # Adam's rate at the large batch; the small batch's follows the square-root rule


def topic_normalization(ctx: LabContext) -> Outcome:
    # A fair batch-size comparison (Wu & He 2018, GroupNorm): equal epochs, so each batch size sees
    # the same samples, with the rate scaled for the batch (sqrt(B) for Adam), no augmentation so
    # that 8 epochs of 2,048 16 px scenes train every norm well above chance. Batch 2 is where batch
    # norm's two-sample statistics are too noisy (at batch 4 on 16 px maps it still trains fine).
    small, large = (2, 32) if ctx.tiny else (2, 64)
    epochs = 1 if ctx.tiny else 8
    norms = TINY_NORMS if ctx.tiny else NORMS
    common = ["model=plain_cnn", f"model.width={8 if ctx.tiny else 32}", "model.act=relu", "model.init=he", "norm.groups=4",
              "optim=adam", "sched=constant", "data.augment=false",
              *sized(ctx, train=2048, val=512, epochs=epochs, tiny_train=64, tiny_val=32)]
    lr = {b: NORM_LR * (b / large) ** 0.5 for b in (small, large)}
    # at the small batch only the norms the batch-size claim compares (a batch-2 run costs ~8x a batch-64 one)
    per_sample = [n for n in ("group", "layer") if n in norms]
    runs = [r for b, ns in ((small, ("batch", *per_sample)), (large, norms))
            for r in records(ctx.sweep(f"batch{b}", [f"trainer.batch_size={b}", f"optim.lr={lr[b]:.3g}", f"norm={','.join(ns)}",
                                                      f"model.depth={4 if ctx.tiny else 8}", "model.down_every=2", *common]))]
    acc = {(value(r, "norm.name"), int(value(r, "trainer.batch_size"))): final(r, "val/acc1") for r in runs}
    drop = {n: acc[(n, large)] - acc[(n, small)] for n in ("batch", *per_sample)}
    # "any norm beats none" needs a net deep enough that none fails: at 8 layers He init and Adam
    # train it as well as any norm, at 16 they do not (one more sweep at the large batch)
    deep_depth = 6 if ctx.tiny else 16
    deep = {value(r, "norm.name"): final(r, "val/acc1") for r in records(ctx.sweep("deep", [
        f"trainer.batch_size={large}", f"optim.lr={lr[large]:.3g}", f"norm={','.join(norms)}", f"model.depth={deep_depth}",
        f"model.down_every={2 if ctx.tiny else 4}", *common]))}
    normed = {n: deep[n] for n in norms if n != "none"}
    none = deep["none"]
    # the runs that must have learned for the comparison to mean anything (batch norm at the small
    # batch may fail: that is the effect)
    compared = {f"batch norm at batch {large}": acc[("batch", large)],
                **{f"{n} norm at batch {b}": acc[(n, b)] for n in per_sample for b in (small, large)}}
    findings = [
        guarded(f"Batch norm's statistics come from the batch: at batch size {small} it loses more accuracy "
                "than group or layer norm, which normalize each sample on its own (equal samples seen, "
                "learning rate scaled with the batch).",
                f"val acc1 lost going from batch {large} (lr {lr[large]:.3g}) to {small} (lr {lr[small]:.3g}), "
                f"{epochs} epochs each: "
                + ", ".join(f"{n} norm {d:.3f}" for n, d in drop.items()),
                drop["batch"] > max(drop[n] for n in per_sample), {f"drop_{k}": v for k, v in drop.items()}, compared),
        guarded(f"Every normalization trains a deep plain net ({deep_depth} layers, no skips) better than none.",
                f"val acc1 at {deep_depth} layers, batch {large}: "
                + ", ".join(f"{n} norm {a:.3f}" for n, a in normed.items()) + f", none {none:.3f}",
                min(normed.values()) > none, {**{f"deep_{n}": a for n, a in normed.items()}, "deep_none": none},
                {f"{n} norm at {deep_depth} layers": a for n, a in normed.items()}),
    ]
    table = ("val acc1 by norm, batch size and depth (equal epochs)", ["norm", f"batch {small} (lr {lr[small]:.3g})",
             f"batch {large} (lr {lr[large]:.3g})", f"{deep_depth} layers, batch {large}"],
             [[n, acc.get((n, small)), acc.get((n, large)), deep.get(n)] for n in norms])
    return Outcome(findings, [], [table])


# --------------------------------------------------------------------------- optimizers


def topic_optimizers(ctx: LabContext) -> Outcome:
    common = ["model=plain_cnn", f"model.depth={4 if ctx.tiny else 6}", f"model.width={8 if ctx.tiny else 32}",
              "model.down_every=2", "norm=batch", "sched=constant", "trainer.batch_size=32", "data.augment=false",
              # 8 epochs: at 4 Alrao's slow units (rates down to 1e-5) are still far from trained
              *sized(ctx, train=4096, val=512, epochs=8, tiny_train=64, tiny_val=32)]
    sgd_lrs = "0.003,0.3" if ctx.tiny else "0.01,0.1,1.0"
    adam_lrs = "1e-4,1e-2" if ctx.tiny else "1e-4,1e-3,1e-2"
    sgd = records(ctx.sweep("sgd", ["optim=sgd", f"optim.lr={sgd_lrs}", "optim.weight_decay=0", *common]))
    adam = records(ctx.sweep("adam", ["optim=adam", f"optim.lr={adam_lrs}", *common]))
    # Alrao twice, neither range tuned: the paper's default [1e-5, 10], and the range the tuned runs'
    # grid spans (SGD's rates, one decade below): the paper claims it is robust to the range as long
    # as it holds the good rates; at this budget its slowest units are still far from trained
    alrao = records(ctx.sweep("alrao", ["optim=alrao", *common]))
    lo, hi = min(float(r) for r in sgd_lrs.split(",")) / 10, max(float(r) for r in sgd_lrs.split(","))
    alrao_grid = records(ctx.sweep("alrao_grid", ["optim=alrao", f"optim.lr_min={lo:g}", f"optim.lr_max={hi:g}", *common]))

    def accs(runs: Sequence[Any]) -> list[float]:
        return [final(r, "val/acc1") for r in runs]

    s, a, al, alg = accs(sgd), accs(adam), accs(alrao), accs(alrao_grid)
    spread_s, spread_a = max(s) - min(s), max(a) - min(a)
    best = max(s + a)
    findings = [
        Finding("Adam divides each step by a running gradient scale, so it is less sensitive to the learning "
                "rate than SGD over the same range of rates.",
                f"val acc1 best - worst over {len(s)} rates spanning {sgd_lrs.replace(',', ', ')} (SGD) and "
                f"{adam_lrs.replace(',', ', ')} (Adam): SGD {spread_s:.3f}, Adam {spread_a:.3f}",
                spread_a < spread_s, {"spread_sgd": spread_s, "spread_adam": spread_a}),
        Finding("Alrao (Blier et al. 2019: per-feature learning rates drawn once, log-uniform in the paper's "
                "default [1e-5, 10], nothing tuned) comes within 0.1 val acc1 of the best of the tuned SGD and "
                "Adam runs, at the same budget.",
                f"Alrao (rates in [{value(alrao[0], 'optim.lr_min')}, {value(alrao[0], 'optim.lr_max')}]) "
                f"{al[0]:.3f} vs best tuned {best:.3f} over {len(s) + len(a)} runs, {value(alrao[0], 'trainer.epochs')} "
                "epochs each", al[0] >= best - 0.1, {"alrao": al[0], "best": best}),
        Finding(f"With its range set to the rates the tuned runs searched ([{lo:g}, {hi:g}], one run, no tuning), "
                "Alrao comes within 0.1 val acc1 of the best of them.",
                f"Alrao (rates in [{lo:g}, {hi:g}]) {alg[0]:.3f} vs best tuned {best:.3f}", alg[0] >= best - 0.1,
                {"alrao_grid": alg[0], "best": best}),
    ]
    table = ("val acc1 by optimizer and learning rate", ["optimizer", "lr", "val acc1"],
             [["sgd", value(r, "optim.lr"), v] for r, v in zip(sgd, s)]
             + [["adam", value(r, "optim.lr"), v] for r, v in zip(adam, a)]
             + [["alrao", f"[{value(r, 'optim.lr_min')}, {value(r, 'optim.lr_max')}]", v]
                for r, v in ((alrao[0], al[0]), (alrao_grid[0], alg[0]))])

    def draw() -> Any:
        from vaitrain.report import figure

        fig = figure(figsize=(6, 3.4))
        ax = fig.subplots()
        ax.plot([float(value(r, "optim.lr")) for r in sgd], s, marker="o", label="SGD (momentum 0.9)")
        ax.plot([float(value(r, "optim.lr")) for r in adam], a, marker="o", label="Adam")
        ax.axhline(al[0], color="C2", linestyle="--", label=f"Alrao, rates in [{value(alrao[0], 'optim.lr_min')}, {value(alrao[0], 'optim.lr_max')}] (its default)")
        ax.axhline(alg[0], color="C3", linestyle=":", label=f"Alrao, rates in [{lo:g}, {hi:g}] (the grid's range)")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final val acc1")
        ax.set_title("learning-rate sensitivity")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        return fig

    from vaitrain.report import png_bytes

    return Outcome(findings, [Figure("Final validation accuracy against the learning rate", png_bytes(draw()))], [table])


# --------------------------------------------------------------------------- density


DENSITY_MODEL = ["model=resnet20", "model.width_mult=0.5", "task.components=2", "trainer.batch_size=64"]


def topic_density(ctx: LabContext) -> Outcome:
    from vaitrain.report import density_png

    runs = records(ctx.sweep("heads", [
        "data=shapes_ambiguous", "task=regression", "task.head=gaussian,mdn", *DENSITY_MODEL,
        *sized(ctx, train=4096, val=512, epochs=8, tiny_train=512, tiny_val=128, tiny_epochs=3)]))
    by = {value(r, "task.head"): r for r in runs}
    g, m = by["gaussian"], by["mdn"]
    nll_g, nll_m = final(g, "val/nll"), final(m, "val/nll")
    bok_g, bok_m = final(g, "val/best_of_k"), final(m, "val/best_of_k")
    findings = [
        Finding("Where a target has two equally likely values, a mixture density network puts a mode on each "
                "and so gives the data a higher likelihood than a single Gaussian, which can only cover both "
                "with one wide bump at the midpoint.",
                f"val NLL (nats, lower is better): MDN {nll_m:.3f}, Gaussian {nll_g:.3f}",
                nll_m < nll_g, {"nll_mdn": nll_m, "nll_gaussian": nll_g}),
        Finding("One of the MDN's hypotheses lands near the true position (best-of-K error).",
                f"best-of-K error: MDN {bok_m:.3f}, Gaussian {bok_g:.3f}", bok_m < bok_g,
                {"best_of_k_mdn": bok_m, "best_of_k_gaussian": bok_g}),
    ]
    from vaitrain.lab.density import position_nll

    pos_g, pos_m = position_nll(g.path), position_nll(m.path)
    findings.append(Finding("On the position alone (x, y), the MDN's modes on the two objects beat the Gaussian's "
                            "single bump between them.",
                            f"val NLL of (x, y): MDN {pos_m:.3f}, Gaussian {pos_g:.3f}", pos_m < pos_g,
                            {"position_nll_mdn": pos_m, "position_nll_gaussian": pos_g}))
    figures = [Figure(f"{head}: predicted density of the object's position", png)
               for head, run in (("Gaussian", g), ("MDN", m)) if (png := density_png(run))]
    return Outcome(findings, figures)


# --------------------------------------------------------------------------- sampling


def operator_facts() -> dict[str, float]:
    """Max-unpooling after max-pooling: the fraction of zeros and whether every kept value is the
    window's maximum in its place; bilinear's range; the transposed conv's output size."""
    from vaitrain.models.layers import make_down, make_up

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    pooled, idx = make_down("maxpool", 4, return_indices=True)(x)
    back = make_up("maxunpool", 4, 4)(pooled, indices=idx)
    kept = back != 0
    in_place = bool(torch.equal(back[kept], x[kept]))
    window_max = torch.nn.functional.max_pool2d(x, 2)
    bil = make_up("bilinear", 4, 4)(pooled)
    trans = make_up("transposed", 4, 4)(pooled)
    return {"unpool_zero_fraction": 1 - kept.float().mean().item(), "unpool_in_place": float(in_place),
            # one value kept per 2x2 window, and it is the window's maximum
            "unpool_maxima": float(torch.equal(back.view(2, 4, 4, 2, 4, 2).sum((3, 5)), window_max)),
            "bilinear_within_range": float(bil.min() >= pooled.min() - 1e-6 and bil.max() <= pooled.max() + 1e-6),
            "transposed_size": float(trans.shape[-1]), "input_size": float(x.shape[-1])}


@torch.no_grad()
def background_baseline(run_dir: Any) -> dict[str, float]:
    """The task's validation metrics for a model that predicts class 0 (background) everywhere,
    on the run's own validation data: what a U-Net must beat to have learned anything."""
    from vaitrain.engine.components import build_components
    from vaitrain.engine.evaluate import load_run_config

    cfg, _ = load_run_config(run_dir, ["trainer.device=cpu"])
    c = build_components(cfg, torch.device("cpu"))
    meter = c.task.new_meter()
    for x, y in c.data.val:
        out = torch.zeros(x.shape[0], c.task.num_outputs, *x.shape[2:])
        out[:, 0] = 1.0
        meter.update(out, y)
    return {k: float(v) for k, v in meter.compute().items()}


def topic_sampling(ctx: LabContext) -> Outcome:
    facts = operator_facts()
    common = ["model=unet", "task=segmentation", f"model.base_width={4 if ctx.tiny else 16}", "model.depth=2",
              "trainer.batch_size=32", "optim=adam", "optim.lr=3e-3",
              *sized(ctx, train=2048, val=256, epochs=6, tiny_train=64, tiny_val=32)]
    ups = records(ctx.sweep("up", ["model.down=maxpool", f"model.up={'maxunpool,transposed' if ctx.tiny else 'maxunpool,bilinear,transposed'}", *common]))
    downs = records(ctx.sweep("down", [f"model.down={'strided' if ctx.tiny else 'avgpool,strided'}", "model.up=transposed", *common]))
    rows = [[value(r, "model.down"), value(r, "model.up"), final(r, "val/pixel_acc"), final(r, "val/miou")] for r in ups + downs]
    worst, best = min(r[3] for r in rows), max(r[3] for r in rows)
    base = background_baseline(ups[0].path)
    findings = [
        Finding("Max-unpooling puts each maximum back where max-pooling found it and zeros elsewhere (3 of 4 values).",
                f"zeros {facts['unpool_zero_fraction']:.3f}; kept values are the inputs in place: "
                f"{bool(facts['unpool_in_place'])}; they are the window maxima: {bool(facts['unpool_maxima'])}",
                abs(facts["unpool_zero_fraction"] - 0.75) < 1e-6 and facts["unpool_in_place"] == 1 and facts["unpool_maxima"] == 1,
                facts),
        Finding("Bilinear up-sampling interpolates (no value outside its input's range); a stride-2 transposed "
                "conv doubles the size ((H-1)s - 2p + k = 2H for k = s = 2) with a learned kernel.",
                f"bilinear within range: {bool(facts['bilinear_within_range'])}; transposed: "
                f"{facts['input_size'] / 2:.0f} -> {facts['transposed_size']:.0f} px",
                facts["bilinear_within_range"] == 1 and facts["transposed_size"] == facts["input_size"], {}),
        Finding("With skip connections carrying the detail, every down/up pair trains a U-Net (well above "
                "predicting background everywhere) to a similar mIoU.",
                f"val mIoU from {worst:.3f} to {best:.3f} over {len(rows)} pairs; background everywhere: "
                f"{base['miou']:.3f}", worst > base["miou"] + 0.1 and best - worst < 0.15,
                {"miou_min": worst, "miou_max": best, "miou_background": base["miou"]}),
    ]
    return Outcome(findings, [], [("U-Net by down/up-sampling", ["down", "up", "val pixel acc", "val mIoU"], rows)])


# --------------------------------------------------------------------------- depth


def topic_depth(ctx: LabContext) -> Outcome:
    # 16 px without augmentation: 4 epochs of 4,096 scenes train the shallow nets and DenseNet well
    # above chance (with 4 px pad-crops of a 16 px scene they stayed near it)
    common = ["norm=batch", "optim=adam", "sched=cosine", "trainer.batch_size=64", "data.augment=false",
              *sized(ctx, train=4096, val=512, epochs=4, tiny_train=64, tiny_val=32)]
    shallow, deep = (8, 14) if ctx.tiny else (8, 32)
    plain = records(ctx.sweep("plain", ["model=plain_cnn", f"model.depth={shallow},{deep}", f"model.width={8 if ctx.tiny else 16}",
                                        "model.down_every=" + str(max(deep // 3, 1)), *common]))
    resnet = records(ctx.sweep("resnet", ["model=resnet20", f"model.depth={shallow},{deep if (deep - 2) % 6 == 0 else 14}", *common]))
    dense_blocks = "[1,1,1],[2,2,2]" if ctx.tiny else "[2,2,2],[8,8,8]"
    dense = records(ctx.sweep("dense", ["model=densenet40", f"model.block_config={dense_blocks}", *common]))

    def pair(runs: Sequence[Any]) -> tuple[float, float]:
        return final(runs[0], "val/acc1"), final(runs[-1], "val/acc1")

    (ps, pd), (rs, rd), (ds, dd) = pair(plain), pair(resnet), pair(dense)
    findings = [
        guarded("Without skips, making a net deeper makes it train worse (the degradation problem); residual and "
                "dense connections let the deeper net keep up.",
                f"val acc1 shallow -> deep: plain {_gap(ps, pd)}, ResNet {_gap(rs, rd)}, DenseNet {_gap(ds, dd)}",
                (pd - ps) < min(rd - rs, dd - ds), {"plain_change": pd - ps, "resnet_change": rd - rs, "dense_change": dd - ds},
                {"shallow plain": ps, "deep ResNet": rd, "deep DenseNet": dd}),
    ]
    rows = [[value(r, "model.name"), value(r, "model.depth") or str(value(r, "model.block_config")),
             r.params, final(r, "train/loss"), final(r, "val/acc1")] for r in plain + resnet + dense]
    return Outcome(findings, [], [("who still trains as depth grows", ["model", "depth", "params", "final train loss", "val acc1"], rows)])


# --------------------------------------------------------------------------- batch size


def gradient_noise(batch_sizes: Sequence[int], pool: int, overrides: Sequence[str] = (), draws: int = 200,
                   seed: int = 0) -> dict[int, float]:
    """E ||g_B - g||^2 over `draws` random mini-batches of B samples drawn without replacement from a
    pool (g: the pool's mean gradient), for each batch size B, for a small CNN at init."""
    from vaitrain.lab.inspections import build

    _, data, task, model = build(["model=plain_cnn", "model.depth=4", "model.width=8", "model.down_every=2",
                                  "norm=none", "model.init=he", f"data.num_train={pool}", "data.num_val=16",
                                  f"trainer.batch_size={pool}", "data.augment=false", f"seed={seed}", *overrides])
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    params = [p for p in model.parameters() if p.requires_grad]

    def grad(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        g = torch.autograd.grad(task.loss(model(xb), yb), params)
        return torch.cat([t.flatten() for t in g])

    per_sample = torch.stack([grad(x[i:i + 1], y[i:i + 1]) for i in range(pool)])
    full = per_sample.mean(0)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for b in batch_sizes:
        picks = torch.stack([torch.randperm(pool, generator=gen)[:b] for _ in range(draws)])
        out[b] = ((per_sample[picks].mean(1) - full) ** 2).sum(1).mean().item()
    return out


def topic_batchsize(ctx: LabContext) -> Outcome:
    pool = 256 if ctx.tiny else 512
    small, large = 8, 64
    noise = gradient_noise([small, large], pool, ctx.compose_extra())
    # batches drawn without replacement from the pool: Var ~ (1/B)(pool - B)/(pool - 1)
    theory = (1 / small * (pool - small)) / (1 / large * (pool - large))
    measured = noise[small] / noise[large]
    res = records(ctx.sweep("batch", ["model=plain_cnn", "model.depth=6", f"model.width={8 if ctx.tiny else 32}", "model.down_every=2",
                                      "norm=batch", "optim=adam", "sched=constant", f"trainer.batch_size={small},{large}",
                                      *sized(ctx, train=1024, val=512, epochs=3, tiny_train=128, tiny_val=32)]))
    by = {int(value(r, "trainer.batch_size")): r for r in res}
    steps = {b: (r.epoch_ends[-1][1] if r.epoch_ends else 0) for b, r in by.items()}
    loss = {b: final(r, "train/loss") for b, r in by.items()}
    acc = {b: final(r, "val/acc1") for b, r in by.items()}
    findings = [
        Finding(f"The mini-batch gradient's noise falls as 1/B: batch {small} is {large // small}x noisier than batch {large} "
                f"(times (N-{small})/(N-{large}) for batches drawn without replacement from N = {pool}).",
                f"E||g_B - g||^2 ratio {measured:.2f}, theory {theory:.2f}", 0.6 * theory <= measured <= 1.6 * theory,
                {"noise_ratio": measured, "theory": theory}),
        Finding("With the same epochs and learning rate, small batches take many more (noisy) steps and end with the "
                "lower training loss; large ones take few, accurate steps.",
                f"batch {small}: {steps.get(small, 0)} steps, train loss {loss.get(small, float('nan')):.3f}, val acc1 "
                f"{acc.get(small, float('nan')):.3f}; batch {large}: {steps.get(large, 0)} steps, train loss "
                f"{loss.get(large, float('nan')):.3f}, val acc1 {acc.get(large, float('nan')):.3f}",
                loss.get(small, float("inf")) < loss.get(large, float("-inf")),
                {"loss_small": loss.get(small, float("nan")), "loss_large": loss.get(large, float("nan"))}),
    ]
    return Outcome(findings)
