"""A new user's first hour with their own small folders (README "Your own images and weights"):
what each message tells them to do must be something that works for their data."""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

import vaitrain.schema
from vaitrain.cli import app
from vaitrain.options import _field_docs

COLOURS = {"blue": (30, 40, 200), "green": (30, 180, 40), "red": (200, 30, 30)}


def _photos(root: Path, per_class: int) -> Path:
    """One tree of <class>/ folders (no train/, val/): photos of a dominant colour."""
    rng = np.random.default_rng(0)
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.integers(-30, 30, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


def _common(tmp_path: Path, root: Path) -> list[str]:
    return ["model=plain_cnn", "data=image_folder", f"data.root={root}", "trainer.epochs=1",
            "trainer.progress=none", "trainer.threads=1", f"out_dir={tmp_path / 'runs'}"]


def test_default_batch_above_a_small_folder_names_a_batch_size_that_fits(tmp_path):
    """The default batch (128) on a 30-image folder: the fix offered is a number that works, not
    'raise data.num_train' (a cap that cannot add images to a folder)."""
    root = _photos(tmp_path / "photos", per_class=10)
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_common(tmp_path, root)])
    assert r.exit_code == 2, r.output
    m = re.search(r"\((\d+) samples\): lower it, e.g. trainer.batch_size=(\d+)$", r.stderr.strip())
    assert m, r.stderr
    n_train, fits = int(m.group(1)), int(m.group(2))
    assert n_train == 27  # 30 images, val_fraction 0.1 carves 3
    assert fits == 8  # the largest power of two up to half the split: at least two steps an epoch
    assert "num_train" not in r.stderr
    assert not (tmp_path / "runs").exists()
    # the suggestion, taken as written, trains
    r = runner.invoke(app, ["train", *_common(tmp_path, root), f"trainer.batch_size={fits}"])
    assert r.exit_code == 0, r.output


def test_a_run_ends_saying_what_to_do_next_and_test_split_hint_fits_one_tree(tmp_path):
    root = _photos(tmp_path / "photos", per_class=6)
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    run = lines[-3].split()[1]  # done: RUN  val/acc1=...
    assert lines[-3].startswith("done: ") and Path(run, "checkpoints", "best.pt").is_file()
    assert lines[-1].startswith("next: vaitrain eval RUN") and "vaitrain predict RUN" in lines[-1]
    # predict on a folder says which files it left out, as training does
    (root / "red" / "notes.txt").write_text("taken on a phone\n")
    r = runner.invoke(app, ["predict", run, str(root / "red")])
    assert r.exit_code == 0, r.output
    assert len(r.stdout.strip().splitlines()) == 1 + 6  # the header and the 6 photos
    assert "skipped 1 file(s) under" in r.stderr and "(.txt; e.g." in r.stderr and "notes.txt" in r.stderr
    (root / "red" / "notes.txt").unlink()
    # a folder of <class>/ trees has no train/: the hint says to move them there, or use val
    r = runner.invoke(app, ["eval", run, "--split", "test"])
    assert r.exit_code == 2
    assert "has no test split" in r.stderr and "under train/ first" in r.stderr and "--split val" in r.stderr
    # doing what it says (classes under train/, a test/ beside it) gives a test split
    for cls in COLOURS:
        (root / "train").mkdir(exist_ok=True)
        (root / cls).rename(root / "train" / cls)
    _photos(root / "test", per_class=2)
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", "trainer.test_at_end=true"])
    assert r.exit_code == 0, r.output
    run = r.stdout.strip().splitlines()[-3].split()[1]
    r = runner.invoke(app, ["eval", run, "--split", "test", "--json"])
    assert r.exit_code == 0, r.output
    assert '"split": "test"' in r.stdout


def _schema_classes():
    for mod in pkgutil.iter_modules(vaitrain.schema.__path__):
        module = importlib.import_module(f"vaitrain.schema.{mod.name}")
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__:
                yield obj


def test_options_docs_read_to_the_end_of_a_comment_continued_below_its_field():
    """`vaitrain options` showed 'held out ... for validation (folders without val/,' and stopped:
    a field's comment that goes on over the next comment lines is read whole."""
    docs = _field_docs(vaitrain.schema.data.DataConfig)
    assert docs["val_fraction"].endswith("their official test split stays the test split); seeded by data.seed")
    assert docs["image_size"].endswith("folders default to 0: the images' own size when they share one)")
    assert docs["normalize"] == "channel | pixel | none | imagenet (torchvision's mean/std)"  # its own line only
    for cls in _schema_classes():
        for key, doc in _field_docs(cls).items():
            assert doc.count("(") == doc.count(")"), f"{cls.__name__}.{key}: {doc}"


def test_options_shows_the_whole_doc(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(app, ["options", "data", "data=image_folder"])
    assert r.exit_code == 0, r.output
    flat = " ".join(r.stdout.replace("│", " ").split())
    assert "seeded by data.seed" in flat


def _sideways_photo(path: Path, upright: np.ndarray) -> None:
    """What a phone writes when held sideways: the pixels turned a quarter counter-clockwise, and
    EXIF orientation 6 (turn them 90 degrees clockwise to show)."""
    im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, exif=exif)


def test_photos_with_exif_orientation_are_read_as_shown(tmp_path):
    """A sideways phone photo was read as stored: rotated against its folder-mates, and its size
    (for 'images differ in size' and predict's mask size) was the stored one."""
    from vaitrain.data.images import image_size_of, load_image

    upright = np.zeros((16, 12, 3), np.uint8)  # 12 wide, 16 high: red top half, blue bottom half
    upright[:8, :, 0] = 255
    upright[8:, :, 2] = 255
    _sideways_photo(tmp_path / "side.png", upright)
    assert Image.open(tmp_path / "side.png").size == (16, 12)  # stored sideways
    assert image_size_of(tmp_path / "side.png") == (12, 16)
    got = load_image(tmp_path / "side.png", "RGB", 0).permute(1, 2, 0).numpy()
    assert np.array_equal(got, upright)
    # predict reads it the same way: its mask comes back at the size shown
    from vaitrain.data.images import load_image_sized

    x, hw = load_image_sized(tmp_path / "side.png", "RGB", 8)
    assert hw == (16, 12) and tuple(x.shape) == (3, 8, 8)


def test_a_run_too_short_for_batch_norm_statistics_says_so(tmp_path):
    """40 photos, batch 16, a few epochs: train/loss near 0 while val/acc1 sat at 0.67 (eval-mode batch
    norm still mostly its initial statistics). The run says so at the start, with the step count."""
    root = _photos(tmp_path / "photos", per_class=6)  # 18 images: 2 carved for validation, 16 train
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", "trainer.progress=plain"])
    assert r.exit_code == 0, r.output
    # 16 / 4 = 4 steps in one epoch; 0.9 ** 4 = 0.656 of the initial statistics left
    assert "note: 4 optimizer steps in all: batch norm's running statistics, which validation uses, will still " \
           "be 66% their initial values" in r.stdout
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", "trainer.progress=plain",
                            "norm=none"])
    assert r.exit_code == 0, r.output
    assert "optimizer steps in all" not in r.stdout  # no batch norm, nothing lags


def test_few_steps_note_counts_only_batch_norms_that_train():
    from torch import nn

    from vaitrain.engine.few_steps import few_steps_note

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    assert few_steps_note(net, 29) is not None and few_steps_note(net, 30) is None  # 0.9 ** 30 < 5 %
    net[1].requires_grad_(False)  # model.freeze: its statistics are not updated either
    assert few_steps_note(net, 1) is None
    assert few_steps_note(nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4)), 1) is None


def test_photos_of_mixed_sizes_are_told_a_size_that_works(tmp_path):
    """'set data.image_size=N' named no N; the one offered (the shortest side seen, down to a
    multiple of 16) trains as written. Same-size but non-square photos read 'the images is'."""
    root = tmp_path / "photos"
    sizes = [(37, 50), (45, 60), (50, 37)]  # width x height
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(4):
            w, h = sizes[i % 3] if cls == "red" else (45, 60)
            Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(root / cls / f"{i}.png")
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4"])
    assert r.exit_code == 2 and "images differ in size" in r.stderr
    m = re.search(r"e\.g\. data\.image_size=(\d+)$", r.stderr.strip())
    assert m and int(m.group(1)) == 32, r.stderr  # short sides 45 and 37 (or 50 x 37): 37 -> 32
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", f"data.image_size={m.group(1)}"])
    assert r.exit_code == 0, r.output
    for f in (root / "red").iterdir():  # all 45 x 60 now: not square
        Image.fromarray(np.full((60, 45, 3), COLOURS["red"], np.uint8)).save(f)
    r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4"])
    assert r.exit_code == 2
    assert "the images are 45x60, not square" in r.stderr and "e.g. data.image_size=32" in r.stderr, r.stderr


def test_a_val_folder_missing_a_class_is_named(tmp_path):
    """val/ held only some classes: val/acc1 1.0 said nothing about the others, without a word."""
    root = tmp_path / "photos"
    _photos(root / "train", per_class=4)
    _photos(root / "val", per_class=1)
    for cls in ("green", "red"):
        for f in (root / "val" / cls).iterdir():
            f.unlink()
        (root / "val" / cls).rmdir()
    r = CliRunner().invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", "trainer.progress=plain"])
    assert r.exit_code == 0, r.output
    assert (f"note: validation holds no image of class green, red (2 of 3): val/* never scores them; "
            f"add images to {root / 'val'}/<class>/") in r.stdout
    one_tree = _photos(tmp_path / "tree", per_class=4)  # 12 images: val_fraction 0.1 carves 1
    r = CliRunner().invoke(app, ["train", *_common(tmp_path, one_tree), "trainer.batch_size=4",
                                 "trainer.progress=plain"])
    assert r.exit_code == 0, r.output
    assert "(2 of 3): val/* never scores them; raise data.val_fraction (or add a val/ folder)" in r.stdout


def test_a_csv_with_a_text_column_beside_the_targets_names_data_target_columns(tmp_path):
    """A user's CSV (filename, redness, note): 'note is not a number' did not say that every column
    but the path is a target by default, nor how to pick the targets."""
    (tmp_path / "img").mkdir()
    lines = ["filename,redness,note"]
    for i in range(12):
        Image.fromarray(np.full((8, 8, 3), (20 * i, 80, 80), np.uint8)).save(tmp_path / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{i / 11:.3f},taken outside")
    (tmp_path / "labels.csv").write_text("\r\n".join(lines) + "\r\n")
    common = ["model=plain_cnn", "task=regression", "data=csv_regression", f"data.root={tmp_path / 'labels.csv'}",
              "data.image_size=8", "trainer.batch_size=4", "trainer.epochs=1", "trainer.progress=none",
              "trainer.threads=1", f"out_dir={tmp_path / 'runs'}"]
    runner = CliRunner()
    r = runner.invoke(app, ["train", *common])
    assert r.exit_code == 2
    m = re.search(r"column 'note' value 'taken outside' is not a number; .* e\.g\. '(data\.target_columns=\[redness\])'$",
                  r.stderr.strip())
    assert m, r.stderr
    r = runner.invoke(app, ["train", *common, m.group(1)])
    assert r.exit_code == 0, r.output


def test_eval_from_another_folder_says_data_root_is_relative(tmp_path, monkeypatch):
    """Trained with data.root=photos in one folder, evaluated from another: 'data.root=photos does
    not exist' did not say why, nor that eval takes data.root=PATH (which then works)."""
    _photos(tmp_path / "photos", per_class=6)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["train", *_common(tmp_path, Path("photos")), "trainer.batch_size=4"])
    assert r.exit_code == 0, r.output
    run = str(Path(r.stdout.strip().splitlines()[-3].split()[1]).resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    r = runner.invoke(app, ["eval", run])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"(data.root=photos is relative to the folder {run} was trained from" in r.stderr
    assert f"vaitrain eval {run} data.root=PATH)" in r.stderr
    r = runner.invoke(app, ["eval", run, f"data.root={tmp_path / 'photos'}", "--json"])
    assert r.exit_code == 0, r.output
    assert '"split": "val"' in r.stdout


def test_a_home_path_typed_in_the_shell_is_told_how_to_write_it(tmp_path, monkeypatch):
    """bash leaves data.root=~/photos as typed (data.root is no variable name), and Hydra's grammar
    refuses '~': the error said 'write key=value', which it was. Both fixes offered work."""
    _photos(tmp_path / "photos", per_class=6)
    monkeypatch.setenv("HOME", str(tmp_path))
    runner = CliRunner()
    common = [*_common(tmp_path, Path("x")), "trainer.batch_size=4"]
    common = [a for a in common if not a.startswith("data.root=")]
    r = runner.invoke(app, ["train", *common, "data.root=~/photos"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert (f"Hydra's grammar reads '~' only in a quoted value: write the path out, data.root={tmp_path}/photos, "
            "or quote it for the shell and Hydra, \"data.root='~/photos'\"") in r.stderr, r.stderr
    for fix in (f"data.root={tmp_path}/photos", "data.root='~/photos'"):  # the second as the shell passes it on
        r = runner.invoke(app, ["train", *common, fix])
        assert r.exit_code == 0, (fix, r.output)


def test_a_folder_name_with_brackets_is_told_to_quote_it(tmp_path):
    """'photos (1)' (a second download of the same folder): 'write key=value' again. The quoted form
    offered trains; a malformed sweep value keeps the general message."""
    _photos(tmp_path / "photos (1)", per_class=6)
    runner = CliRunner()
    common = [a for a in _common(tmp_path, Path("x")) if not a.startswith("data.root=")] + ["trainer.batch_size=4"]
    r = runner.invoke(app, ["train", *common, f"data.root={tmp_path}/photos (1)"])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    quoted = f"data.root='{tmp_path}/photos (1)'"
    assert f"Hydra's grammar reads '(' only in a quoted value: quote it for the shell and Hydra, \"{quoted}\"" \
        in r.stderr, r.stderr
    r = runner.invoke(app, ["train", *common, quoted])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["config", "optim.lr=log(1"])
    assert r.exit_code == 2 and "write key=value" in r.stderr and "quoted" not in r.stderr
    # a comma reads as a sweep list: the quoted form is offered too, and trains
    _photos(tmp_path / "pics,2024", per_class=6)
    r = runner.invoke(app, ["train", *common, f"data.root={tmp_path}/pics,2024"])
    quoted = f"data.root='{tmp_path}/pics,2024'"
    assert r.exit_code == 2 and f"for a path with a comma, quote it for the shell and Hydra, \"{quoted}\"" in r.stderr
    r = runner.invoke(app, ["train", *common, quoted])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["config", "trainer.epochs=1,2"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: sweep values (a,b or range(...)) need -m/--multirun"


def test_a_glob_matching_two_runs_is_named_as_such(tmp_path):
    """The README's `vaitrain eval runs/*/*-demo-*` after training `name=demo` twice: the second
    run was read as an override ('malformed override') or an image folder ('holds no image files')."""
    root = _photos(tmp_path / "photos", per_class=6)
    runner = CliRunner()
    runs = []
    for _ in range(2):
        r = runner.invoke(app, ["train", *_common(tmp_path, root), "trainer.batch_size=4", "name=demo"])
        assert r.exit_code == 0, r.output
        runs.append(r.stdout.strip().splitlines()[-3].split()[1])
    assert runs[0] != runs[1]
    for command, rest in (("eval", ["--split", "val"]), ("predict", [str(root / "red")])):
        r = runner.invoke(app, [command, *runs, *rest])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
        assert r.stderr.strip() == (f"error: 2 run directories given ({runs[0]}, {runs[1]}): a glob matched several "
                                    f"runs; `vaitrain {command}` takes one, e.g. the newest: {runs[1]}")
