"""Review of the day's checks: legitimate input that a new check refused or rewrote."""
from __future__ import annotations

import csv
import errno
import io
import math

import pytest

from tests.adversarial import TINY, cli, refused, the_run
from vaitrain import sweep
from vaitrain.csv_cells import csv_text, safe_cell
from vaitrain.errors import RunDirError


def test_csv_non_finite_numbers_stay_numbers() -> None:
    """compare-runs writes a non-finite metric as str(float): '-inf' was quoted ("'-inf", text to a
    CSV reader) while 'inf' and 'nan' stayed numbers; formulas are still quoted."""
    text = csv_text(["run", "val/loss", "a", "b", "c"], [["r1", "-inf", "-nan", "+inf", "-Infinity"]])
    row = list(csv.reader(io.StringIO(text)))[1]
    assert float(row[1]) == -math.inf and math.isnan(float(row[2]))
    assert float(row[3]) == math.inf and float(row[4]) == -math.inf
    assert safe_cell("-2.5e-3") == "-2.5e-3"
    for formula in ("=1+1", "-infx", "-nan()", "@SUM(A1)", "+x"):
        assert safe_cell(formula) == "'" + formula


def test_sweep_lock_on_a_file_system_without_flock(tmp_path, monkeypatch) -> None:
    """Lustre without -o flock (ENOSYS), some NFS/FUSE mounts (ENOLCK): the sweep was refused as 'in use
    by another vaitrain train -m' (wait for it / stop it: there was nothing to stop); only a lock held
    elsewhere (EWOULDBLOCK) says so, other errors say what failed, as the run directory's lock does."""
    held = sweep._lock(tmp_path)  # a real second holder: refused as in use
    with pytest.raises(RunDirError, match="in use by another"):
        sweep._lock(tmp_path)
    held.release()
    sweep._lock(tmp_path).release()  # free again

    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    result = cli(["train", "-m", *TINY, "optim.lr=0.05,0.1", f"out_dir={tmp_path / 'sweeps'}"])
    line = refused(result, r"cannot lock the sweep folder .*Function not implemented.*local disk")
    assert "in use" not in line


def test_eval_with_a_size_override_is_no_data_change(tmp_path) -> None:
    """`vaitrain eval RUN data.num_val=64` (a larger validation set on purpose) was noted as 'saved with
    32 val samples, the data holds 64 now (files added or removed since)'; the note stays for a
    split that changed without such an override."""
    from vaitrain.engine.checkpoint import data_size_note

    args = [a for a in TINY if not a.startswith(("trainer.epochs", "data.num_val"))]
    assert cli(["train", *args, "trainer.epochs=1", "data.num_val=32", f"out_dir={tmp_path}"]).exit_code == 0
    run = the_run(tmp_path)
    bigger = cli(["eval", str(run), "data.num_val=64"])
    assert bigger.exit_code == 0, bigger.output
    assert "was saved with" not in bigger.stderr, bigger.stderr

    state = {"data_info": {"num_val": 32}}
    data = type("Data", (), {"val": type("Split", (), {"n": 64})()})()
    note = data_size_note(run / "best.pt", state, data, ("val",))
    assert note and "32 val" in note and "64 val" in note
    assert data_size_note(run / "best.pt", state, data, ("val",), ["data.num_val=64"]) is None
    assert data_size_note(run / "best.pt", state, data, ("val",), ["optim.lr=0.1"]) == note
