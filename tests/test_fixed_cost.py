"""Issue 16 part 5, fixed cost per run: the cheaper paths give what the ones they replace gave."""
from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("n, c, nrow, pad", [(1, 3, 8, 2), (1, 1, 8, 2), (5, 3, 8, 2), (16, 3, 8, 2),
                                             (7, 3, 3, 1), (9, 1, 4, 0), (3, 3, 1, 3)])
def test_grid_equals_torchvisions_make_grid(n: int, c: int, nrow: int, pad: int) -> None:
    from torchvision.utils import make_grid

    from vaitrain.tasks import images

    cells = [torch.rand(c, 5, 7) for _ in range(n)]
    ours = images.grid(cells, nrow=nrow, pad=pad)
    theirs = make_grid(torch.stack(cells), nrow=nrow, padding=pad, pad_value=0.5)
    assert ours.shape == theirs.shape
    assert torch.equal(ours, theirs)


def test_an_improved_epoch_writes_one_serialization_to_last_and_best(tmp_path, monkeypatch):
    """last.pt and best.pt of the same epoch are the same bytes, serialized once."""
    from vaitrain.engine import prepare, train
    from vaitrain.track import files

    calls = []
    real = files.torch_bytes
    monkeypatch.setattr("vaitrain.engine.checkpoint.torch_bytes", lambda obj: calls.append(obj["epoch"]) or real(obj))
    cfg, overrides = prepare(["model.width_mult=0.25", "data.image_size=16", "data.num_train=64", "data.num_val=32",
                              "trainer.batch_size=32", "trainer.progress=none", "trainer.epochs=1",
                              "trainer.threads=1", f"out_dir={tmp_path}"])
    run = train(cfg, overrides).run_dir
    assert calls == [1]  # epoch 1 improves on nothing: one serialization for both files
    last, best = (run / "checkpoints" / name for name in ("last.pt", "best.pt"))
    assert last.read_bytes() == best.read_bytes()
    state = torch.load(best, weights_only=True)
    assert state["epoch"] == 1 and state["best"]["epoch"] == 1


def test_a_training_run_imports_no_torchvision_rich_or_other_datasets(tmp_path):
    """What a `vaitrain train` process on the shapes data does not need, it does not import (each
    cost every run CPU time): torchvision (sample grids are plain torch), rich (no table is
    printed), the other datasets' modules (imported from the registry when built)."""
    import subprocess
    import sys

    code = ("import sys\nfrom vaitrain.cli import main\n"
            "sys.argv = ['vaitrain', 'train', 'model.width_mult=0.25', 'data.image_size=16', 'data.num_train=64',"
            " 'data.num_val=32', 'trainer.batch_size=32', 'trainer.epochs=1', 'trainer.threads=1',"
            f" 'trainer.progress=none', 'out_dir={tmp_path}']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torchvision', 'rich', 'vaitrain.data.folders', 'vaitrain.data.torchvision_sets',"
            " 'vaitrain.data.shapes', 'vaitrain.tasks.images') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['vaitrain.data.shapes', 'vaitrain.tasks.images']"
    assert list(tmp_path.glob("*/*/tb/events.out.tfevents.*")), "the run wrote its TensorBoard records"


@pytest.mark.parametrize("entry, frozen", [("from vaitrain.cli import main; main()", True),
                                           ("from vaitrain.cli import app; app()", False)])
def test_the_console_entry_skips_the_exit_collection_and_still_flushes(entry: str, frozen: bool, tmp_path):
    """The console entry freezes the heap in its last exit handler (the interpreter's exit-time full
    collections are skipped); a handler registered before it runs after it and sees the freeze. The
    same app called without the entry (as tests and library users do) leaves the exit alone. Output
    printed just before exit still arrives whole."""
    import subprocess
    import sys

    probe = tmp_path / "probe.txt"
    code = ("import atexit, gc, sys\n"
            f"atexit.register(lambda: open({str(probe)!r}, 'w').write(str(gc.get_freeze_count() > 0)))\n"
            "sys.argv = ['vaitrain', 'options', 'optim']\n" + entry + "\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert probe.read_text() == str(frozen)
    assert "lr" in out.stdout and out.stdout.endswith("\n")
