"""What a model carries beyond its weights and is worth keeping with the run (RandWire's graphs)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from vaitrain.track.files import write_text_atomic


def save_model_artifacts(model: nn.Module, run_dir: Path, tb: Any) -> None:
    """Models with random graphs (attribute `graphs`: one edge list per stage) get graphs.json in
    the run directory and a drawing in TensorBoard."""
    # optimizers (Alrao) may wrap the built network: look through the module tree
    net = next((m for m in model.modules() if getattr(m, "graphs", None)), None)
    if net is None:
        return
    graphs = net.graphs
    edges = [[list(map(int, e)) for e in stage] for stage in graphs]
    write_text_atomic(Path(run_dir) / "graphs.json", json.dumps({"stages": edges}) + "\n")
    try:
        from vaitrain.models.randwire import draw_graphs

        image = draw_graphs(net)
    except Exception:  # drawing needs matplotlib (an optional extra); the edge lists are saved
        return
    tb.image("wiring/graphs", image, 0, dataformats="HWC")
