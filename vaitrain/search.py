"""`vaitrain search`: an Optuna study over hyper-parameters, each trial a normal vaitrain run.

The search space is written like Hydra sweeps: `key=interval(a,b)` (uniform), `key=log(a,b)`
(log-uniform; Hydra's own `tag(log,interval(a,b))` too), `key=range(a,b[,step])` (integers or
steps), `key=a,b,c` / `choice(a,b,c)` (categorical; `group=glob(...)` over a group's options).
Other overrides are fixed for every trial. Optuna does the work: TPE (or random) sampling, median
or successive-halving pruning fed each epoch's validation metric through the training loop's
`on_epoch` hook, and an RDB storage (SQLite by default, in the search folder) that several
processes or machines can share and a stopped search continues from.

Layout: <out_dir>/<date>/<time>-search-<id>/{search.json, study.db, <time>-<model>-<data>-trialNNNN-<id>/}.
The driver (this process) asks Optuna for each trial, runs it (in this process, N child processes,
or SLURM jobs: vaitrain.jobs), and tells Optuna the result. It keeps a heartbeat per running
trial in the storage; a trial whose driver died is failed after 2 x search.heartbeat seconds by the
next driver and retried, resuming from its last.pt. Ctrl-C stops the running trials with last.pt
and queues them to resume with `vaitrain search resume=<search folder>`.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from omegaconf import DictConfig

from vaitrain.config import GROUPS, _parse, compose, group_options
from vaitrain.errors import ConfigError, RunDirError
from vaitrain.file_kinds import NotRegularFile, read_text, special_kind
from vaitrain.jobs import JobSpec, check_launcher, find_run_dir, make_launcher, missing_extra, run_job, run_jobs
from vaitrain.track.files import write_text_atomic
from vaitrain.track.rundir import CKPT_DIR, check_writable, create_unique_dir

SEARCH_FILE = "search.json"
DB_FILE = "study.db"
Progress = Callable[[str], None]
_LOG = re.compile(r"^([^=]+)=log\((.*)\)$")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise missing_extra("optuna") from None
    import warnings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats (used here with ask/tell, as Optuna's own optimize() does) are marked experimental
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


# ----- the search space ------------------------------------------------------------------------
def parse_space(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """(fixed overrides, {key: optuna distribution}) from the command line."""
    optuna = _optuna()
    from hydra.core.override_parser.types import Glob

    dist = optuna.distributions
    rewritten = [f"{m[1]}=tag(log,interval({m[2]}))" if (m := _LOG.match(o)) else o for o in overrides]
    fixed: list[str] = []
    space: dict[str, Any] = {}
    given: dict[str, tuple[str, bool]] = {}  # key -> (its last override, searched?)
    for ov, text in zip(_parse(rewritten), overrides):
        key = ov.get_key_element()
        value = ov.value()
        searched = ov.is_sweep_override() or isinstance(value, Glob)
        if key in given and (searched or given[key][1]):  # two fixed values: the last wins, as in train
            raise ConfigError(f"{key} is given twice ('{given[key][0]}' and '{text}'): a searched key "
                              "takes one range or list, and no fixed value besides")
        given[key] = (text, searched)
        if ov.is_interval_sweep():
            lo, hi, log = value.start, value.end, "log" in value.tags
            if not lo < hi or (log and lo <= 0):
                raise ConfigError(f"{ov.input_line}: the range needs low < high{' and low > 0 for log' if log else ''}")
            ends = re.search(r"interval\(\s*([^,]+?)\s*,\s*([^)]+?)\s*\)", ov.input_line or "")
            if "int" in value.tags or (ends and all(re.fullmatch(r"-?\d+", e) for e in ends.groups())):
                lo, hi = int(lo), int(hi)  # Hydra parses interval ends as floats; written as integers
                space[key] = dist.IntDistribution(lo, hi, log=log)
            else:
                space[key] = dist.FloatDistribution(float(lo), float(hi), log=log)
        elif isinstance(value, Glob):
            if ov.key_or_group not in GROUPS:
                raise ConfigError(f"'{key}=glob(...)' matches config-group options; {key} is no group: list values a,b,c")
            options = value.filter(group_options(ov.key_or_group))
            if not options:
                raise ConfigError(f"'{ov.input_line}' matches none of {key}'s options")
            space[key] = dist.CategoricalDistribution(options)
        elif ov.is_range_sweep():
            values = list(ov.sweep_iterator())
            if not values:
                raise ConfigError(f"{ov.input_line} holds no value")
            if all(isinstance(v, int) for v in values) and len(values) > 1:
                space[key] = dist.IntDistribution(values[0], values[-1], step=values[1] - values[0])
            else:
                space[key] = dist.CategoricalDistribution(values)
        elif ov.is_sweep_override():
            space[key] = dist.CategoricalDistribution(list(ov.sweep_string_iterator()))
        else:
            fixed.append(f"{key}={ov.get_value_element_as_str()}")
    return fixed, space


def param_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={repr(v) if isinstance(v, float) else v}" for k, v in params.items()]


def _corners(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Points whose composition checks every choice and both ends of every range."""
    def ends(d: Any) -> list[Any]:
        return list(d.choices) if hasattr(d, "choices") else [d.low, d.high]

    base = {k: ends(d)[0] for k, d in space.items()}
    points = [base]
    for k, d in space.items():
        points += [{**base, k: v} for v in ends(d)[1:]]
    return points


def plan(overrides: Sequence[str]) -> tuple[list[str], dict[str, Any], DictConfig]:
    """Parse the space and compose every choice and range end before anything runs."""
    fixed, space = parse_space(overrides)
    if not space:
        raise ConfigError("a search needs at least one searched value, e.g. optim.lr=log(1e-4,1e-1) "
                          "or model.width_mult=choice(0.5,1,2)")
    if any(k.split(".")[0] in ("search", "sweep", "out_dir", "resume") for k in space):
        raise ConfigError("search.*, out_dir and resume say how the search runs: give them one value")
    base = None
    for point in _corners(space):
        cfg = compose([*fixed, *param_overrides(point)])
        base = base or cfg
    assert base is not None
    if int(base.trainer.devices) > 1:
        raise ConfigError("a search trial runs in one process: drop trainer.devices (>1)")
    return fixed, space, base


def objective(cfg: DictConfig, known_only: bool = True) -> tuple[str, str]:
    """The metric the study optimizes (e.g. val/acc1) and its direction. `known_only`: the metric
    must be one the task reports (a custom train_fn may report more, with search.direction set)."""
    from vaitrain.tasks import TASKS

    task = TASKS[str(cfg.task.name)]
    metric = str(cfg.search.metric) or f"val/{task.main_metric}"
    if "/" not in metric:
        metric = f"val/{metric}"
    section, name = metric.split("/", 1)
    modes = task.metrics_reported(cfg.task)
    explicit = str(cfg.search.direction) != "auto"
    if (known_only or not explicit) and (section not in ("val", "val_ema") or name not in modes):
        sections = "val/ (or val_ema/ with trainer.ema set, e.g. 0.999)"
        raise ConfigError(f"search.metric={metric}: a {task.name} run reports no such validation metric; "
                          f"choose one of {', '.join(modes)} under {sections}")
    if section == "val_ema" and not bool(cfg.trainer.ema):
        raise ConfigError(f"search.metric={metric}: val_ema/ metrics need an EMA of the weights, e.g. trainer.ema=0.999")
    direction = str(cfg.search.direction)
    natural = {"max": "maximize", "min": "minimize"}.get(modes.get(name, ""), "")  # "" for a custom metric
    if direction == "auto":
        direction = natural  # name is known: checked above
    elif natural and direction != natural:  # maximize val/loss: the study would hunt for the worst runs
        raise ConfigError(f"search.direction={direction} contradicts {metric}, for which "
                          f"{'higher' if natural == 'maximize' else 'lower'} is better: drop search.direction "
                          "(auto follows the metric)")
    return metric, direction


def make_sampler(search: Any, seed: int) -> Any:
    optuna = _optuna()
    if str(search.sampler) == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running at once (parallel, other processes) are not proposed twice
    return optuna.samplers.TPESampler(n_startup_trials=int(search.startup_trials), seed=seed, constant_liar=True)


def make_pruner(search: Any) -> Any:
    optuna = _optuna()
    name = str(search.pruner)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(search.startup_trials),
                                           n_warmup_steps=int(search.warmup_epochs))
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, int(search.warmup_epochs)))
    return optuna.pruners.NopPruner()


# ----- inside a trial's process ------------------------------------------------------------------
def trial_reporter(info: dict[str, Any], cfg: DictConfig) -> Callable[[int, dict[str, float]], str | None]:
    """The training loop's on_epoch hook for a trial: report the epoch's metric to Optuna and
    end the run as "pruned" when the pruner says so."""
    optuna = _optuna()
    study = optuna.load_study(study_name=info["study"], storage=info["storage"], pruner=make_pruner(cfg.search))
    trial = optuna.trial.Trial(study, int(info["trial_id"]))
    metric = info["metric"]
    earlier = [bool(cfg.resume)]

    def on_epoch(epoch: int, metrics: dict[str, float]) -> str | None:
        if earlier[0]:  # a resumed trial: the epochs its run recorded before count for the pruner too
            earlier[0] = False
            for done, value in _recorded_epochs(Path(str(cfg.resume)), metric):
                if done < epoch:
                    trial.report(value, done)
        value = metrics.get(metric)
        if value is None or not math.isfinite(float(value)):
            return None
        trial.report(float(value), epoch)
        return "pruned" if trial.should_prune() else None

    return on_epoch


def _recorded_epochs(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    from vaitrain.track.rundir import METRICS_FILE

    out = []
    try:
        lines = (run_dir / METRICS_FILE).read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("kind") == "epoch" and isinstance(rec.get(metric), (int, float)):
            out.append((int(rec["epoch"]), float(rec[metric])))
    return out


# ----- the driver --------------------------------------------------------------------------------
@dataclass
class SearchResult:
    search_dir: Path
    storage: str
    study: str
    metric: str
    direction: str
    trials: list[dict[str, Any]] = field(default_factory=list)  # every trial of the study, best first
    interrupted: bool = False
    signal: int = 0  # the stop signal (SIGINT 2, SIGTERM 15) when interrupted

    @property
    def best(self) -> dict[str, Any] | None:
        return next((t for t in self.trials if t["state"] == "COMPLETE"), None)


class _Heartbeat:
    """Records a heartbeat for each trial this driver runs, so another driver can tell a dead one."""

    def __init__(self, storage: Any, every: int) -> None:
        self.storage, self.every = storage, every
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.ids.add(trial_id)

    def remove(self, trial_id: int) -> None:
        with self.lock:
            self.ids.discard(trial_id)

    def _loop(self) -> None:
        while not self.stopped.wait(self.every):
            with self.lock:
                ids = list(self.ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception:  # a finished trial, a locked database: the next beat will do
                    pass

    def close(self) -> None:
        self.stopped.set()


def _retry_stale(study: Any, frozen: Any) -> None:
    """A trial whose driver died: queue its parameters again, resuming its run from last.pt."""
    attrs = frozen.user_attrs
    run_dir = attrs.get("run_dir") or find_run_dir(Path(attrs.get("folder", ".")), attrs.get("name", "?"))
    resume = run_dir if run_dir and (Path(run_dir) / CKPT_DIR / "last.pt").is_file() else None
    study.enqueue_trial(frozen.params, user_attrs={"resume": resume, "retry_of": frozen.number})


class _InProcess:
    """One trial at a time in this process (search.parallel=1, launcher=local)."""

    parallel = 1

    def __init__(self, train_fn: Callable[..., Any] | None) -> None:
        self.train_fn = train_fn

    def start(self, spec: JobSpec, key: Any) -> Any:
        from vaitrain.jobs import Running

        return Running(spec, key, run_job(spec, self.train_fn))

    def done(self, r: Any) -> bool:
        return True

    def outcome(self, r: Any) -> dict[str, Any]:
        return r.handle

    def stop(self, r: Any) -> None:
        pass


def _open_search(overrides: Sequence[str]) -> tuple[Path, list[str], bool]:
    """The search folder and the overrides it runs with: a new folder, or resume=<search folder>."""
    given = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "resume"]
    if not given:
        return Path(), list(overrides), False
    folder = Path(given[-1])
    try:
        doc = json.loads(read_text(folder / SEARCH_FILE))
    except NotRegularFile as err:  # a FIFO waited on for ever before
        raise RunDirError(f"resume={folder}: cannot read {SEARCH_FILE} ({err.strerror}); pass the search folder "
                          "as vaitrain wrote it") from None
    except (OSError, ValueError):
        raise RunDirError(f"resume={folder} is not a vaitrain search folder (no readable {SEARCH_FILE}); "
                          "pass runs/<date>/<time>-search-<id>") from None
    extra = [o for o in overrides if o.split("=", 1)[0] != "resume"]
    bad = [o for o in extra if not o.startswith("search.")]
    if bad:
        raise ConfigError(f"'{bad[0]}': resuming a search keeps its space and fixed values; only search.* "
                          "(e.g. search.trials=60) may be given with resume=")
    # a search.* given now replaces the stored one (e.g. search.trials=60 runs more trials)
    now = {o.split("=", 1)[0] for o in extra}
    kept = [o for o in doc["overrides"] if o.split("=", 1)[0].lstrip("+") not in now]
    return folder, [*kept, *extra], True


def _check_same_study(folder: Path, now: dict[str, str]) -> None:
    """A search resumed with another search.metric, direction, storage or study: the new trials' values
    were ranked with the old ones (val/loss against val/acc1), or Optuna's 'cannot overwrite study
    direction' traceback, or a fresh study beside the old one. Refused in one line."""
    doc = json.loads(read_text(folder / SEARCH_FILE))  # read (and checked) by _open_search a moment ago
    for key, value in now.items():
        stored = doc.get(key)
        if isinstance(stored, str) and stored != value:
            raise ConfigError(f"resume={folder}: search.{key}={value} differs from the search's {key} {stored} "
                              f"(its {SEARCH_FILE}); a resumed search keeps its objective and study: drop "
                              f"search.{key}, or start a new search")


def run_search(overrides: Sequence[str], *, progress: Progress | None = None,
               train_fn: Callable[..., Any] | None = None) -> SearchResult:
    """Run (or continue) a study until it holds search.trials finished trials. `train_fn` (default
    vaitrain.engine.train, with its on_epoch hook) trains the trials run in this process."""
    optuna = _optuna()
    folder, overrides, resuming = _open_search(overrides)
    fixed, space, base = plan(overrides)
    settings = base.search
    metric, direction = objective(base, known_only=train_fn is None)
    check_launcher(settings)
    given, beat = str(settings.storage), int(settings.heartbeat)
    if resuming:  # before any database is opened; the default storage is the folder's own study.db
        _check_same_study(folder, {"metric": metric, "direction": direction,
                                   "study": str(settings.study) or "search", **({"storage": given} if given else {})})
    if given and "://" not in given:
        raise ConfigError(f"search.storage={given} is no database URL; write e.g. sqlite:///runs/search.db")
    storage = _open_storage(optuna, given, beat) if given else None  # a bad one fails before any folder
    if not resuming:
        check_writable(Path(str(base.out_dir)))
        now = _dt.datetime.now()
        folder = create_unique_dir(Path(str(base.out_dir)) / now.strftime("%Y-%m-%d"),
                                   f"{now.strftime('%H-%M-%S')}-search", "search")
    url = given or f"sqlite:///{(folder / DB_FILE).resolve()}"
    storage = storage or _open_storage(optuna, url, beat)
    study_name = str(settings.study) or "search"
    if not resuming:
        write_text_atomic(folder / SEARCH_FILE, json.dumps({
            "overrides": list(overrides), "storage": url, "study": study_name, "metric": metric,
            "direction": direction, "started": _dt.datetime.now().isoformat(timespec="seconds")}, indent=2) + "\n")
    shared = bool(str(settings.storage))
    study = optuna.create_study(study_name=study_name, storage=storage, load_if_exists=True, direction=direction,
                                sampler=make_sampler(settings, int(settings.seed)), pruner=make_pruner(settings))
    result = SearchResult(folder, url, study_name, metric, direction)
    in_process = int(settings.parallel) == 1 and str(settings.launcher) == "local"
    launcher = _InProcess(train_fn) if in_process else make_launcher(
        settings, folder, str(base.trainer.device) != "cpu", progress)
    heart = _Heartbeat(storage, beat)
    target, failures = int(settings.trials), [0]
    states = optuna.trial.TrialState

    def next_job() -> tuple[Any, JobSpec] | None:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in (states.COMPLETE, states.PRUNED) for t in trials)
        running = sum(t.state == states.RUNNING for t in trials)
        if finished + running >= target or failures[0] >= max(3, target):
            return None
        # each trial its own seed (reproducible; distinct across processes sharing a study)
        study.sampler = make_sampler(settings, _trial_seed(int(settings.seed), len(trials), shared))
        trial = study.ask(space)
        resume = trial.user_attrs.get("resume")
        name = f"trial{trial.number:04d}"
        if resume:
            from vaitrain.engine.resume import resume_overrides

            job = resume_overrides(Path(resume), [])
            trial.set_user_attr("run_dir", resume)
        else:
            job = [*fixed, *param_overrides(trial.params)]
        trial.set_user_attr("folder", str(folder.resolve()))
        trial.set_user_attr("name", name)
        heart.add(trial._trial_id)  # Optuna's own heartbeat helper is private; Trial keeps the id
        info = {"storage": url, "study": study_name, "trial_id": trial._trial_id, "metric": metric}
        return trial, JobSpec(job, str(folder), name, trial=info)

    def on_start(trial: Any, _r: Any) -> None:
        if progress:
            what = "resumes " + str(trial.user_attrs["resume"]) if trial.user_attrs.get("resume") else \
                " ".join(param_overrides(trial.params))
            progress(f"trial {trial.number}: {what}")

    def on_done(trial: Any, outcome: dict[str, Any]) -> None:
        heart.remove(trial._trial_id)
        status, run_dir = str(outcome["status"]), outcome.get("run_dir")
        if run_dir:
            trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("status", status)
        value = outcome.get("metrics", {}).get(metric)
        if status == "completed" and isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
            line = f"{metric}={value:.4g}"
        elif status == "pruned":
            study.tell(trial, state=states.PRUNED)
            line = "pruned"
        elif status == "stopped":
            study.tell(trial, state=states.FAIL)
            _retry_stale(study, study.get_trials(deepcopy=False)[trial.number])
            line = "stopped (queued to resume)"
        else:
            failures[0] += 1
            error = outcome.get("error") or f"no {metric} in its records"
            trial.set_user_attr("error", error)
            study.tell(trial, state=states.FAIL)
            line = f"failed: {error}"
        if progress:
            progress(f"trial {trial.number} {line}")

    try:
        signum = run_jobs(launcher, next_job, on_start, on_done)
        result.interrupted, result.signal = bool(signum), int(signum)
    except optuna.exceptions.StorageInternalError as err:  # the database went away, is read-only, ...
        cause = " ".join(str(err.__cause__ or err).split())[:160]
        raise RunDirError(f"the study's storage {url} failed ({cause}); the trials' runs are in {folder}; "
                          f"once it works again continue with: vaitrain search resume={folder}") from None
    finally:
        heart.close()
    result.trials = _rows(study, direction)
    return result


def _open_storage(optuna: Any, url: str, beat: int) -> Any:
    """Optuna's RDB storage with heartbeats. Two processes creating one new database at once race
    on its tables and on the schema-version row ("table ... already exists", "UNIQUE constraint
    failed: alembic_version", "database is locked"). For a SQLite file the opening is serialized by
    a lock on the file's folder; any other database's loser retries."""
    import time

    with _sqlite_folder_lock(url):
        attempt = 0
        while True:
            try:
                return optuna.storages.RDBStorage(url, heartbeat_interval=beat, grace_period=2 * beat,
                                                  heartbeat_stale_trial_callback=_retry_stale)
            except Exception as err:
                text = " ".join(str(err).split())
                attempt += 1
                if attempt >= 8 or not any(m in text.lower() for m in _CREATE_RACE):
                    raise ConfigError(f"search.storage={url}: cannot open it ({text[:160]})") from None
                time.sleep(0.2 * attempt)


# what a database says when another process created its tables or version row a moment earlier
_CREATE_RACE = ("already exists", "locked", "unique constraint", "duplicate key", "integrityerror")


@contextlib.contextmanager
def _sqlite_folder_lock(url: str) -> Iterator[None]:
    """An exclusive flock on the folder of a sqlite:/// database file while it is opened (a folder,
    so no lock file is left beside the user's database; the kernel drops it if the process dies)."""
    import fcntl

    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        parsed = None
    name = parsed.database if parsed is not None and parsed.get_backend_name() == "sqlite" else None
    if not name or name == ":memory:" or name.startswith("file:"):
        yield
        return
    kind = special_kind(Path(name).expanduser())
    if kind:  # a FIFO was 'disk I/O error', a folder 'unable to open database file'
        raise ConfigError(f"search.storage={url}: {name} is {kind}, not a database file; name a new or existing "
                          ".db file, e.g. sqlite:///runs/search.db")
    try:
        fd = os.open(Path(name).expanduser().resolve().parent, os.O_RDONLY)
    except OSError:
        yield  # a missing folder: RDBStorage says so in its own error
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _trial_seed(seed: int, n_trials: int, shared: bool) -> int:
    """A well-mixed seed per trial (consecutive seeds give correlated first draws); in a shared
    study each process adds its pid so two drivers asking at once draw differently."""
    import numpy as np

    parts = [seed, n_trials] + ([os.getpid()] if shared else [])
    return int(np.random.SeedSequence(parts).generate_state(1)[0])


def _rows(study: Any, direction: str) -> list[dict[str, Any]]:
    def shown(t: Any) -> str:  # what happened to it, in vaitrain's words
        if t.state.name == "WAITING":
            return f"queued (resumes trial {t.user_attrs['retry_of']})" if t.user_attrs.get("retry_of") is not None \
                else "queued"
        if t.state.name == "FAIL" and t.user_attrs.get("status") == "stopped":
            return "stopped"
        return t.state.name.lower()

    rows = [{"number": t.number, "state": t.state.name, "status": shown(t), "value": t.value,
             "params": dict(t.params) or dict(t.system_attrs.get("fixed_params", {})),
             "run_dir": t.user_attrs.get("run_dir"), "epochs": len(t.intermediate_values),
             "error": t.user_attrs.get("error")} for t in study.get_trials(deepcopy=False)]
    sign = -1.0 if direction == "maximize" else 1.0
    rank = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
    return sorted(rows, key=lambda r: (rank.get(r["state"], 5), sign * r["value"] if r["value"] is not None else 0.0,
                                       r["number"]))
