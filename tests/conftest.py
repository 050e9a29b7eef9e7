import os

import pytest
import torch

# Tests share 2 cores with each other's processes; keep torch from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def compose_cache(tmp_path_factory):
    """Composed group selections (vaitrain/config_cache.py) go to this session's own folder, not
    the user's ~/.cache (subprocesses inherit it)."""
    before = os.environ.get("VAITRAIN_CACHE_DIR")
    os.environ["VAITRAIN_CACHE_DIR"] = str(tmp_path_factory.mktemp("vaitrain-cache"))
    yield
    if before is None:
        os.environ.pop("VAITRAIN_CACHE_DIR", None)
    else:
        os.environ["VAITRAIN_CACHE_DIR"] = before


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
