"""The command line: thin Typer commands that parse, call the library and print.

Library errors (vaitrain.errors.VaitrainError) become one line on stderr and exit code 2.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from vaitrain.errors import VaitrainError

app = typer.Typer(
    help="Train, evaluate and benchmark image networks; every choice is a config override "
    "(e.g. `vaitrain train model=unet task=segmentation optim=adam`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
F = TypeVar("F", bound=Callable[..., Any])

OVERRIDES_HELP = "Hydra overrides: group=option (optim=adam) or key=value (trainer.epochs=3)."


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def one_line_errors(fn: F) -> F:
    """Turn library errors into one clear line and exit code 2; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except VaitrainError as err:
            fail(str(err))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper  # type: ignore[return-value]


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*[_cell(v) for v in row])
    return table


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@app.command(context_settings={"allow_extra_args": False})
@one_line_errors
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    multirun: bool = typer.Option(False, "-m", "--multirun", help="Sweep: a,b / range(..) / choice(..) values."),
) -> None:
    """Train a model (default: ResNet-20 on the embedded shapes data). resume=RUN_DIR continues a run."""
    overrides = list(overrides or [])
    if multirun:
        from vaitrain import sweep

        sweep_main(overrides)
        return
    from vaitrain.engine import prepare, train as run_train

    cfg, overrides = prepare(overrides)
    if int(cfg.trainer.devices) > 1 and "WORLD_SIZE" not in os.environ:
        from vaitrain.engine.launch import launch

        raise typer.Exit(launch(int(cfg.trainer.devices), ["train", *overrides]))
    result = run_train(cfg, overrides)
    if "RANK" in os.environ and os.environ.get("RANK") != "0":
        return
    if result.status == "stopped":
        typer.echo(result.message, err=True)
        if result.signal:
            raise typer.Exit(128 + result.signal)
        return
    main_metric = next((k for k in result.metrics if k.startswith("val/") and k != "val/loss"), None)
    summary = f"done: {result.run_dir}"
    if main_metric:
        summary += f"  {main_metric}={result.metrics[main_metric]:.4g}"
    if "val/loss" in result.metrics:
        summary += f"  val/loss={result.metrics['val/loss']:.4g}"
    typer.echo(summary)
    typer.echo(f"tensorboard --logdir {result.run_dir}/tb")


def sweep_main(overrides: list[str]) -> None:
    """`train -m`: every job composed before the first runs; then the compare table."""
    from vaitrain import sweep

    result = sweep.run_sweep(overrides)
    sweep.print_summary(result, console)


@app.command("eval")
@one_line_errors
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory (runs/<date>/<run>)."),
    checkpoint: str = typer.Option("best", help="best, last, or a path to a .pt file."),
    overrides: Optional[List[str]] = typer.Argument(None, help="Overrides, e.g. trainer.device=cpu."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Metrics of a run's checkpoint on its validation split."""
    from vaitrain.engine import evaluate_run

    result = evaluate_run(run_dir, checkpoint, list(overrides or []))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    rows = [[k, v] for k, v in result["metrics"].items()]
    console.print(_table(f"{result['checkpoint']} (epoch {result['epoch']}, step {result['step']})",
                         ["metric", "value"], rows))


@app.command()
@one_line_errors
def config(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """Print the composed, resolved config."""
    from vaitrain.config import compose, to_yaml

    typer.echo(to_yaml(compose(list(overrides or []))), nl=False)


@app.command()
@one_line_errors
def models(overrides: Optional[List[str]] = typer.Argument(None, help="e.g. data.image_size=64 task=segmentation")) -> None:
    """Every model with its parameters and GFLOPs at the chosen data's resolution."""
    from vaitrain.zoo import model_table

    rows, size = model_table(list(overrides or []))
    console.print(_table(f"models at {size} px", ["model", "params", "GFLOPs (forward)", "GFLOPs (train step)", "note"], rows))


@app.command()
@one_line_errors
def inspect(overrides: Optional[List[str]] = typer.Argument(None, help=OVERRIDES_HELP)) -> None:
    """At initialization: each layer's activation variance and gradient norm for one batch."""
    from vaitrain.zoo import init_table

    title, columns, rows = init_table(list(overrides or []))
    console.print(_table(title, columns, rows))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
