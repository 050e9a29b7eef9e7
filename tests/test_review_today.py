"""Review of the day's checks: legitimate input that a new check refused or rewrote."""
from __future__ import annotations

import csv
import errno
import io
import math

import pytest

from tests.adversarial import TINY, cli, refused
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
