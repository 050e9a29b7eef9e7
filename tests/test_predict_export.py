"""vaitrain predict and export (issue 10) on tiny trained runs: predictions equal a hand forward of
the same model with the same preprocessing; mask PNGs have the inputs' sizes; MDN weights sum to 1;
exported TorchScript and ONNX files match PyTorch within 1e-4 (ResNet-20, U-Net, an MDN head)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.config import compose
from vaitrain.engine import prepare, train
from vaitrain.export import export_run
from vaitrain.models import build_model
from vaitrain.predict import predict

COMMON = ["data.image_size=16", "data.num_train=128", "data.num_val=32", "trainer.batch_size=32",
          "trainer.progress=none", "trainer.threads=1", "trainer.epochs=1"]
RUNS = {
    "cls": ["model.width_mult=0.25"],
    "seg": ["task=segmentation", "model=unet", "model.base_width=4", "model.depth=2"],
    "mdn": ["task=regression", "task.head=mdn", "task.components=3", "model.width_mult=0.25"],
}
RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs")
    made = {}
    for key, overrides in RUNS.items():
        cfg, ov = prepare([*COMMON, *overrides, f"out_dir={out}", f"name={key}"])
        made[key] = train(cfg, ov).run_dir
    return made


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Files as users have them: non-square RGB, RGBA with transparency, grayscale, palette."""
    d = tmp_path_factory.mktemp("photos")
    sizes = {"wide.png": (40, 30), "tall.jpg": (24, 36), "alpha.png": (30, 20), "gray.png": (22, 22), "pal.png": (18, 26)}
    for name, (w, h) in sizes.items():
        rgb = RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(rgb)
        if name == "alpha.png":
            a = RNG.integers(0, 256, (h, w), dtype=np.uint8)
            im = Image.fromarray(np.dstack([rgb, a]), "RGBA")
        elif name == "gray.png":
            im = im.convert("L")
        elif name == "pal.png":
            im = im.convert("P")
        im.save(d / name, quality=95)
    (d / "notes.txt").write_text("not an image")  # not an image extension: folders skip it
    return d, sizes


def _hand_model(run: Path):
    state = torch.load(run / "checkpoints/best.pt", weights_only=True)
    cfg = compose([l for l in (run / "overrides.txt").read_text().split() if l])
    return state, cfg


def _hand_input(path: Path, size: int, stats) -> torch.Tensor:
    """The run's preprocessing written out by hand: composite transparency on white, RGB, the centre
    square of the short side resized bilinearly, (x/255 - mean) / std."""
    im = Image.open(path)
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    im = im.convert("RGB")
    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    # PIL's resize of a region (its filter reads the pixels around the region too, as vaitrain's does)
    im = im.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255
    return (x - stats["mean"][:, None, None]) / stats["std"][:, None, None]


def test_classification_probabilities_equal_a_hand_forward(runs, photos, tmp_path, one_thread):
    folder, sizes = photos
    out = tmp_path / "preds.json"
    result = predict(runs["cls"], [str(folder)], out=out, topk=3, batch_size=2)
    assert len(result.rows) == len(sizes) and not result.errors
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())}
    state, cfg = _hand_model(runs["cls"])
    net = build_model(cfg.model, cfg.norm, in_channels=3, num_outputs=6, image_size=16)
    net.load_state_dict(state["model"])
    net.eval()
    names = state["data_info"]["class_names"]
    # files whose centre square has integer corners (even margins): the hand crop is exact
    for name in ("wide.png", "tall.jpg", "alpha.png", "gray.png", "pal.png"):
        w, h = sizes[name]
        if (max(w, h) - min(w, h)) % 2:
            continue
        with torch.no_grad():
            prob = net(_hand_input(folder / name, 16, state["data_stats"])[None]).softmax(1)[0]
        top = prob.topk(3)
        got = rows[name]["top"]
        assert [t["class"] for t in got] == [names[int(i)] for i in top.indices], name
        assert np.allclose([t["prob"] for t in got], top.values.numpy(), atol=1e-5), name


def test_segmentation_masks_have_each_input_size(runs, photos, tmp_path, one_thread):
    folder, sizes = photos
    out = tmp_path / "masks"
    result = CliRunner().invoke(app, ["predict", str(runs["seg"]), str(folder / "*.png"), str(folder / "tall.jpg"),
                                      "--out", str(out), "--overlay"])
    assert result.exit_code == 0, result.output
    for name, (w, h) in sizes.items():
        stem = Path(name).stem
        mask = Image.open(out / f"{stem}.png")
        assert mask.size == (w, h) and mask.mode == "L"
        assert Image.open(out / f"{stem}.overlay.png").size == (w, h)
        assert np.asarray(mask).max() < 7  # class indices (background + 6 shapes)
    index = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(index) == len(sizes) and {"path", "mask", "overlay", "height", "width"} <= set(index[0])


def test_mdn_predictions_in_target_units(runs, photos, tmp_path, one_thread):
    folder, sizes = photos
    out = tmp_path / "reg.csv"
    result = predict(runs["mdn"], [str(folder / "wide.png"), str(folder / "gray.png")], out=out)
    state, _ = _hand_model(runs["mdn"])
    names = state["data_info"]["target_names"]
    for row in result.rows:
        comps = row["components"]
        assert len(comps) == 3 and abs(sum(c["weight"] for c in comps) - 1) < 1e-5
        best = max(comps, key=lambda c: c["weight"])
        assert row["values"] == best["mean"] and all(s > 0 for c in comps for s in c["sigma"].values())
    table = list(csv.DictReader(out.open()))
    assert set(names) <= set(table[0]) and "weight1" in table[0] and f"{names[0]}_sigma3" in table[0]


def test_predict_bad_inputs(runs, photos, tmp_path):
    folder, _ = photos
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    runner = CliRunner()
    some = runner.invoke(app, ["predict", str(runs["cls"]), str(bad), str(folder / "wide.png")])
    assert some.exit_code == 0 and f"skipped {bad}" in some.stderr and "1 of 2 files predicted" in some.stderr
    assert some.stdout.count("\n") == 2  # header + one row
    out = tmp_path / "none.csv"
    none = runner.invoke(app, ["predict", str(runs["cls"]), str(bad), "--out", str(out)])
    assert none.exit_code == 2 and not out.exists() and "nothing written" in none.stderr
    for args, words in (([str(tmp_path / "absent.png")], "does not exist"), ([str(tmp_path / "empty")], "no image files"),
                        ([str(folder / "wide.png"), "--out", str(tmp_path / "p.txt")], ".csv or .json")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        r = runner.invoke(app, ["predict", str(runs["cls"]), *args])
        assert r.exit_code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output


def test_predict_options_that_do_not_fit_the_run(runs, photos, tmp_path):
    """An option the run's task has no use for is refused before any work; --topk above the class
    count says what each row holds; a file named twice is predicted once."""
    folder, sizes = photos
    runner = CliRunner()
    for run, args, words in ((runs["cls"], ["--overlay"], "is a classification run: drop --overlay"),
                             (runs["mdn"], ["--topk", "2"], "is a regression run: drop --topk")):
        out = tmp_path / "x.csv"
        r = runner.invoke(app, ["predict", str(run), str(folder / "wide.png"), "--out", str(out), *args])
        assert r.exit_code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
        assert not out.exists()
    r = runner.invoke(app, ["predict", str(runs["cls"]), str(folder), str(folder / "wide.png"), f"{folder}/*.png",
                            "--topk", "9"])
    assert r.exit_code == 0, r.output
    assert "--topk 9: the model knows 6 classes, so each row lists 6" in r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert sorted(Path(row["path"]).name for row in rows) == sorted(sizes)  # each file once
    assert f"{len(sizes)} of {len(sizes)} files predicted" in r.stderr


@pytest.mark.parametrize("where", ["GPU", "CPU"])
def test_out_of_memory_in_predict_and_eval_is_one_line(runs, photos, monkeypatch, where):
    """An allocation failure outside training (predict, eval) names the resource and the setting."""
    import vaitrain.engine
    import vaitrain.predict

    def oom(*_a, **_k):
        if where == "GPU":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(vaitrain.predict, "predict", oom)
    monkeypatch.setattr(vaitrain.engine, "evaluate_run", oom)
    folder, _ = photos
    for args in (["predict", str(runs["cls"]), str(folder / "wide.png")], ["eval", str(runs["cls"])]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith(f"error: out of {where} memory in `{args[0]}`") and "batch size" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.output


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(runs, tmp_path, fmt, one_thread):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the export extra (pip install 'vaitrain[export]') is not installed")
    for key, run in runs.items():
        out = tmp_path / f"{key}.{fmt}"
        r = export_run(run, fmt, out, include_normalization=key != "mdn")
        assert r.checked_with == ("torch" if fmt == "torchscript" else "onnxruntime")
        assert r.max_abs_diff < 1e-4, (key, r.max_abs_diff)
        doc = json.loads(r.sidecar.read_text())
        assert doc["input"]["shape"] == ["batch", 3, 16, 16] and doc["normalization_included"] == (key != "mdn")


def test_export_refusals_write_nothing(runs, tmp_path, monkeypatch):
    out = tmp_path / "m.pt"
    with pytest.raises(Exception) as err:  # a file that does not match PyTorch is not kept
        export_run(runs["cls"], "torchscript", out, tolerance=-1.0)
    assert "over the tolerance" in str(err.value) and not out.exists()
    import torch.jit

    def cannot(*a, **k):
        raise RuntimeError("Tracer cannot infer type of output\nsecond line")

    monkeypatch.setattr(torch.jit, "trace", cannot)
    r = CliRunner().invoke(app, ["export", str(runs["cls"]), "--format", "torchscript", "--out", str(out)])
    assert r.exit_code == 2 and "cannot be exported to TorchScript" in r.stderr and not out.exists()
    assert len(r.stderr.strip().splitlines()) == 1 and not list(tmp_path.glob(".m.pt*"))
    r = CliRunner().invoke(app, ["export", str(runs["cls"]), "--format", "tflite", "--out", str(out)])
    assert r.exit_code == 2 and "onnx, torchscript" in r.stderr


def test_a_model_torch_cannot_trace_says_why(tmp_path, one_thread):
    """U-Net with max-unpooling: torch.jit.trace refuses MaxUnpool2d's index check (torch 2.14)."""
    cfg, ov = prepare([*COMMON, *RUNS["seg"], "model.up=maxunpool", f"out_dir={tmp_path}"])
    run = train(cfg, ov).run_dir
    out = tmp_path / "unet.pt"
    try:
        r = export_run(run, "torchscript", out)
    except Exception as err:
        assert "cannot be exported to TorchScript" in str(err) and "try --format onnx" in str(err)
        assert "\n" not in str(err) and not out.exists() and not list(tmp_path.glob(".unet.pt*"))
    else:  # a torch whose tracer handles it: then the file must match
        assert r.max_abs_diff < 1e-4
