"""TensorBoard writing: scalars, images, histograms, hparams, text, under <run>/tb."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import torch


class TBWriter:
    """A thin SummaryWriter wrapper. On resume, `purge_step` drops events at or after the
    checkpoint's step that a killed run wrote, so curves do not fork."""

    def __init__(self, log_dir: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.w = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.w.add_scalar(tag, float(value), step)

    def image(self, tag: str, img: torch.Tensor, step: int, dataformats: str = "CHW") -> None:
        self.add_image(tag, img, step, dataformats=dataformats)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:
        """SummaryWriter.add_image's image, pixel for pixel (the same float-to-byte conversion), as a
        PNG compressed at zlib level 1: PIL's default level 6 cost each epoch's sample grid ~8 ms
        more CPU for a file about as large (a test compares the decoded pixels with torch's)."""
        import io

        import numpy as np
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary
        from torch.utils.tensorboard._utils import convert_to_HWC
        from torch.utils.tensorboard.summary import _calc_scale_factor, make_np

        array = convert_to_HWC(make_np(img_tensor), dataformats)
        scale = _calc_scale_factor(array)
        array = (array.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
        height, width, channels = array.shape
        png = io.BytesIO()
        Image.fromarray(array).save(png, format="PNG", compress_level=1)
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=png.getvalue())
        self.w._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                              global_step, walltime)

    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.w.add_histogram(tag, values.detach().float().cpu(), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.w.add_text(tag, text, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float],
                domains: Mapping[str, Any] | None = None, first: Iterable[str] = ()) -> None:
        """Hyper-parameters for the HParams dashboard, in the run's own folder, with their types
        (torch's add_hparams turns booleans into 1.0). The metric columns name the run's own scalar
        tags (val/acc1, ...), whose last values HParams shows: no extra one-point `hparam/*` cards.
        `domains`: key -> a list of the allowed values or a (min, max) range; the type HParams
        shows comes from it (booleans, numbers and listed strings get one by default). `first`: the
        keys to show before the others (HParams' table shows 5 columns at first, ordered by whether
        a key differs between runs, then by name; a run's own config cannot say what differs)."""
        from tensorboard.plugins.hparams import plugin_data_pb2
        from tensorboard.plugins.hparams import summary_v2 as hp

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        domains = dict(domains or {})

        def domain(key: str, value: Any) -> Any:
            given = domains.get(key)
            if isinstance(value, bool):
                return hp.Discrete([False, True])
            if isinstance(value, (int, float)):
                lo, hi = given if isinstance(given, tuple) else (None, None)
                return hp.RealInterval(float(-1e300 if lo is None else lo), float(1e300 if hi is None else hi))
            if isinstance(given, (list, tuple)) and value in given:
                return hp.Discrete(list(given))
            return None

        config = hp.hparams_config_pb(hparams=[hp.HParam(k, domain(k, v)) for k, v in clean.items()],
                                      metrics=[hp.Metric(tag) for tag in metrics])
        first = set(first)
        if first:  # marked as differing, which HParams sorts (and shows) first
            content = config.value[0].metadata.plugin_data
            data = plugin_data_pb2.HParamsPluginData.FromString(content.content)
            for info in data.experiment.hparam_infos:
                info.differs = info.name in first
            content.content = data.SerializeToString()
        writer = self.w._get_file_writer()
        writer.add_summary(config)
        writer.add_summary(hp.hparams_pb(clean, trial_id=self.log_dir.parent.name))

    def __getattr__(self, name: str) -> Any:
        # Anything else (add_figure, add_images, ...) goes straight to the SummaryWriter.
        return getattr(self.w, name)

    def close(self) -> None:
        self.w.close()
