"""resume=RUN_DIR on the command line: the run's own overrides come first, then the new ones.

This reads a run directory, so it lives here and not in config.py (composing a config reads no
run directory)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from vaitrain.config import compose
from vaitrain.errors import ConfigError, RunDirError
from vaitrain.track import rundir
from vaitrain.track.runs import saved_overrides


def resume_overrides(run_dir: Path, extra: list[str]) -> list[str]:
    """The overrides that re-create a run's config: its own overrides.txt, then the new ones
    (which win), then resume=<run_dir>."""
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise RunDirError(
            f"resume={run_dir} is not a vaitrain run directory (no config.yaml / checkpoints/); "
            "pass a folder like runs/<date>/<run>"
        )
    rundir.check_run_files(run_dir)
    extra = [o for o in extra if not o.startswith("resume=")]
    return saved_overrides(run_dir) + extra + [f"resume={run_dir}"]


def prepare(overrides: list[str]) -> tuple[DictConfig, list[str]]:
    """Compose the config for `vaitrain train`; with resume=DIR, the run's own overrides come first."""
    resume = [o for o in overrides if o.startswith("resume=")]
    if resume and not resume[-1].split("=", 1)[1].strip():  # Path("") would be the working folder
        raise RunDirError("resume= is empty; give the run directory to continue, e.g. resume=runs/<date>/<run>")
    if resume:
        run_dir = Path(resume[-1].split("=", 1)[1])
        overrides = resume_overrides(run_dir, overrides)
        return compose_run(run_dir, overrides), overrides
    return compose(overrides), overrides


def compose_run(run_dir: Path, overrides: list[str]) -> DictConfig:
    """compose(overrides) for a run's saved overrides + new ones. When the saved ones alone fail (an
    overrides.txt edited by hand, or written by a vaitrain with other options), the error names the
    file: 'optim.lr=abc is not a valid float' read as if the user had typed it."""
    try:
        return compose(overrides)
    except ConfigError as err:
        try:
            compose(saved_overrides(run_dir))
        except ConfigError:
            raise ConfigError(f"{Path(run_dir) / rundir.OVERRIDES_FILE} (the run's saved overrides, one per line): "
                              f"{err}; fix or remove that line") from None
        raise


# Resume rules (README, "Resume rules"). A resumed run keeps what its weights, optimizer state and
# data order mean; other settings may change and are recorded with the step they applied from.
FIXED_ON_RESUME = ("model", "norm", "data", "task", "optim", "sched", "seed", "trainer.batch_size",
                   "trainer.grad_accum")
NOT_COMPARED = ("resume", "out_dir", "name")


@dataclass
class ResumePlan:
    planned_epochs: int  # the epochs the run was planned for (its checkpoint's config)
    epochs: int  # the epochs planned now
    changes: list[str] = field(default_factory=list)  # "key: old -> new", settings now different

    @property
    def extends(self) -> bool:
        return self.epochs > self.planned_epochs


def plan_resume(cfg: DictConfig, state: dict[str, Any], run_dir: Path) -> ResumePlan:
    """Check a resume against the checkpoint it starts from; raise ConfigError/RunDirError in one
    line for a completed run, a shrunk plan or a changed model/data/task/batch/optimizer."""
    from vaitrain.track.runs import config_from_yaml, flatten

    in_checkpoint = bool(state.get("config_yaml"))
    old_yaml = state.get("config_yaml") or _read_text(Path(run_dir) / rundir.CONFIG_FILE)
    where = f"the config in {run_dir}'s checkpoint" if in_checkpoint else str(Path(run_dir) / rundir.CONFIG_FILE)
    old_tree = config_from_yaml(old_yaml, where) if old_yaml else {}
    old = flatten(old_tree) if isinstance(old_tree, dict) else {}
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    edited = config_yaml_edits(run_dir, cfg, state=state)
    if edited:  # the user expects the edit to take effect: the run would go on without it, without a word
        raise ConfigError(f"{edited}, or undo the edit to resume as the run was")
    done, mid_epoch = int(state.get("epoch", 0)), int(state.get("batch_in_epoch", 0))
    planned = int(old.get("trainer.epochs", cfg.trainer.epochs))
    changes = []
    for key in sorted(set(old) & set(new), key=lambda k: (not k.endswith(".name"), k)):  # model.name first
        if old[key] == new[key] or key.split(".")[0] in NOT_COMPARED:
            continue
        if any(key == f or key.startswith(f + ".") for f in FIXED_ON_RESUME):
            where = f" mid-epoch ({mid_epoch} batches into epoch {done + 1})" if mid_epoch else ""
            raise ConfigError(
                f"resume={run_dir}{where}: {key}={new[key]} differs from the run's {key}={old[key]}; a resumed "
                "run keeps its model, data, task, batch size, optimizer and schedule: drop the override, or "
                "start a new run (without resume=) to change it"
            )
        changes.append(f"{key}: {old[key]} -> {new[key]}")
    epochs = int(cfg.trainer.epochs)
    if epochs < done:
        raise ConfigError(f"trainer.epochs={epochs}: the run already trained {done} epochs; to train longer, "
                          f"give trainer.epochs=N (N > {done})")
    if epochs == done and not mid_epoch and epochs >= planned:
        raise RunDirError(
            f"run {run_dir} is complete: it trained all {done} epochs, nothing is left to resume; to train "
            f"longer, resume with trainer.epochs=N (N > {done}); the added epochs get a new "
            f"{cfg.sched.name} cycle (see README, 'Resume rules')"
        )
    if epochs < planned:
        raise ConfigError(
            f"trainer.epochs={epochs} is fewer than the {planned} the run was planned for (its schedule is); "
            f"to stop earlier, use trainer.stop_after=N"
        )
    return ResumePlan(planned, epochs, changes)


def record_resume(run_dir: Path, plan: ResumePlan, overrides: list[str], config_yaml: str, *,
                  epoch: int, step: int) -> None:
    """Write what changed on this resume: overrides.txt gets a comment naming the step and the new
    overrides (so the next resume re-creates this config), config.yaml the config now in force."""
    if not plan.changes:
        return
    from vaitrain.track.files import write_text_atomic

    run_dir = Path(run_dir)
    saved = saved_overrides(run_dir)
    given = [o for o in overrides[len(saved):] if not o.startswith("resume=")] \
        if overrides[:len(saved)] == saved else [o for o in overrides if not o.startswith("resume=")]
    note = f"# resumed at epoch {epoch}, step {step}: " + "; ".join(plan.changes)
    text = _read_text(run_dir / rundir.OVERRIDES_FILE)
    if text and not text.endswith("\n"):
        text += "\n"
    write_text_atomic(run_dir / rundir.OVERRIDES_FILE, text + "\n".join([note, *given]) + "\n")
    write_text_atomic(run_dir / rundir.CONFIG_FILE, config_yaml)


def config_yaml_edits(run_dir: Path, cfg: DictConfig, extra: Sequence[str] = (),
                      state: dict[str, Any] | None = None) -> str | None:
    """A line when RUN/config.yaml no longer says what the run is read as: vaitrain writes it as a
    record and never reads it back (eval, predict, export and resume compose the run from
    overrides.txt and its checkpoint), so a setting edited there had no effect without a word.
    A key counts when config.yaml's value differs from the composed one and from the one in the
    checkpoint's own copy of the config (`state`, written by the same vaitrain at the same time:
    a default changed by a newer vaitrain, or a best.pt older than a resume's change, is no edit).
    Keys only one side has (added by a newer vaitrain) and keys given in `extra` are left out."""
    from vaitrain.config import to_yaml
    from vaitrain.track.runs import config_from_yaml, flatten

    path = Path(run_dir) / rundir.CONFIG_FILE
    text = _read_text(path)
    if not text or text == to_yaml(cfg):
        return None
    try:
        old_tree = config_from_yaml(text, str(path))
    except RunDirError:  # compare-runs and report, which read it, refuse it in their own line
        return None
    if not isinstance(old_tree, dict):
        return None
    given = [o.split("=", 1)[0].lstrip("+~") for o in extra if "=" in o]
    new = flatten(OmegaConf.to_container(cfg, resolve=True))
    old = flatten(old_tree)
    stored: dict[str, Any] | None = None
    if state and state.get("config_yaml"):
        try:
            tree = config_from_yaml(str(state["config_yaml"]), "the checkpoint's config")
            stored = flatten(tree) if isinstance(tree, dict) else None
        except RunDirError:
            stored = None
    differ = [k for k in sorted(set(old) & set(new), key=lambda k: (not k.endswith(".name"), k))
              if old[k] != new[k] and k.split(".")[0] not in NOT_COMPARED
              and (stored is None or (k in stored and stored[k] != old[k]))
              and not any(k == g or k.startswith(g + ".") for g in given)]
    if not differ:
        return None
    key = differ[0]
    what = (f"{key}: {old.get(key, '(absent)')} in config.yaml, {new.get(key, '(absent)')} from overrides.txt"
            + (f", and {len(differ) - 1} more" if len(differ) > 1 else ""))
    return (f"{path} no longer matches the run as vaitrain reads it ({what}); config.yaml is a record of the "
            f"run and is never read back: the run's settings come from {rundir.OVERRIDES_FILE} and its checkpoint. "
            f"To change a setting give it on the command line (resume: vaitrain train resume={run_dir} key=value)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
