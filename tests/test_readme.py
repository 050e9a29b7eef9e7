"""Every `vaitrain` command in README.md's code blocks runs as written and exits 0, no traceback.

Commands that train (train, bench) get size-limiting overrides appended (later overrides win in
Hydra, so the command itself is unchanged): a few tiny batches, one epoch, one thread. Commands run
in README order in one temp folder (the compare-runs lines read the runs the train lines made).
Bash does the word splitting, quoting and globbing, exactly as in a user's shell; the command
then runs in-process through Typer's test runner (no interpreter start per command). A README line
marked `(not run in CI: why)` is skipped, and the test checks that the why is given.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaitrain.cli import app

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_IN_CI = re.compile(r"\(not run in CI: ([^)]+)\)")

TRAIN_LIMITS = ["data.num_train=16", "data.num_val=16", "trainer.batch_size=8", "trainer.epochs=1",
                "trainer.threads=1", "trainer.device=cpu", "trainer.log_every=1"]
BENCH_LIMITS = ["bench.warmup=0", "bench.steps=1", "bench.repeats=1", "bench.batch_size=2",
                "bench.image_size=32", "bench.data_batches=2", "trainer.threads=1", "trainer.device=cpu"]
LIMITS = {"train": TRAIN_LIMITS, "bench": BENCH_LIMITS}


def readme_commands(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(commands to run, [(skipped command, reason)]) from the README's fenced code blocks; a
    command is a shell line (continuations joined) or one `&&` part of it whose program is vaitrain."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    run: list[str] = []
    skipped: list[tuple[str, str]] = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = part.split()
                mark = NOT_IN_CI.search(part)
                if not words or not (words[0] == "vaitrain" or words[0].endswith("/vaitrain")):
                    if mark:  # torchrun -m vaitrain ..., sbatch ...
                        skipped.append((part.strip(), mark.group(1).strip()))
                    continue
                command = "vaitrain " + part.split(None, 1)[1] if len(words) > 1 else "vaitrain"
                if mark:
                    skipped.append((command, mark.group(1).strip()))
                else:
                    run.append(command)
    return run, skipped


def shell_words(command: str, cwd: Path) -> list[str]:
    """The arguments bash passes to `vaitrain` for this command line (quotes, globs, comments)."""
    rest = command.split(None, 1)[1] if " " in command else ""
    out = subprocess.run(["bash", "-c", f'printf "%s\\0" {rest}'], cwd=cwd, capture_output=True,
                         text=True, check=True).stdout
    return [w for w in out.split("\0") if w]


def test_readme_command_list_is_complete() -> None:
    run, skipped = readme_commands(README.read_text())
    subcommands = {c.split()[1] for c in run}
    # the README shows each of these; a parser that finds fewer is broken, not the README
    assert {"train", "bench", "models", "inspect", "compare-runs"} <= subcommands
    assert any(" -m " in c for c in run)  # a sweep
    # a line that runs vaitrain some other way (torchrun -m vaitrain) is run or marked, never silently left out
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        for line in block.splitlines():
            if re.search(r"-m vaitrain\b", line):
                assert NOT_IN_CI.search(line), f"README line `{line}` is neither run by this test nor marked"
    for command, why in skipped:
        assert len(why) > 5, f"README marks `{command}` as not run in CI without saying why"


def test_every_readme_command_runs(tmp_path: Path, one_thread: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")
    run, skipped = readme_commands(README.read_text())
    runner = CliRunner()
    ran = []
    for command in run:
        argv = shell_words(command, tmp_path)
        argv += LIMITS.get(argv[0], [])
        result = runner.invoke(app, argv)
        output = result.output
        assert "Traceback" not in output, f"`{command}` printed a traceback:\n{output}"
        assert result.exit_code == 0, f"`{command}` exited {result.exit_code}:\n{output}\n{result.exception!r}"
        ran.append(command)
    print(f"README commands run: {len(ran)}, marked not run in CI: {len(skipped)}")
    assert len(ran) >= 15
    assert (tmp_path / "curves.png").stat().st_size > 1000  # the --plot line drew its figure
