"""`vaitrain lab TOPIC`: the lecture's claims, each shown by a small set of runs or inspections.

One topic per row of the lecture table (docs/lab/README.md lists them with what each shows). A
topic runs in its own folder <out_dir>/<date>/<time>-lab-<topic>-<id>/ holding its sweeps (normal
sweep folders: records, `train -m resume=`, compare-runs and `vaitrain report` work on them),
lab.json (the claims, the measured numbers, whether each agrees) and report.html (the claims and
numbers, the pictures, and for training topics the runs' own report).
"""
from __future__ import annotations

import datetime as _dt
import json
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from vaitrain.errors import ConfigError, Interrupted, RunDirError, VaitrainError
from vaitrain.file_kinds import NotRegularFile, read_text
from vaitrain.lab.base import SIZES, Finding, LabContext, Outcome, Topic
from vaitrain.lab import inspections as _i
from vaitrain.lab import training as _t

LAB_FILE = "lab.json"
REPORT_FILE = "report.html"

TOPICS: dict[str, Topic] = {t.name: t for t in [
    Topic("init", "He init keeps a deep ReLU net's variance, 1/fan_in halves it per layer, SELU settles at mean 0, var 1.",
          "Xavier and He initialization; self-normalizing networks (SELU)", False, _i.topic_init),
    Topic("gradients", "Sigmoid's gradient vanishes with depth; ReLU+He, batch norm and skips keep it.",
          "backprop, vanishing gradients, ReLU vs sigmoid", False, _i.topic_gradients),
    Topic("autodiff", "A Jacobian costs one backward pass per output (reverse) or one JVP per input (forward).",
          "backprop (reverse-mode automatic differentiation)", False, _i.topic_autodiff),
    Topic("losses", "Cross-entropy is the softmax's NLL; MSE is a Gaussian NLL with fixed sigma.",
          "classification vs regression; cross-entropy as NLL", False, _i.topic_losses),
    Topic("inputnorm", "Per-channel normalization leaves the covariance between pixels; whitening removes it.",
          "input/output normalization", False, _i.topic_inputnorm),
    Topic("weightdecay", "Decoupled decay equals the L2 gradient for plain SGD and differs with momentum and Adam.",
          "dropout, weight decay vs L2 prior", False, _i.topic_weightdecay),
    Topic("normalization", "Batch norm depends on the batch size; group/layer norm do not; any norm beats none in a deep net.",
          "batch norm and variants (group, layer, instance)", True, _t.topic_normalization),
    Topic("optimizers", "Adam is less sensitive to the learning rate than SGD; Alrao needs no learning rate.",
          "SGD, Adam (its update rule), random learning rates (Alrao)", True, _t.topic_optimizers),
    Topic("density", "A mixture density network explains bimodal targets; a single Gaussian only the midpoint.",
          "density networks (mean and std); mixture density networks", True, _t.topic_density),
    Topic("sampling", "Max-unpooling puts maxima back, bilinear interpolates, transposed conv learns; all train a U-Net.",
          "down-sampling (max/avg pool, strided conv); up-sampling (max-unpool, bilinear, transposed conv)",
          True, _t.topic_sampling),
    Topic("depth", "Plain nets train worse as they get deeper; residual and dense nets keep training.",
          "residual nets, DenseNet, randomly wired nets, U-Net", True, _t.topic_depth),
    Topic("batchsize", "Gradient noise falls as 1/B; small batches take many noisy steps, large ones few accurate ones.",
          "mini-batches stored as N x C x H x W", True, _t.topic_batchsize),
]}


@dataclass
class LabResult:
    topic: str
    claim: str
    lab_dir: Path
    report: Path
    findings: list[Finding]
    sweeps: list[Path]
    seconds: float
    size: str

    @property
    def contradicted(self) -> list[Finding]:
        return [f for f in self.findings if not f.holds]


def topic_names() -> list[str]:
    return list(TOPICS)


def get_topic(name: str) -> Topic:
    if name not in TOPICS:
        raise ConfigError(f"no lab topic '{name}'; choose one of: {', '.join(TOPICS)} (`vaitrain lab` lists them)")
    return TOPICS[name]


def _lab_dir(out_dir: Path, topic: str, resume: Path | None) -> Path:
    from vaitrain.track.rundir import check_writable, create_unique_dir

    if resume is not None:
        doc = read_lab(resume)
        if doc.get("topic") != topic:
            raise RunDirError(f"'{resume}' holds the lab topic '{doc.get('topic')}', not '{topic}'")
        return Path(resume)
    check_writable(Path(out_dir), "--out-dir DIR")
    now = _dt.datetime.now()
    return create_unique_dir(Path(out_dir) / now.strftime("%Y-%m-%d"), f"{now.strftime('%H-%M-%S')}-lab-{topic}", "lab")


def _remove_if_unused(lab_dir: Path, made: Sequence[Path]) -> None:
    """A lab refused before its first run (an unknown key in the overrides) leaves no folder: only
    its lab.json is there then. Folders this call made (out_dir, the date) go too when empty."""
    if [p.name for p in lab_dir.iterdir()] != [LAB_FILE]:
        return
    (lab_dir / LAB_FILE).unlink()
    lab_dir.rmdir()
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty, or gone
            pass


def read_lab(lab_dir: Path | str) -> dict:
    path = Path(lab_dir) / LAB_FILE
    try:
        doc = json.loads(read_text(path))  # a FIFO is refused, not waited on
    except (OSError, ValueError, RecursionError) as err:
        reason = err.strerror if isinstance(err, NotRegularFile) else err
        raise RunDirError(f"cannot read {path} ({reason}); is '{lab_dir}' a lab folder?") from None
    if not isinstance(doc, dict):  # (a list or number here was an AttributeError traceback)
        raise RunDirError(f"cannot read {path} (not a JSON object as vaitrain writes it); is '{lab_dir}' a lab folder?")
    return doc


def run_topic(name: str, *, size: str = "default", out_dir: Path | str = "runs", overrides: Sequence[str] = (),
              resume: Path | str | None = None, progress: Callable[[str], None] | None = None) -> LabResult:
    """Run one topic at `size`, write lab.json and report.html in its folder, return the findings.
    With `resume` (a lab folder of the same topic) its sweeps continue where they stopped."""
    from vaitrain.track.files import write_text_atomic

    topic = get_topic(name)
    if size not in SIZES:
        raise ConfigError(f"--size {size} is not a valid choice; choose one of: {', '.join(SIZES)}")
    for o in overrides:  # the lab places its own runs: these were dropped without a word
        key = o.split("=", 1)[0].lstrip("+~")
        if key in ("out_dir", "resume"):
            option = "--out-dir DIR" if key == "out_dir" else "--resume LAB_FOLDER"
            raise ConfigError(f"'{o}': the lab places its runs in its own folder; use `vaitrain lab {name} {option}`")
    made = [d for d in (Path(out_dir), Path(out_dir) / _dt.date.today().isoformat()) if not d.exists()]
    lab_dir = _lab_dir(Path(out_dir), name, Path(resume) if resume else None)
    doc = {"topic": name, "claim": topic.claim, "lecture": topic.lecture, "size": size,
           "overrides": list(overrides), "status": "running", "findings": [], "sweeps": []}
    write_text_atomic(lab_dir / LAB_FILE, json.dumps(doc, indent=2) + "\n")
    ctx = LabContext(size, lab_dir, list(overrides), progress)
    t0 = time.perf_counter()
    try:
        outcome = topic.run(ctx)
    except VaitrainError as err:
        if resume is None:
            _remove_if_unused(lab_dir, made)
        if not ctx.sweeps:
            raise
        # "run it again" would start a new lab folder: the sweeps so far continue with --resume
        again = f"its runs so far are kept: continue with `vaitrain lab {name} --resume {lab_dir}`"
        if isinstance(err, Interrupted):
            raise Interrupted(f"stopped by {signal.Signals(err.signum).name} before `vaitrain lab {name}` "
                              f"finished; {again}", err.signum) from None
        raise type(err)(f"{err}; {again}") from None
    seconds = time.perf_counter() - t0
    report = lab_dir / REPORT_FILE
    write_lab_report(topic, outcome, ctx, report, seconds)
    doc.update(status="completed", seconds=round(seconds, 3),
               findings=[asdict(f) for f in outcome.findings],
               sweeps=[str(p.relative_to(lab_dir)) for p in ctx.sweeps])
    write_text_atomic(lab_dir / LAB_FILE, json.dumps(doc, indent=2, default=float) + "\n")
    return LabResult(name, topic.claim, lab_dir, report, outcome.findings, list(ctx.sweeps), seconds, size)


def findings_html(findings: Sequence[Finding]) -> str:
    from vaitrain.report import esc

    parts = []
    for f in findings:
        verdict = "measured: agrees" if f.holds else "measured: CONTRADICTS the claim"
        cls = "claim" if f.holds else "claim contradicted"
        parts.append(f'<div class="{cls}"><b>Claim.</b> {esc(f.claim)}<br><b>{verdict}.</b> {esc(f.measured)}</div>')
    return "".join(parts)


def write_lab_report(topic: Topic, outcome: Outcome, ctx: LabContext, out: Path, seconds: float) -> None:
    from vaitrain import report as rep

    sections = [rep.Section("What the runs measured", findings_html(outcome.findings))]
    for fig in outcome.figures:
        sections.append(rep.Section(fig.caption, rep.img_tag(fig.png, fig.caption)))
    for title, columns, rows in outcome.tables:
        sections.append(rep.Section(title, rep.table_html(columns, rows)))
    intro = (f"<p><b>{rep.esc(topic.claim)}</b></p><p class='small'>lecture: {rep.esc(topic.lecture)}; "
             f"size {rep.esc(ctx.size)}; {seconds:.1f} s; folder {rep.esc(ctx.lab_dir)}</p>")
    title = f"vaitrain lab {topic.name}"
    if ctx.sweeps:
        runs, _ = rep.load_runs([str(p) for p in ctx.sweeps])
        from vaitrain.compare import compare

        sections += rep.run_sections(runs, compare(runs))
    rep.write_page(out, rep.page(title, sections, intro), "--out-dir")


__all__ = ["TOPICS", "LabResult", "run_topic", "get_topic", "topic_names", "read_lab", "LAB_FILE", "REPORT_FILE"]
