"""The command line: thin Typer commands that parse, call the library and print.

Library errors (vaitrain.errors.VaitrainError) become one line on stderr and exit code 2.
"""
from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, TypeVar

import typer
from typer.core import TyperGroup

from vaitrain.errors import Interrupted, VaitrainError

if TYPE_CHECKING:
    from rich.table import Table


def _plain_help_types() -> None:
    """Typer 0.2x's help prints each parameter's Python type: `--json <bool>` reads as if the flag
    took a value (`--json true`), `overrides... <list[str]>` is Python's notation. A flag gets no
    type column, a list argument none (its `...` says it repeats), a repeatable option its
    element's (`--metric <str>`); `<path>`, `<int>` stay."""
    from typer.core import TyperArgument, TyperOption

    for cls, hide in ((TyperOption, lambda p: getattr(p, "is_flag", False)),
                      (TyperArgument, lambda p: getattr(p, "nargs", 1) != 1)):
        shown = getattr(cls, "display_type_rich", None)
        if shown is None or getattr(shown, "vaitrain", False):
            continue

        def display_type_rich(self: Any, ctx: Any, _shown: Any = shown, _hide: Any = hide) -> Any:
            if _hide(self):
                return None
            label = _shown(self, ctx)
            return re.sub(r"<list\[(.*)\]>", r"<\1>", label) if isinstance(label, str) else label

        display_type_rich.vaitrain = True  # type: ignore[attr-defined]
        setattr(cls, "display_type_rich", display_type_rich)


_plain_help_types()


def _bash_keys_stay_open() -> None:
    """Bash's completion adds a space after a word it completes, so `model.u<TAB>` gave
    `model.up= ` and the value typed next was a word of its own: the installed script asks for
    no space when the one completion is a key ending in '=' (zsh and fish leave it open)."""
    try:
        from typer import _completion_shared as shared
    except ImportError:
        return
    scripts = getattr(shared, "_completion_scripts", {})
    script, end = scripts.get("bash"), "    return 0\n}"
    if isinstance(script, str) and end in script and "compopt" not in script:
        scripts["bash"] = script.replace(
            end, '    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then compopt -o nospace; fi\n' + end, 1)


_bash_keys_stay_open()


class OneLineUsageErrors(TyperGroup):
    """Usage errors (an unknown option such as `-0` or `--multrun`, a missing argument, a mistyped
    command) as one line and exit 2, like every other bad input, instead of Typer's usage box."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as err:
            show, ctx = getattr(err, "show", None), getattr(err, "ctx", None)
            if not standalone or not hasattr(err, "format_message"):
                raise
            if type(err).__name__ == "NoArgsIsHelpError" and show is not None:  # bare `vaitrain`: the help
                show()
                sys.exit(getattr(err, "exit_code", 2))
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            where = _dash_file_hint(err, kwargs.get("args") or (args[0] if args else None)) or where
            typer.echo(f"error: {one_line(err.format_message())}{where}", err=True)
            sys.exit(getattr(err, "exit_code", 2))
        except typer.Abort:
            if not standalone:
                raise
            typer.echo("aborted", err=True)
            sys.exit(1)
        if not standalone:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _dash_file_hint(err: Exception, argv: Any) -> str:
    """`vaitrain predict RUN -x.png`: a file whose name starts with '-' reads as an option ('No such
    option: -x'); the hint says how to name it."""
    name = getattr(err, "option_name", None)
    words = list(argv) if argv is not None else sys.argv[1:]
    if type(err).__name__ != "NoSuchOption" or not name:
        return ""
    found = next((w for w in words if isinstance(w, str) and w.startswith(name) and Path(w).exists()), None)
    return f"; '{found}' is a file: write ./{found}, or put -- before it" if found else ""


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Train, evaluate and benchmark image networks; every choice is a config override "
    "(e.g. `vaitrain train model=unet task=segmentation optim=adam`).",
    no_args_is_help=True,
    add_completion=True,  # --install-completion: groups, options and keys complete (vaitrain/options.py)
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # -h as well: what most tools take
)


class _Console:
    """rich's Console, made on first use: `vaitrain train` prints no table, and importing rich
    cost every run ~0.02 CPU s."""

    made: Any = None

    def __getattr__(self, name: str) -> Any:
        if _Console.made is None:
            from rich.console import Console

            _Console.made = Console()
        return getattr(_Console.made, name)


console = _Console()
F = TypeVar("F", bound=Callable[..., Any])

OVERRIDES_HELP = ("Hydra overrides: group=option (optim=adam) or key=value (trainer.epochs=3); "
                  "`vaitrain options` lists them all.")


def _complete(ctx: typer.Context, args: List[str], incomplete: str) -> List[str]:
    from vaitrain.options import complete_override

    try:
        # Typer hands `args` over empty; the words before the cursor are the parsed overrides
        words = list(args) or [str(w) for w in (ctx.params.get("overrides") or [])]
        return complete_override(words, incomplete)
    except Exception:  # noqa: BLE001 - a completion never prints a traceback into the shell
        return []


def _version(value: bool) -> None:
    if value:
        import vaitrain

        typer.echo(f"vaitrain {vaitrain.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Train, evaluate and benchmark image networks; every choice is a config override
    (e.g. `vaitrain train model=unet task=segmentation optim=adam`); `vaitrain options` lists them."""


@app.command("help", hidden=True)
def help_(ctx: typer.Context, command: Optional[str] = typer.Argument(None, help="A command, e.g. train.")) -> None:
    """`vaitrain help [COMMAND]`: the same as `vaitrain [COMMAND] --help` (what a new user tries first)."""
    root = ctx.parent if ctx.parent is not None else ctx
    if command is None:
        text = root.get_help()
    else:
        found = root.command.get_command(root, command)  # type: ignore[attr-defined]
        if found is None or getattr(found, "hidden", False):
            names = [n for n, c in root.command.commands.items() if not c.hidden]  # type: ignore[attr-defined]
            from vaitrain.errors import closest_first

            fail(f"no command '{command}'; the commands are: {', '.join(closest_first(command, names))}")
        with typer.Context(found, info_name=command, parent=root) as sub:  # type: ignore[arg-type]
            text = found.get_help(sub)
    if text.strip():  # rich prints the help itself and returns nothing
        typer.echo(text)


def _png_only(plot: Optional[Path]) -> None:
    """--plot writes a PNG: a file named otherwise (plot.pdf, plot.txt) is refused before the work
    (after the check that it is none of a run's own files, which says more)."""
    if plot is None:
        return
    from vaitrain.track.rundir import check_output

    check_output("--plot", plot)  # a RunDirError: one_line_errors prints it
    if plot.suffix.lower() != ".png":
        fail(f"--plot {plot}: the plot is a PNG image; name it {plot.with_suffix('.png').name}")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """Control characters (a newline inside an override, a file name) shown escaped: one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def one_line_errors(fn: F) -> F:
    """Turn library errors into one clear line and exit code 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as err:
            fail(str(err), 128 + err.signum)
        except VaitrainError as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)
        except OSError as err:
            # a path over the system's limits (a name over 255 bytes, a path over 4096), wherever the
            # library first touches it: Path.exists() and mkdir raise it instead of answering
            import errno

            if err.errno != errno.ENAMETOOLONG:
                raise
            fail(f"file name too long: {err.filename}: a name may have at most 255 bytes and a whole path "
                 "4096; shorten it")
        except ImportError as err:
            # a memory limit (ulimit -v) below what torch's libraries need to be mapped
            if "failed to map segment" not in str(err) and "cannot allocate memory" not in str(err).lower():
                raise
            fail(f"cannot load a library into memory ({err}): the process's memory limit is too low for torch; "
                 "raise it (ulimit -v) and run again")
        except (MemoryError, RuntimeError) as err:
            # train turns these into its own line (naming last.pt); eval, predict, export, models,
            # inspect and lab meet them here
            from vaitrain.engine.resources import is_out_of_memory

            where = is_out_of_memory(err)
            if where is None:
                raise
            fail(f"out of {where} memory in `{fn.__name__.rstrip('_').replace('_', '-')}`: lower the batch size "
                 "(--batch-size or trainer.batch_size) or data.image_size, or use trainer.device=cpu, then run again")

    return wrapper  # type: ignore[return-value]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    # the title stays on one line (a 2-column table is narrower than its title); numbers are never
    # split across lines: the text columns (layer names, notes) fold instead
    from rich import box
    from rich.measure import Measurement
    from rich.table import Table

    wide = len(columns) >= 6  # light rules: 8 columns of numbers fit about 100 columns whole
    table = Table(title=title, min_width=min(len(title) + 4, console.width),
                  box=box.SIMPLE_HEAD if wide else box.HEAVY_HEAD, pad_edge=not wide)
    for i, col in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], (int, float)) or r[i] in ("", "-", None) for r in rows)
        table.add_column(col, overflow="fold", no_wrap=numeric, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    # SIMPLE_HEAD's column rule is a space between two paddings: when the whole table is wider than
    # the terminal, share one padding before layer names and shapes fold ('Line|ar' at 80 columns)
    if wide and Measurement.get(console, console.options.update_width(10_000), table).maximum > console.width:
        table.collapse_padding = True
    return table


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@app.command(context_settings={"allow_extra_args": False})
@one_line_errors
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, autocompletion=_complete),
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Sweep: a,b / range(..) / choice(..) values."),
) -> None:
    """Train a model (default: ResNet-20 on the embedded shapes data). resume=RUN_DIR continues a run.
    `vaitrain options [GROUP]` lists every key with its allowed values; `vaitrain config ...` shows the result."""
    overrides = list(overrides or [])
    if multirun:
        sweep_main(overrides)
        return
    from vaitrain.interrupts import startup_signals

    # SIGINT/SIGTERM before the loop's own handler takes over: one line, exit 128 + signal
    with startup_signals():
        from vaitrain.engine.resume import prepare

        given = list(overrides)
        cfg, overrides = prepare(overrides)
        from vaitrain.engine import train as run_train

        from vaitrain.engine.dist import env_ranks

        devices = int(cfg.trainer.devices)
        world, rank, _ = env_ranks()  # a RANK/WORLD_SIZE left exported in the shell: one line
        if devices > 1 and world <= 1:  # (a WORLD_SIZE=1 left there skipped the launch: one process trained)
            from vaitrain.engine.dist import check_setup
            from vaitrain.engine.device import resolve_device
            from vaitrain.engine.launch import launch

            check_setup(devices, resolve_device(cfg.trainer.device), bool(cfg.trainer.sync_bn),
                        int(cfg.trainer.batch_size))
            # each rank composes the same config from the same command line (and finds RANK set)
            raise typer.Exit(launch(devices, ["train", *given]))
        try:
            result = run_train(cfg, overrides)
        except VaitrainError as err:
            if not rank:
                raise
            from vaitrain.errors import TrainingError

            if isinstance(err, TrainingError):  # every rank agreed on it; rank 0 says it
                raise typer.Exit(2)
            fail(f"[rank {rank}] {err}")
    if result.status == "stopped":
        if not rank:
            typer.echo(result.message, err=True)
        if result.signal:
            raise typer.Exit(128 + result.signal)
        return
    if rank:
        return
    main_metric = result.main_metric if result.main_metric in result.metrics else None
    best = result.best or {}
    if best.get("value") is not None and 0 < int(best.get("epoch", 0)) < result.epoch:
        # the line below shows the last epoch's metrics; eval's default, best.pt, is another epoch
        typer.echo(f"best.pt is epoch {best['epoch']} of {result.epoch} ({best['metric']}={best['value']:.4g}): "
                   "eval, predict and export use it unless given --checkpoint last")
    summary = f"done: {result.run_dir}"
    if main_metric:
        summary += f"  {main_metric}={result.metrics[main_metric]:.4g}"
    if "val/loss" in result.metrics:
        summary += f"  val/loss={result.metrics['val/loss']:.4g}"
    typer.echo(summary)
    typer.echo(f"tensorboard --logdir {result.run_dir}/tb")
    # what a first run is for: score it, run it on new files, take it out of the tool
    typer.echo("next: vaitrain eval RUN [--split test] | vaitrain predict RUN IMAGES... | "
               "vaitrain export RUN --format onnx --out model.onnx  (RUN: the folder above)")


def sweep_main(overrides: list[str]) -> None:
    """`train -m`: every job composed before the first runs; then the compare table."""
    from vaitrain.compare import compare_paths, render
    from vaitrain.sweep import SWEEP_FILE, run_sweep

    from vaitrain.interrupts import command_signals

    # the engine (torch) is imported only after every job composed: a typo fails fast. A stop signal
    # outside a job's training loop (which stops itself, last.pt) was the default death, sweep.json
    # left saying 'running': now the jobs left are 'interrupted' and the line below names the resume
    with command_signals("train -m"):
        result = run_sweep(overrides, progress=lambda line: typer.echo(line, err=True))
    if result.run_dirs:
        typer.echo(render(compare_paths(result.run_dirs).comparison, "table", _terminal_width()))
    failed = result.failed
    counts: dict[str, int] = {}
    for job in result.jobs:  # completed, stopped (a signal in the job), interrupted (never ran), failed
        counts[job.status] = counts.get(job.status, 0) + 1
    states = ", ".join(f"{n} {status}" for status, n in counts.items())
    typer.echo(f"sweep: {len(result.jobs)} jobs ({states}); {result.sweep_dir / SWEEP_FILE}")
    for job in failed:
        typer.echo(f"job{job.index:02d} ({' '.join(job.overrides)}) failed: {job.error}", err=True)
    if result.interrupted or failed:
        import signal

        why = f"stopped by {signal.Signals(result.signal or 2).name}: " if result.interrupted else ""
        typer.echo(f"{why}continue with: vaitrain train -m resume={result.sweep_dir}", err=True)
    if result.interrupted:  # 128 + the signal, as a single run exits (130 for Ctrl-C, 143 for SIGTERM)
        raise typer.Exit(128 + (result.signal or 2))
    if failed:
        raise typer.Exit(1)


def _trial_folder(run_dir: Any) -> str:
    """A trial's run folder by the end of its name ('…-trial0003-1a2b3c', unique in the search
    folder printed below the table): the whole name folded into three lines at 80 columns."""
    if not run_dir:
        return ""
    name = Path(run_dir).name
    found = re.search(r"-(trial\d+-\w+)$", name)
    return f"…-{found.group(1)}" if found else name


@app.command(context_settings={"allow_extra_args": False})
@one_line_errors
def search(overrides: Optional[List[str]] = typer.Argument(None, help=(
        "Search space and fixed overrides: optim.lr=log(1e-4,1e-1) model.width_mult=choice(0.5,1,2) "
        "search.trials=40; resume=SEARCH_DIR continues one."))) -> None:
    """Search hyper-parameters with Optuna (TPE, pruning, SQLite storage); each trial is a normal run."""
    from vaitrain.interrupts import command_signals

    # a stop signal in the imports or while the study opens was the default death (143, no word);
    # the trials' loop has its own handler (the running trials stop with their last.pt)
    with command_signals("search"):
        from vaitrain.search import param_overrides, run_search

        result = run_search(list(overrides or []), progress=lambda line: typer.echo(line, err=True))
    rows = [[t["number"], t["status"], t["value"], t["epochs"],
             " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()),
             _trial_folder(t["run_dir"])] for t in result.trials]
    console.print(_table(f"study '{result.study}': {result.direction} {result.metric}, best first",
                         ["trial", "state", result.metric, "epochs", "params", "run"], rows))
    best = result.best
    if best:
        # the values as overrides to paste into `vaitrain train` (a dict's repr read as Python)
        typer.echo(f"best: trial {best['number']} {result.metric}={best['value']:.4g}: "
                   f"{' '.join(param_overrides(best['params']))}  ({best['run_dir']})")
    typer.echo(f"search: {result.search_dir} (storage {result.storage})")
    if result.interrupted:
        typer.echo(f"continue with: vaitrain search resume={result.search_dir}", err=True)
        raise typer.Exit(128 + (result.signal or 2))  # 143 for SIGTERM, as train and train -m exit


@app.command("eval")
@one_line_errors
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<date>/<run>)."),
    checkpoint: str = typer.Option("best", help="best, last, or a path to a .pt file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Overrides, e.g. trainer.device=cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics (and the per-class table) as JSON."),
    split: str = typer.Option("val", "--split", help="val (the split that chose best.pt) or test (held out)."),
) -> None:
    """Metrics of a run's checkpoint on its validation or test split, with per-class scores."""
    from vaitrain.interrupts import command_signals

    with command_signals("eval"):  # SIGTERM in torch's import was the default death: one line instead
        from vaitrain.engine import evaluate_run
        from vaitrain.track.progress import for_stderr

        progress = for_stderr()
        try:
            result = evaluate_run(run_dir, checkpoint, list(overrides or []), split=split, progress=progress)
        finally:
            progress.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    rows = [[k, v] for k, v in result["metrics"].items()]
    typer.echo(result["checkpoint"])
    console.print(_table(f"{split} split (epoch {result['epoch']}, step {result['step']})", ["metric", "value"], rows))
    if result["per_class"]:
        columns = [k for k in result["per_class"][0] if k != "index"]
        console.print(_table(f"per class ({split})", columns,
                             [["-" if row[k] is None else row[k] for k in columns] for row in result["per_class"]]))


@app.command()
@one_line_errors
def config(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP, autocompletion=_complete),
    show_all: bool = typer.Option(False, "--all", help="Also the keys of the options not chosen (optim.lr_min with optim=adam)."),
) -> None:
    """Print the composed, resolved config: the keys that apply to the chosen options (--all: every key)."""
    from omegaconf import OmegaConf

    from vaitrain.config import compose, to_yaml
    from vaitrain.options import applying_config

    cfg = compose(list(overrides or []))
    if show_all:
        typer.echo(to_yaml(cfg), nl=False)
        return
    shown, hidden = applying_config(cfg)
    typer.echo(to_yaml(OmegaConf.create(shown)), nl=False)
    if hidden:
        typer.echo(f"# {len(hidden)} keys of options not chosen left out ({', '.join(hidden)}); --all shows them")


@app.command()
@one_line_errors
def options(
    group: Optional[str] = typer.Argument(None, help="model, data, task, optim, sched, norm, trainer or bench; default: all."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Choices whose keys to show, e.g. model=unet.",
                                                    autocompletion=_complete),
) -> None:
    """Every key you can set, with its allowed values or range, its value now and what it does."""
    from vaitrain.options import option_rows

    given = list(overrides or [])
    if group is not None and "=" in group:  # `vaitrain options model=unet`: no group named
        group, given = None, [group, *given]
    from rich.table import Table

    rows = option_rows(group, given)
    table = Table(title="options (set as key=value; group= picks a file of conf/<group>/)", title_justify="left")
    for col, kw in (("key", {"no_wrap": True}), ("allowed", {"overflow": "fold", "min_width": 18, "max_width": 34}),
                    ("now", {"overflow": "fold", "max_width": 16}), ("what it does", {"overflow": "fold"})):
        table.add_column(col, **kw)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
@one_line_errors
def models(overrides: Optional[List[str]] = typer.Argument(None, help="e.g. data.image_size=64 task=segmentation; model=NAME: that model only", autocompletion=_complete)) -> None:
    """Every model (or model=NAME's) with its parameters and GFLOPs at the chosen data's resolution."""
    from vaitrain.interrupts import command_signals

    with command_signals("models"):
        from vaitrain.track.progress import for_stderr
        from vaitrain.zoo import model_table

        progress = for_stderr()
        try:
            rows, size = model_table(list(overrides or []), progress)
        finally:
            progress.close()
    console.print(_table(f"models at {size} px", ["model", "params", "GFLOPs fwd", "GFLOPs train", "note"], rows))


@app.command()
@one_line_errors
def inspect(
    overrides: Optional[List[str]] = typer.Argument(
        None, help=OVERRIDES_HELP + " Several values (model.init=he,xavier) compare.", autocompletion=_complete),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw variance and gradient by depth to FILE.png (needs vaitrain[plot])."),
) -> None:
    """At initialization (norm=none unless given): each layer's activation variance and gradient norm for one batch."""
    _png_only(plot)
    from vaitrain.interrupts import command_signals

    with command_signals("inspect"):
        from vaitrain import inspect_init

        result = inspect_init.inspect_jobs(list(overrides or []))
        for job in result.jobs:
            console.print(_table(job.title, *inspect_init.table(job)))
        for line in result.notes:
            typer.echo(line)
        if plot is not None:
            inspect_init.plot_inspection(result, plot)
            typer.echo(f"wrote {plot}", err=True)


@app.command()
@one_line_errors
def bench(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP + " Bench options: bench.*"),
    multirun: bool = typer.Option(False, "-m", "--multirun", help="One row per value: -m model=resnet50,densenet121."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows + environment to FILE.json or FILE.csv."),
) -> None:
    """Training/inference img/s, step-time spread, peak memory, FLOPs and the data path; with
    bench.baseline=torchvision|bare a baseline side by side. A model that fails gets a row saying why."""
    from vaitrain.interrupts import command_signals

    with command_signals("bench"):  # SIGTERM in torch's import or a timing loop was the default death
        from vaitrain.bench import notes, run_bench, tables
        from vaitrain.track.progress import for_stderr

        progress = for_stderr()

        def next_job(line: str) -> None:  # a job's line, then a spinner (plain lines off a terminal) while it runs
            progress.finish()
            progress.line(line)
            progress.start(f"benchmarking {line.split(':', 1)[0]}")

        try:
            report = run_bench(list(overrides or []), multirun=multirun, out=str(out) if out else None,
                               progress=next_job)
        finally:
            progress.close()
    for title, columns, rows in tables(report):
        console.print(_table(title, columns, rows))
    for line in notes(report):
        typer.echo(line)
    if report.out:
        typer.echo(f"wrote {report.out}")
    failed = [r for r in report.rows if r.get("status") == "failed"]
    if report.rows and len(failed) == len(report.rows):  # nothing measured: a script must not read exit 0
        first = failed[0]
        fail(f"{first['model']}: {first.get('note', 'failed')}" if len(failed) == 1 else
             f"all {len(failed)} benchmarks failed (the FAILED lines above say why); nothing was measured")


@app.command("compare-runs")
@one_line_errors
def compare_runs(
    paths: List[str] = typer.Argument(..., help="Run dirs, sweep dirs or quoted globs ('runs/2026-11-*/*')."),
    metric: Optional[List[str]] = typer.Option(
        None, "--metric", help="Metric tag, repeatable (val/acc1, val/loss:min); default: the task's main one and val/loss."),
    sort: Optional[str] = typer.Option(None, "--sort", help="A metric (best first) or a column; a leading '-' reverses."),
    fmt: str = typer.Option("table", "--format", help="table | markdown | csv | json"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw the metrics' curves to FILE.png (needs matplotlib: the \\[plot] extra)."),
    serve: bool = typer.Option(False, "--serve", help="Then start TensorBoard on the runs (Ctrl-C stops it)."),
    port: int = typer.Option(6006, "--port", min=0, max=65535, help="--serve: first port to try (0: any free one)."),
    wide: bool = typer.Option(False, "--wide", help="Every column in full, however wide (default: fit the terminal)."),
) -> None:
    """Runs side by side: the config keys that differ, best/final metrics, wall time, img/s, params."""
    _png_only(plot)
    from vaitrain.interrupts import command_signals

    with command_signals("compare-runs"):  # not around --serve: there a stop signal is the way to end
        from vaitrain import compare as cmp

        result = cmp.compare_paths(paths, list(metric or []), sort)
        for line in result.warnings:
            typer.echo(f"warning: {line}", err=True)
        typer.echo(cmp.render(result.comparison, fmt, None if wide else _terminal_width()))
        if plot is not None:
            from vaitrain.compare_plot import plot_runs

            plot_runs(result.runs, result.comparison.metrics, plot)
            typer.echo(f"wrote {plot}", err=True)
    if serve:
        logdir = cmp.common_parent([r.path for r in result.runs])
        free = cmp.free_port(port)
        typer.echo(" ".join(cmp.tensorboard_command(logdir, free)), err=True)
        typer.echo(f"TensorBoard at http://127.0.0.1:{free}/ (Ctrl-C stops it)", err=True)
        proc = cmp.start_tensorboard(logdir, free)
        try:
            proc.wait()
        finally:
            proc.terminate()


@app.command()
@one_line_errors
def predict(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<date>/<run>)."),
    paths: List[str] = typer.Argument(..., help="Image files, folders (searched recursively) or quoted globs."),
    out: Optional[Path] = typer.Option(None, "--out", help="FILE.csv or FILE.json (segmentation: a folder for the "
                                       "PNG masks); default: CSV on stdout."),
    checkpoint: str = typer.Option("best", help="best, last, or a path to a .pt file."),
    topk: Optional[int] = typer.Option(None, "--topk", help="Classification: classes per image, most probable "
                                       "first (default 5, at most the model's classes)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    overlay: bool = typer.Option(False, "--overlay", help="Segmentation: also <name>.overlay.png (mask over image)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: the run's trainer.device)."),
) -> None:
    """A trained model on new image files, with the run's own preprocessing and normalization."""
    from vaitrain.interrupts import command_signals

    with command_signals("predict"):
        from vaitrain.predict import format_rows, predict as run_predict, summary_lines
        from vaitrain.track.progress import for_stderr

        progress = for_stderr()
        try:
            result = run_predict(run_dir, paths, checkpoint=checkpoint, out=out, topk=topk, batch_size=batch_size,
                                 overlay=overlay, device=device, progress=progress)
        finally:
            progress.close()  # finish() alone leaves a terminal's live display running
    for line in [*result.notes, *(f"skipped {e}" for e in result.errors)]:
        typer.echo(line, err=True)
    if not result.rows:
        fail(f"none of the {result.total} files could be read; nothing written")
    if out is None:
        typer.echo(format_rows(result.rows, "csv"), nl=False)
    for line in summary_lines(result):
        typer.echo(line + (f"; wrote {out}" if out is not None else ""), err=True)


@app.command()
@one_line_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<date>/<run>)."),
    more: Optional[List[str]] = typer.Argument(None, hidden=True),  # a glob that matched several runs: named
    fmt: str = typer.Option(..., "--format", help="onnx or torchscript."),
    out: Path = typer.Option(..., "--out", help="The file to write (model.onnx, model.pt); FILE.json describes it."),
    checkpoint: str = typer.Option("best", help="best, last, or a path to a .pt file."),
    # one visible flag: the pair '--include-normalization/--no-include-normalization' was cut to
    # '--include-normali…  --no-include-norm…' in an 80-column help; the default stays accepted
    include_normalization: bool = typer.Option(False, "--include-normalization", hidden=True),
    no_include_normalization: bool = typer.Option(
        False, "--no-include-normalization",
        help="Leave the mean/std out: the file takes input normalized as FILE.json says "
             "(default: baked in, the file takes x/255 in [0, 1])."),
) -> None:
    """Export a trained model (eval mode, dynamic batch) and check the file against PyTorch."""
    from vaitrain.interrupts import command_signals

    if include_normalization and no_include_normalization:
        fail("--include-normalization and --no-include-normalization contradict each other: give one")
    if more:
        from vaitrain.track.one_run import refuse_more_runs

        refuse_more_runs(run_dir, more, "export")  # a ConfigError: one_line_errors prints it
        fail(f"`vaitrain export` takes one run directory, then options (--format, --out, --checkpoint); "
             f"'{more[0]}' is one argument too many")
    with command_signals("export"):
        from vaitrain.export import export_run

        r = export_run(run_dir, fmt, out, checkpoint=checkpoint, include_normalization=not no_include_normalization)
    for line in r.notes:
        typer.echo(line, err=True)
    typer.echo(f"wrote {r.path} ({r.format}, input batch x {' x '.join(map(str, r.input_shape))}) and {r.sidecar}")
    if r.checked_with:
        typer.echo(f"checked with {r.checked_with}: max abs diff {r.max_abs_diff:.3g} vs PyTorch "
                   f"(export {r.export_seconds:.2f} s)")
    else:
        typer.echo("not run: onnxruntime is not installed (pip install 'vaitrain[export]' to check the file)", err=True)


def _terminal_width() -> int:
    """The terminal's columns ($COLUMNS first; 80 when there is no terminal)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


@app.command()
@one_line_errors
def lab(
    topic: Optional[str] = typer.Argument(None, help="A topic (init, gradients, normalization, ...); none: list them."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Overrides for every run, e.g. trainer.device=cuda."),
    size: str = typer.Option("default", "--size", help="default (minutes on a laptop CPU) | tiny (seconds)."),
    out_dir: Path = typer.Option(Path("runs"), "--out-dir", help="Where the lab folder goes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="A lab folder of this topic: continue its sweeps."),
) -> None:
    """The lecture's claims, each shown by small runs or inspections, ending in a report."""
    from vaitrain.interrupts import command_signals

    # a stop signal in the imports or an inspection: one line and 128 + signal; in a training run the
    # loop's own handler takes over (last.pt), and the lab then names its folder for --resume
    with command_signals("lab"):
        from vaitrain.lab import TOPICS, run_topic

        if topic is None:
            console.print(_table("vaitrain lab TOPIC", ["topic", "trains", "claim"],
                                 [[t.name, "yes" if t.trains else "no", t.claim] for t in TOPICS.values()]))
            return
        result = run_topic(topic, size=size, out_dir=out_dir, overrides=list(overrides or []), resume=resume,
                           progress=lambda line: typer.echo(line, err=True))
    typer.echo(f"{result.topic}: {result.claim}")
    for f in result.findings:
        typer.echo(f"  {'agrees' if f.holds else 'CONTRADICTS'}: {f.claim}\n      measured: {f.measured}")
    typer.echo(f"report: {result.report}  ({result.seconds:.1f} s)")


@app.command()
@one_line_errors
def report(
    paths: List[str] = typer.Argument(..., help="Run dirs, sweep dirs or quoted globs."),
    out: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write (self-contained)."),
) -> None:
    """One self-contained HTML page for runs or sweeps: config diff, curves, tables, images, layer stats."""
    from vaitrain.interrupts import command_signals

    with command_signals("report"):
        from vaitrain.report import build_report

        result = build_report(paths, out)
    for line in result.warnings:
        typer.echo(f"warning: {line}", err=True)
    typer.echo(f"wrote {result.out} ({len(result.runs)} runs)")


def main() -> None:
    # how the process was started (closed or vanishing stdout/stderr, a deleted working directory,
    # an undecodable command line, a garbage OMP_NUM_THREADS): settled before any command runs
    from vaitrain.process_env import (check_environment, guard_output_streams, open_std_fds,
                                      quiet_matplotlib_dir_notice, skip_exit_collection)

    skip_exit_collection()
    open_std_fds()
    guard_output_streams()
    quiet_matplotlib_dir_notice()
    try:
        check_environment(sys.argv[1:])
    except VaitrainError as err:
        typer.echo(f"error: {one_line(str(err))}", err=True)
        sys.exit(2)
    try:
        app()
    finally:
        from vaitrain.process_env import lost_output

        lost = lost_output()
        if lost is not None:  # stdout redirected to a full disk: never a silently truncated file and exit 0
            typer.echo(f"error: {lost}", err=True)
            sys.exit(2)


if __name__ == "__main__":
    main()
