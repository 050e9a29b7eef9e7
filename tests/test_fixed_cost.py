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
