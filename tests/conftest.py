import os

import pytest
import torch

# Tests share 2 cores with each other's processes; keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def runs_dir(tmp_path):
    """A fresh out_dir for runs written by a test."""
    d = tmp_path / "runs"
    return d


@pytest.fixture
def one_thread():
    """For tests of tiny tensors: intra-op threads only add synchronisation (costly on a busy CPU)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
