"""Adversarial suite, files and data a user points vaitrain at (second pass): image folders laid out
the wrong way, 16-bit and odd-mode images, hidden and broken files, CSVs from spreadsheets, damaged
records of a run, weights files that lie, and predict outputs that cannot be written. Each case
asserts one line without a traceback and exit code 2, or the right result against a hand
computation where vaitrain accepts the input."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from adversarial import TINY, cli, refused, snapshot, the_run
from vaitrain.data import build_data
from vaitrain.data.images import load_image
from vaitrain.schema.data import DataConfig

RNG = np.random.default_rng(5)
FOLDER = ["data=image_folder", "data.image_size=16", "trainer.batch_size=4"]


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def rgb(h: int = 8, w: int = 8) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def tree(root: Path, splits=("train", "val"), classes=("cat", "dog"), n=3) -> Path:
    for split in splits:
        for c in classes:
            for i in range(n):
                png(root / split / c / f"{i}.png", rgb())
    return root


def build(name: str, root: Path, task: str, batch: int = 1, **kw):
    kw = {"image_size": 0, "num_train": 0, "num_val": 0, "normalize": "none", "num_workers": 0, **kw}
    cfg = OmegaConf.structured(DataConfig(name=name, root=str(root), **kw))
    return build_data(cfg, task, device="cpu", batch_size=batch, val_batch_size=1000, seed=0)


def train_refused(tmp_path: Path, args: list[str], pattern: str) -> str:
    """`vaitrain train` refused before any run directory exists."""
    out = tmp_path / "runs"
    line = refused(cli(["train", *TINY, *args, f"out_dir={out}"]), pattern)
    assert not out.exists() or not any(out.rglob("config.yaml"))
    return line


# ----- image folders ------------------------------------------------------------------------------

def test_split_folders_named_in_capitals_are_not_read_as_classes(tmp_path):
    root = tree(tmp_path / "data")
    os.rename(root / "train", root / "Train")
    os.rename(root / "val", root / "Val")
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  r"^error: \S+ has folders named like splits \(Train, Val\), which would be read as classes: name them "
                  r"train/, val/ and test/ \(lower case\)")


def test_train_folder_without_val_is_not_a_one_class_dataset(tmp_path):
    root = tree(tmp_path / "data", splits=("train",))
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: {root} has train/ but no val/ \(or test/\) beside it: add {root}/val/<class>/, or set "
                  rf"data.root={root}/train to split it by data.val_fraction")


def test_empty_training_class_folder_is_refused(tmp_path):
    root = tree(tmp_path / "data")
    (root / "train" / "empty").mkdir()
    (root / "train" / "empty" / "notes.txt").write_text("no images here")
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: class folder {root}/train/empty holds no images: add its images or remove the folder")


def test_val_class_unknown_to_train_names_the_training_folder(tmp_path):
    root = tree(tmp_path / "data")
    png(root / "val" / "cow" / "0.png", rgb())
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: {root}/val/cow is a class missing from the training folder {root}/train: rename or remove it")


def test_hidden_files_are_left_out_and_other_files_named(tmp_path):
    root = tree(tmp_path / "data")
    (root / "train" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork
    png(root / "train" / "cat" / ".ipynb_checkpoints" / "0-checkpoint.png", rgb())
    (root / "train" / "dog" / "IMG_1.heic").write_bytes(b"not decodable here")
    data = build("image_folder", root, "classification")
    assert data.train.num_samples == 6  # 3 + 3: no hidden file, no .heic
    assert len(data.notes) == 1 and "skipped 1 file(s)" in data.notes[0] and ".heic" in data.notes[0]


def test_broken_link_named_like_an_image_is_refused(tmp_path):
    root = tree(tmp_path / "data")
    os.symlink(tmp_path / "gone.png", root / "train" / "cat" / "9.png")
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: {root}/train/cat/9.png is a broken link or not a regular file: fix or remove it")


def test_link_loop_ends_and_linked_folders_are_read_once(tmp_path):
    root = tree(tmp_path / "data")
    os.symlink(root / "train" / "cat", root / "train" / "cat" / "loop")
    data = build("image_folder", root, "classification")
    assert data.train.num_samples == 6


def test_unlistable_folder_is_refused_not_skipped(tmp_path, monkeypatch):
    # (a chmod 000 folder cannot be simulated as root: os.scandir fails as it would for another user)
    root = tree(tmp_path / "data")
    real = os.scandir

    def scandir(path):
        if Path(path) == root / "train" / "dog":
            raise PermissionError(13, "Permission denied")
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: cannot list folder {root}/train/dog \(Permission denied\): fix its permissions")


def test_one_grayscale_image_first_does_not_turn_a_colour_dataset_gray(tmp_path):
    root = tree(tmp_path / "data")
    png(root / "train" / "cat" / "0.png", np.full((8, 8), 90, np.uint8))  # sorted first
    data = build("image_folder", root, "classification")
    assert data.in_channels == 3
    x, _ = next(iter(data.train))
    assert x.shape[1] == 3


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 255, 256, 1000, 30000, 65535]], np.uint16)
    path = png(tmp_path / "a16.png", values)
    assert Image.open(path).mode.startswith("I;16")
    got = load_image(path, "L", 0)[0, 0].tolist()
    assert got == [round(v / 257) for v in values[0].tolist()] == [0, 1, 1, 4, 117, 255]
    assert load_image(path, "RGB", 0)[:, 0].tolist() == [got] * 3


def test_32_bit_image_out_of_8_bit_range_is_refused(tmp_path):
    root = tree(tmp_path / "data")
    Image.fromarray(np.full((8, 8), 70000, np.int32)).save(root / "train" / "cat" / "1.tif")
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  rf"^error: image {root}/train/cat/1.tif is a 32-bit integer image with values 70000..70000: save it as "
                  r"an 8-bit \(0..255\) or 16-bit \(0..65535\) PNG")


# ----- CSV regression data ------------------------------------------------------------------------

def _csv(tmp_path: Path, text: str, encoding: str = "utf-8", n: int = 6) -> Path:
    for i in range(n):
        png(tmp_path / "img" / f"{i}.png", rgb())
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode(encoding))
    return path


ROWS = [(f"img/{i}.png", 0.5 * i, 10.0 - i) for i in range(6)]


@pytest.mark.parametrize("header, sep, newline", [
    ("\ufeffy,path,z", ",", "\n"),  # Excel's "CSV UTF-8" byte-order mark before a target's name
    ("y;path;z", ";", "\r\n"),  # semicolons (decimal-comma locales), Windows line ends
    ("y\tpath\tz", "\t", "\n"),
])
def test_spreadsheet_csv_variants_read_the_same_targets(tmp_path, header, sep, newline):
    text = header + newline + "".join(f"{y}{sep}{p}{sep}{z}{newline}" for p, y, z in ROWS)
    data = build("csv_regression", _csv(tmp_path, text), "regression", target_columns=["y", "z"],
                 standardize_targets=False, val_fraction=0.5)
    assert data.target_names == ["y", "z"]
    got = sorted(tuple(r) for _, y in (*data.train, *data.val) for r in y.tolist())
    assert got == sorted((y, z) for _, y, z in ROWS)


@pytest.mark.parametrize("text, pattern", [
    ("".join(f"{p},{y}\n" for p, y, _ in ROWS), r"data.csv has no header row \(its first line is data: img/0.png,0.0\): add one"),
    ("path,y,y\n" + "".join(f"{p},{y},{z}\n" for p, y, z in ROWS), r"data.csv has two columns named 'y'"),
    ("path,y\n" + "".join(f"{p},{y}\n" for p, y, _ in ROWS) + "img/1.png,2,3\n", r"data.csv:8 has 3 fields, the header has 2"),
    ("path,y\n" + "".join(f"{p},{y}\n" for p, y, _ in ROWS) + "img/1.png,1e300\n",
     r"data.csv:8: column 'y' value '1e300' is beyond float32's range"),
    ("path;y\n" + "".join(f"{p};{y}\n".replace(".", ",").replace(",png", ".png") for p, y, _ in ROWS),
     r"data.csv:2: column 'y' value '0,0' is not a number \(write decimals with a point\)"),
    ("path,y\n" + "".join(f"{p},{y}\n" for p, y, _ in ROWS) + ",4\n", r"data.csv:8: the path column 'path' is empty"),
    ("path,y\n" + "".join(f"{p},{y}\n" for p, y, _ in ROWS) + "img,4\n", r"data.csv:8: the path column 'path' names a folder"),
    ("path,y\nimg/\x00.png,1\n" + "".join(f"{p},{y}\n" for p, y, _ in ROWS), r"data.csv holds NUL bytes \(a binary file, not a CSV\)"),
], ids=["no_header", "duplicate_column", "extra_field", "float32_overflow", "decimal_comma", "empty_path", "folder_path",
        "nul_byte"])
def test_bad_csv_is_one_line(tmp_path, text, pattern):
    path = _csv(tmp_path, text)
    train_refused(tmp_path, ["task=regression", "data=csv_regression", f"data.root={path}", "trainer.batch_size=2"],
                  rf"^error: {tmp_path}/" + pattern)


def test_csv_that_is_not_utf8_says_how_to_fix_it(tmp_path):
    path = _csv(tmp_path, "path,y,température\n" + "".join(f"{p},{y},1\n" for p, y, _ in ROWS), encoding="latin-1")
    train_refused(tmp_path, ["task=regression", "data=csv_regression", f"data.root={path}"],
                  r"^error: cannot read CSV \S+: not UTF-8 text \(invalid continuation byte at byte 11\): save it as UTF-8$")


# ----- records of a run and predict outputs --------------------------------------------------------

@pytest.fixture(scope="module")
def completed(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("completed") / "runs"
    result = cli(["train", *TINY, "trainer.epochs=1", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    return the_run(out)


def test_damaged_metrics_lines_are_skipped_by_every_reader(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    good = (run / "metrics.jsonl").read_bytes()
    junk = b'\xff\xfe not utf-8\n[1, 2]\n"text"\n{"kind": "epoch", "epoch": "x", "step": 3}\n' + b"[" * 100_000 + b"\n"
    (run / "metrics.jsonl").write_bytes(junk + good)
    compared = cli(["compare-runs", run])
    assert compared.exit_code == 0 and "Traceback" not in compared.output, compared.output
    assert cli(["report", run, "--out", tmp_path / "r.html"]).exit_code == 0
    resumed = cli(["train", f"resume={run}", "trainer.epochs=2"])
    assert resumed.exit_code == 0, resumed.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records if r["kind"] != "train"] == ["epoch", "epoch", "final"]


@pytest.fixture
def photo(tmp_path) -> Path:
    return png(tmp_path / "photo.png", rgb(16, 16))


def test_predict_out_under_a_file_is_refused_before_any_work(completed, photo, tmp_path):
    (tmp_path / "afile").write_text("x")
    before = snapshot(tmp_path)
    refused(cli(["predict", completed, photo, "--out", tmp_path / "afile" / "sub" / "p.csv"]),
            rf"^error: --out {tmp_path}/afile/sub/p.csv: {tmp_path}/afile is a file, not a folder; choose another --out$")
    (tmp_path / "p.csv").mkdir()
    refused(cli(["predict", completed, photo, "--out", tmp_path / "p.csv"]),
            rf"^error: --out {tmp_path}/p.csv is a folder: give a file name such as preds.csv$")
    del before["afile"]  # unchanged, p.csv/ is the folder made above
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before


def test_predict_out_in_a_folder_without_write_access(completed, photo, tmp_path, monkeypatch):
    # root writes anywhere, so the access check itself is what a non-root user would meet
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real(p, mode, **kw))
    refused(cli(["predict", completed, photo, "--out", locked / "new" / "p.csv"]),
            rf"^error: --out {locked}/new/p.csv: no permission to write in {locked}; choose another --out$")
    assert not any(locked.iterdir())


def test_predict_write_failure_is_one_line(completed, photo, tmp_path, monkeypatch):
    import vaitrain.track.files as files

    def full(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files, "write_text_atomic", full)
    refused(cli(["predict", completed, photo, "--out", tmp_path / "p.csv"]),
            rf"^error: cannot write {tmp_path}/p.csv \(No space left on device\): choose another --out or free space")


def test_run_without_or_with_a_damaged_overrides_file(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    (run / "overrides.txt").write_bytes(b"\xff\xfe\x00 not text")
    before = snapshot(run)
    for args in (["eval", run], ["train", f"resume={run}", "trainer.epochs=2"]):
        refused(cli(args), rf"^error: cannot read {run}/overrides.txt \(.*\): it should hold the run's overrides, one per line")
    (run / "overrides.txt").unlink()
    del before["overrides.txt"]
    for args in (["eval", run], ["export", run, "--format", "torchscript", "--out", tmp_path / "m.pt"]):
        # (it was "does not fit this model: shape mismatch": the defaults' model, not the run's)
        refused(cli(args), rf"^error: {run}/overrides.txt is missing: the run's settings cannot be re-created without it")
    assert snapshot(run) == before and not (tmp_path / "m.pt").exists()


def test_checkpoint_of_a_newer_format_says_so(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    state = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    torch.save({**state, "format": 2}, run / "checkpoints" / "best.pt")
    refused(cli(["eval", run]), r"^error: '\S+best.pt' is a vaitrain checkpoint of format 2, this vaitrain reads "
                                r"format 1: upgrade vaitrain to read it$")


# ----- weights files ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def weights(completed) -> dict:
    return torch.load(completed / "checkpoints" / "best.pt", weights_only=True)["model"]


class _Code:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_pickle_weights_with_code_are_named_as_code(tmp_path):
    import pickle

    marker = tmp_path / "ran"
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps({"conv1.weight": _Code(marker)}))
    # (it was "truncated or corrupt, or not a torch file: Weights only load failed. In PyTorch 2.6 ...")
    train_refused(tmp_path, [f"model.weights={path}"],
                  rf"^error: weights file '{path}' \(a plain pickle, not torch's zip format\) refers to code "
                  r"\((posix|os)\.system\) and is refused")
    assert not marker.exists()


def _altered(weights: dict, key: str, value: torch.Tensor) -> dict:
    return {**weights, key: value}


@pytest.mark.parametrize("change, pattern", [
    # the stem may differ in its input channels only, the final layer in its classes only
    (lambda w: _altered(w, "conv1.weight", torch.zeros(0)), r"conv1.weight differ in shape \(e.g. conv1.weight: file \(0,\)"),
    (lambda w: _altered(w, "conv1.weight", torch.zeros(8, 3, 3, 3)), r"conv1.weight differ in shape"),
    (lambda w: _altered(w, "fc.weight", torch.zeros(6, 99)), r"fc.weight differ in shape"),
    (lambda w: _altered(w, "layer1.0.conv1.weight", torch.full_like(w["layer1.0.conv1.weight"], float("nan"))),
     r"layer1.0.conv1.weight holds NaN or inf values: the weights are damaged"),
    (lambda w: _altered(w, "conv1.weight", w["conv1.weight"].to(torch.int64)),
     r"conv1.weight is torch.int64 in the file but torch.float32 in the model"),
], ids=["stem_empty", "stem_wider", "final_other_features", "nan", "integer"])
def test_weights_that_only_look_like_the_model_are_refused(weights, tmp_path, change, pattern):
    path = tmp_path / "w.pth"
    torch.save(change(weights), path)
    train_refused(tmp_path, [f"model.weights={path}"], rf"^error: {path}( does not fit model ResNet)?: .*{pattern}")


def test_weights_with_a_new_final_layer_and_ddp_prefix_still_load(weights, tmp_path):
    """What stays allowed: 'module.' prefixes, fp16 tensors, another class count (a new final layer)."""
    path = tmp_path / "w.pth"
    changed = {f"module.{k}": (v.half() if v.is_floating_point() else v) for k, v in weights.items()}
    changed["module.fc.weight"], changed["module.fc.bias"] = torch.zeros(10, weights["fc.weight"].shape[1]), torch.zeros(10)
    torch.save(changed, path)
    out = tmp_path / "runs"
    result = cli(["train", *TINY, "trainer.epochs=1", f"model.weights={path}", f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    start = json.loads((the_run(out) / "start.json").read_text())
    assert start["new"] == ["fc.weight", "fc.bias"] and start["kept"] == len(weights) - 2, start


def test_init_from_a_plain_state_dict_points_to_model_weights(weights, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(weights, path)
    train_refused(tmp_path, [f"init_from={path}"],
                  rf"^error: '{path}' is not a vaitrain checkpoint \(format 1\); a plain state_dict .* is given as "
                  r"model.weights=FILE$")


# ----- segmentation masks -------------------------------------------------------------------------

def _seg(root: Path, values, n: int = 4) -> Path:
    for i in range(n):
        png(root / "images" / f"{i}.png", rgb())
        png(root / "masks" / f"{i}.png", np.resize(np.array(values, np.uint8), (8, 8)))
    return root


def test_masks_with_grey_levels_not_indices_are_refused(tmp_path):
    root = _seg(tmp_path / "data", (0, 128))  # a mask painted 0/128: it was 129 classes, 127 never seen
    train_refused(tmp_path, ["data=seg_folder", "task=segmentation", "model=unet", f"data.root={root}"],
                  rf"^error: the masks under {root} hold class ids 0, 128 but none of 1..127: masks must hold class "
                  r"indices 0..K-1 \(255 = ignore\); if those classes are only absent from these masks, set "
                  r"data.num_classes=129$")
    data = build("seg_folder", root, "segmentation", num_classes=129)  # said so: taken as it is
    assert data.num_classes == 129


def test_jpeg_mask_is_named_as_lossy(tmp_path):
    root = _seg(tmp_path / "data", (0, 1, 2))
    (root / "masks" / "2.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "2.jpg")
    train_refused(tmp_path, ["data=seg_folder", "task=segmentation", "model=unet", f"data.root={root}"],
                  rf"^error: no mask for image {root}/images/2.png: expected {root}/masks/2.png \(2.jpg is there, but "
                  r"masks must be lossless")


# ----- checkpoints whose fields are not what vaitrain writes ---------------------------------------

def _edit_checkpoints(run: Path, change) -> None:
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        change(state)
        torch.save(state, run / "checkpoints" / name)


def _first_param_state(state: dict) -> dict:
    return next(iter(state["optimizer"]["state"].values()))


@pytest.mark.parametrize("change, pattern", [
    (lambda s: s.update(model=[1, 2]), r"'model' is not a dict of tensors"),
    (lambda s: s["model"]["fc.bias"].fill_(float("nan")), r"the model's fc.bias holds NaN or inf"),
    (lambda s: s.update(epoch="x"), r"'epoch' is 'x', not a count"),
    (lambda s: s.update(data_stats={"mean": "x"}), r"'data_stats' is not a dict of tensors"),
    (lambda s: s["data_stats"].update(std=torch.zeros_like(s["data_stats"]["std"])), r"data_stats 'std' is not positive"),
    (lambda s: s["data_info"].update(num_classes="6"), r"data_info 'num_classes' is '6', not a count"),
    (lambda s: s.update(optimizer={"state": 5}), r"'optimizer' lacks torch's state and param_groups"),
], ids=["model", "nan_weight", "epoch", "data_stats", "zero_std", "data_info", "optimizer"])
def test_checkpoint_fields_of_the_wrong_type(completed, tmp_path, change, pattern):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    _edit_checkpoints(run, change)
    before = snapshot(run)
    commands = (["eval", run], ["predict", run, png(tmp_path / "p.png", rgb(16, 16))],
                ["train", f"resume={run}", "trainer.epochs=2"])
    for args in commands:  # (each was a TypeError, ValueError or KeyError traceback)
        refused(cli(args), rf"^error: checkpoint '\S+\.pt' is damaged or was not written by vaitrain: {pattern}")
    assert snapshot(run) == before


@pytest.mark.parametrize("change, pattern", [
    (lambda s: _first_param_state(s).update(momentum_buffer=torch.zeros(3)),
     r"the checkpoint's optimizer state 'momentum_buffer' has shape \(3,\) for a parameter of shape \(4, 3, 3, 3\)"),
    (lambda s: s["optimizer"].update(param_groups=[]), r"the checkpoint's optimizer or schedule state does not fit optim=SGD"),
    (lambda s: s["rng"].update(torch=torch.zeros(3, dtype=torch.uint8)), r"the checkpoint's random-number state is damaged"),
], ids=["momentum_shape", "param_groups", "rng"])
def test_resume_from_optimizer_or_rng_state_that_does_not_fit(completed, tmp_path, change, pattern):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    _edit_checkpoints(run, change)
    refused(cli(["train", f"resume={run}", "trainer.epochs=2"]), rf"^error: {pattern}")


def test_checkpoint_without_normalization_for_predict_and_export(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    _edit_checkpoints(run, lambda s: s.pop("data_stats"))
    for args in (["predict", run, png(tmp_path / "p.png", rgb(16, 16))],
                 ["export", run, "--format", "torchscript", "--out", tmp_path / "m.pt"]):
        refused(cli(args), r"^error: checkpoint '\S+best.pt' has no normalization statistics \(data_stats mean/std\)")
    assert not (tmp_path / "m.pt").exists()


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(9))


def test_config_with_yaml_aliases_is_refused_before_it_expands(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    (run / "config.yaml").write_text(BILLION_LAUGHS)  # 9^10 values if expanded
    refused(cli(["compare-runs", run]), r"'\S+config.yaml' uses YAML aliases \(\*name\), which vaitrain never writes: "
                                        r"refused")
    refused(cli(["report", run, "--out", tmp_path / "r.html"]), r"uses YAML aliases")
    _edit_checkpoints(run, lambda s: s.update(config_yaml=BILLION_LAUGHS))
    refused(cli(["train", f"resume={run}", "trainer.epochs=2"]),
            r"^error: 'the config in \S+'s checkpoint' uses YAML aliases")


def test_image_names_with_dots_pair_with_their_own_masks(tmp_path):
    """'cat.1.png' and 'cat.2.png' both looked for masks/cat.png (Path.with_suffix replaced '.1'): with
    a cat.png mask there, two images got another image's labels."""
    root = tmp_path / "data"
    expected = {}
    for i, name in enumerate(["cat.1", "cat.2", "cat", "dog"]):
        png(root / "images" / f"{name}.png", rgb())
        mask = np.full((8, 8), i % 3, np.uint8)
        png(root / "masks" / f"{name}{'.PNG' if name == 'dog' else '.png'}", mask)  # upper-case extension too
        expected[name] = i % 3
    data = build("seg_folder", root, "segmentation", val_fraction=0.25)
    ys = [int(y.unique()) for _, y in data.val] + [int(y[y != 255].unique()) for _, y in data.train]
    assert sorted(ys) == sorted(expected.values()) == [0, 0, 1, 2]
    from vaitrain.data.folders import _pairs

    assert {i.stem: m.name for i, m in _pairs(root)} == {"cat.1": "cat.1.png", "cat.2": "cat.2.png", "cat": "cat.png",
                                                        "dog": "dog.PNG"}


def test_segmentation_masks_never_replace_the_input_images(tmp_path):
    out = tmp_path / "runs"
    seg = ["task=segmentation", "model=unet", "model.base_width=4", "model.depth=2", "data.image_size=16",
           "data.num_train=16", "data.num_val=8", "trainer.batch_size=8", "trainer.epochs=1", "trainer.progress=none",
           "trainer.threads=1", "trainer.device=cpu", "trainer.image_every=0", f"out_dir={out}"]
    assert cli(["train", *seg]).exit_code == 0
    photos = tmp_path / "photos"
    png(photos / "a.jpg", rgb(16, 16))
    cat = png(photos / "cat.png", rgb(16, 16))
    before = snapshot(photos)
    # a.jpg's mask would be photos/a.png (new), cat.png's would be photos/cat.png: the input itself
    refused(cli(["predict", the_run(out), photos, "--out", photos]),
            rf"^error: --out {photos}: the mask cat.png would replace the input {cat}; choose another --out folder$")
    assert snapshot(photos) == before


# ----- outputs that would replace a run's own files or a device -----------------------------------

def test_outputs_never_replace_a_runs_own_files(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    before = snapshot(run)
    photo = png(tmp_path / "p.png", rgb(16, 16))
    cases = [  # each of these used to overwrite the file named (export's best.pt, the plot's config.yaml)
        (["export", run, "--format", "torchscript", "--out", run / "checkpoints" / "best.pt"], "checkpoints/best.pt"),
        (["export", run, "--format", "torchscript", "--out", run / "env"], "env.json"),  # its FILE.json description
        (["compare-runs", run, "--plot", run / "config.yaml"], "config.yaml"),
        (["predict", run, photo, "--out", run / "start.json"], "start.json"),
    ]
    for args, name in cases:
        refused(cli(args), rf"^error: --\w+ {run}/\S+ would replace {name} of the run {run}: choose a path outside")
    assert snapshot(run) == before
    made = cli(["export", run, "--format", "torchscript", "--out", run / "model.pt"])  # a new file beside them: fine
    assert made.exit_code == 0 and (run / "model.pt").is_file(), made.output


def test_output_that_is_a_pipe_is_not_replaced(completed, tmp_path):
    # (`export --out /dev/full` as root replaced the device node with a regular file; a FIFO shows
    # the same without touching the machine)
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    refused(cli(["export", completed, "--format", "torchscript", "--out", fifo]),
            rf"^error: --out {fifo} is a device, pipe or socket, not a file: give a file path$")
    assert fifo.is_fifo() and not (tmp_path / "model.pt.json").exists()


@pytest.mark.parametrize("data, root, pattern", [
    ("image_folder", "", r"data.root is empty: point data.root at a folder"),  # it scanned the working folder
    ("image_folder", "FILE", r"data.root=\S+ is not a folder: point data.root at a folder"),
    ("csv_regression", "/dev/null", r"data.root=/dev/null is not a folder or a regular file"),  # /dev/zero: read forever
], ids=["empty", "file", "device"])
def test_data_root_of_the_wrong_kind(tmp_path, data, root, pattern):
    if root == "FILE":
        root = str(tmp_path / "x.png")
        Path(root).write_bytes(b"x")
    task = ["task=regression"] if data == "csv_regression" else []
    train_refused(tmp_path, [*task, f"data={data}", f"data.root={root}"], rf"^error: {pattern}")


def _deflated(src: Path, dst: Path) -> Path:
    """src's zip archive rewritten with its tensor data deflated: torch's reader inflates it, so
    zeros compress ~1000x (a few KB on disk, GBs in memory at a larger scale)."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for entry in zin.infolist():
            packed = zipfile.ZIP_DEFLATED if "/data/" in entry.filename else zipfile.ZIP_STORED
            zout.writestr(entry, zin.read(entry.filename), compress_type=packed)
    return dst


def test_compressed_torch_archive_is_refused_before_it_inflates(completed, weights, tmp_path):
    plain = tmp_path / "w.pth"
    torch.save({k: torch.zeros_like(v) for k, v in weights.items()}, plain)
    bomb = _deflated(plain, tmp_path / "bomb.pth")
    assert torch.load(bomb, weights_only=True).keys() == weights.keys()  # torch itself would inflate it
    train_refused(tmp_path, [f"model.weights={bomb}"],
                  rf"^error: weights file '{bomb}' has a compressed entry \(\S+/data/\d+\), which torch.save never writes")
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    _deflated(completed / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    refused(cli(["eval", run]), r"^error: checkpoint '\S+best.pt' has a compressed entry")
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.pth", "w") as z:
        z.writestr("hello.txt", "not torch")
    train_refused(tmp_path, [f"model.weights={tmp_path / 'other.pth'}"],
                  r"^error: weights file '\S+other.pth' is a zip archive but not a torch file \(no data.pkl in it\)$")


def test_files_from_other_systems(tmp_path, completed):
    """A macOS zip's __MACOSX/ is not a class; a CSV written on Windows (img\\0.png) finds its images;
    a checkpoint from before format numbers says so."""
    root = tree(tmp_path / "data", splits=("",))
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    assert build("image_folder", root, "classification").class_names == ["cat", "dog"]
    text = "path,y\n" + "".join(f"{p.replace('/', chr(92))},{y}\n" for p, y, _ in ROWS)
    data = build("csv_regression", _csv(tmp_path / "csv", text), "regression", standardize_targets=False,
                 val_fraction=0.5)
    assert sorted(float(y) for _, ys in (*data.train, *data.val) for y in ys) == sorted(y for _, y, _ in ROWS)
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    _edit_checkpoints(run, lambda s: s.pop("format"))
    refused(cli(["eval", run]), r"^error: '\S+best.pt' is a checkpoint without a format number \(an older vaitrain")


@pytest.fixture
def deep_folder():
    """make(top) -> a folder 1100 levels below top (deeper than Python's recursion limit; made level by
    level, as mkdir(parents=True) recurses), removed level by level afterwards (shutil.rmtree, and so
    pytest's clean-up of old temp folders, recurses too)."""
    made: list[Path] = []

    def make(top: Path) -> Path:
        deep = top
        for _ in range(1100):
            deep = deep / "d"
            deep.mkdir()
        made.append(top)
        return deep

    yield make
    for top in made:
        levels = [top / "d"]
        while (levels[-1] / "d").is_dir():
            levels.append(levels[-1] / "d")
        for level in reversed(levels):
            for child in level.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            level.rmdir()


def test_compare_runs_below_a_very_deep_folder(completed, tmp_path, deep_folder):
    deep = deep_folder(tmp_path)
    shutil.copytree(completed, deep / "run")
    shutil.copytree(completed, tmp_path / "a-run")
    result = cli(["compare-runs", tmp_path, "--format", "csv"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output[-500:]
    assert len(result.stdout.strip().splitlines()) == 3  # the header and both runs


def test_predict_on_a_folder_skips_hidden_files_names_broken_links_and_goes_deep(completed, tmp_path, deep_folder):
    photos = tmp_path / "photos"
    png(photos / "a.png", rgb(16, 16))
    (photos / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork: not a photo, left out
    os.symlink(tmp_path / "gone.png", photos / "b.png")
    deep = deep_folder(photos)  # rglob recursed once per level (RecursionError past ~1000)
    png(deep / "c.png", rgb(16, 16))
    result = cli(["predict", completed, photos, "--out", tmp_path / "p.csv"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output[-400:]
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[1].startswith(str(photos / "a.png")) and rows[2].startswith(str(deep / "c.png"))
    assert "2 of 3 files predicted, 1 skipped" in result.stderr and f"{photos / 'b.png'}" in result.stderr


def test_image_modes_convert_or_are_named(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent: composited on white, not kept as the hidden red
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png", "RGB", 0).unique().tolist() == [255]
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    cmyk.save(tmp_path / "c.jpg", quality=100)
    r, g, b = load_image(tmp_path / "c.jpg", "RGB", 0).float().mean((1, 2)).tolist()
    assert r > 240 and g < 15 and b < 15
    Image.new("LAB", (4, 4)).save(tmp_path / "lab.tif")
    from vaitrain.errors import DataError

    with pytest.raises(DataError, match=r"lab.tif is in mode LAB, which cannot be converted to L .*: save it as an RGB"):
        load_image(tmp_path / "lab.tif", "L", 0)  # (a ValueError traceback before)


def test_eval_and_resume_refuse_data_whose_classes_changed(tmp_path):
    root = tree(tmp_path / "data", n=4)
    out = tmp_path / "runs"
    args = [*TINY, "trainer.epochs=2", "trainer.stop_after=1", *FOLDER, f"data.root={root}", f"out_dir={out}"]
    assert cli(["train", *args]).exit_code == 0
    run = the_run(out)
    assert cli(["eval", run]).exit_code == 0
    os.rename(root / "train" / "cat", root / "train" / "ant")  # same count, every label shifted: ant=0, cat gone
    os.rename(root / "val" / "cat", root / "val" / "ant")
    before = snapshot(run)
    for args in (["eval", run], ["train", f"resume={run}"]):
        refused(cli(args), r"^error: the data's classes differ from those '\S+' was trained with \(2 then, 2 now; "
                           r"class 0 was 'cat', now 'ant'\): the labels would not mean what the model learnt")
    assert snapshot(run) == before


def test_weights_given_as_a_folder(tmp_path):
    train_refused(tmp_path, [f"model.weights={tmp_path}"],
                  rf"^error: model.weights={tmp_path} is a folder: give the state_dict file in it")


@pytest.mark.parametrize("job, pattern", [
    ({"run_dir": "../outside"}, r"job 0's run_dir \.\./outside is outside the sweep folder"),
    ({"run_dir": 5}, r"job 0 is not as vaitrain writes it"),
    ({"overrides": "optim=adam"}, r"job 0 is not as vaitrain writes it"),
], ids=["run_dir_outside", "run_dir_number", "overrides_text"])
def test_sweep_file_pointing_outside_its_folder(completed, tmp_path, job, pattern):
    outside = Path(shutil.copytree(completed, tmp_path / "outside"))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    entry = {"index": 0, "overrides": [*TINY, "trainer.epochs=3"], "status": "stopped", "run_dir": None, **job}
    (sweep / "sweep.json").write_text(json.dumps({"overrides": [], "started": "", "jobs": [entry]}))
    before = snapshot(outside)
    # (the first resumed, and so wrote into, a run outside the sweep; the others were TypeErrors)
    refused(cli(["train", "-m", f"resume={sweep}"]), rf"^error: cannot read {sweep}/sweep.json \({pattern}\)")
    assert snapshot(outside) == before


def test_control_characters_from_files_never_reach_the_terminal(completed, tmp_path):
    root = tree(tmp_path / "data")
    png(root / "train" / "new\nline" / "0.png", rgb())
    train_refused(tmp_path, [*FOLDER, f"data.root={root}"],
                  r"^error: class folder '\S+/train/new\\nline' has a control character in its name: rename it$")
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    text = (run / "config.yaml").read_text().replace("name: resnet20", 'name: "resnet20\\e]0;pwned\\a\\e[2J"', 1)
    (run / "config.yaml").write_text(text)  # a title-setting and a screen-clearing terminal escape
    result = cli(["compare-runs", completed, run, "--wide"])
    assert result.exit_code == 0 and "\x1b" not in result.output and "\x07" not in result.output, result.output
    assert "resnet20\\x1b]0;pwned" in result.output


def test_predict_names_a_skipped_file_with_escapes_escaped(completed, tmp_path):
    good = png(tmp_path / "a.png", rgb(16, 16))
    odd = tmp_path / "b\x1b[2J.png"
    odd.write_bytes(b"not an image")
    result = cli(["predict", completed, good, odd, "--out", tmp_path / "p.csv"])
    assert result.exit_code == 0 and "\x1b" not in result.stderr, result.stderr
    assert "b\\x1b[2J.png" in result.stderr and "1 skipped" in result.stderr


@pytest.mark.parametrize("content", [b"[1, 2]", b"\xff\xfe", b"[" * 100_000], ids=["list", "binary", "deep"])
def test_lab_folder_with_a_damaged_lab_json(tmp_path, content):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab.json").write_bytes(content)
    refused(cli(["lab", "init", "--resume", lab, "--size", "tiny"]),
            rf"^error: cannot read {lab}/lab.json \(.*\); is '{lab}' a lab folder\?$")


def test_deeply_nested_json_in_run_files(completed, tmp_path):
    run = Path(shutil.copytree(completed, tmp_path / "run"))
    (run / "graphs.json").write_bytes(b"[" * 100_000)  # json.loads recursion: RecursionError
    result = cli(["report", run, "--out", tmp_path / "r.html"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output[-300:]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_bytes(b"{\"jobs\": " + b"[" * 100_000)
    refused(cli(["train", "-m", f"resume={sweep}"]), rf"^error: cannot read {sweep}/sweep.json \(")


def test_unreadable_records_and_checkpoints(completed, tmp_path, monkeypatch):
    # (chmod 000 does not stop root: the error a non-root user meets is raised where the file opens)
    import builtins

    run = Path(shutil.copytree(completed, tmp_path / "run"))
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if str(file).endswith("metrics.jsonl") and str(file).startswith(str(run)):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    refused(cli(["compare-runs", run]), rf"cannot read {run}/metrics.jsonl \(Permission denied\): fix its permissions")
    monkeypatch.setattr(builtins, "open", real_open)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    # (it said "truncated or corrupt")
    refused(cli(["eval", run]), rf"^error: cannot read checkpoint '{run}/checkpoints/best.pt' \(Permission denied\): "
                                r"fix its permissions$")


def test_a_class_named_train_among_others_is_a_class(tmp_path):
    root = tree(tmp_path / "data", splits=("",), classes=("bus", "train"), n=3)  # VOC has a 'train' class
    assert build("image_folder", root, "classification").class_names == ["bus", "train"]
