import os

import pytest

# Tests share 2 cores with each other's processes; keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def runs_dir(tmp_path):
    """A fresh out_dir for runs written by a test."""
    d = tmp_path / "runs"
    return d
