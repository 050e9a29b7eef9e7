"""Bad input and bad state at the CLI: one line on stderr naming what is wrong, exit code 2, and
nothing written (no run directory; an existing run left as it was). Cases tests/test_cli_errors.py
already covers (unknown option/key, a malformed `a=b=`, a missing resume dir) are not repeated."""
from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path

import pytest
import torch

from crash_runs import TINY, invoke, the_run

SMALL = [*TINY, "data.num_train=64", "data.num_val=32", "trainer.batch_size=32", "trainer.epochs=1"]


def one_line_exit_2(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(pattern, result.stderr), result.stderr


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "runs"
    result = invoke(["train", *SMALL, f"out_dir={out}"])
    assert result.exit_code == 0, result.output
    return the_run(out)


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    """A copy of the trained run that a test may damage."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# ----- before anything is built or while building: no run directory ---------------------------

@pytest.mark.parametrize("args, pattern", [
    (["trainer.epochs"], r"^error: malformed override 'trainer.epochs': write key=value"),
    (["optimizer=adam"], r"^error: unknown config key 'optimizer'; valid keys here: optim, "),
    (["data.num_train=0"], r"^error: shapes needs data.num_train > 0 and data.num_val > 0"),
    (["data.num_train=20"], r"^error: trainer.batch_size=32 is larger than the training split of data=shapes "
                            r"\(20 samples\): lower it, e.g. trainer.batch_size=8 or raise data.num_train"),
    (["model=unet", "task=segmentation", "data.image_size=30"],
     r"^error: image size 30 px does not fit a U-Net of depth 4 \(the size must be divisible by 2\^4=16\): "
     r"use data.image_size=16 or 32"),
    (["trainer.device=cuda"],
     r"^error: trainer.device=cuda but CUDA is not available on this machine; use trainer.device=cpu"),
    (["trainer.device=cuda", "trainer.devices=2"],  # refused before any rank is launched
     r"^error: trainer.device=cuda but CUDA is not available on this machine"),
])
def test_train_refuses_with_one_line(tmp_path, args, pattern, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CUDA cases on any machine
    out = tmp_path / "runs"
    one_line_exit_2(invoke(["train", *SMALL, *args, f"out_dir={out}"]), pattern)
    assert not out.exists()


def test_empty_image_folder(tmp_path):
    (tmp_path / "images").mkdir()
    out = tmp_path / "runs"
    result = invoke(["train", *SMALL, "data=image_folder", f"data.root={tmp_path / 'images'}", f"out_dir={out}"])
    one_line_exit_2(result, r"^error: no images found under \S+images: expected \S+/<class>/\*\.png")
    assert not out.exists()


def test_output_directory_that_cannot_be_written(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "runs"
    result = invoke(["train", *SMALL, f"out_dir={out}"])
    one_line_exit_2(result, r"^error: cannot write runs under '\S+a_file/runs' \(\S+/a_file is a file, not a folder\); "
                            r"choose a writable folder with out_dir=DIR")
    assert (tmp_path / "a_file").read_text() == "not a folder"


# ----- a checkpoint that does not fit: named keys, the run left as it was ---------------------

def test_eval_with_another_model_names_the_mismatched_keys(trained):
    before = snapshot(trained)
    result = invoke(["eval", str(trained), "model=resnet32"])
    one_line_exit_2(result, r"^error: checkpoint '\S+best\.pt' does not fit this model: it holds model=resnet20, "
                            r"not model=resnet32; missing keys layer1\.3\.\S+, ")
    assert snapshot(trained) == before


def test_resume_with_another_model_is_refused(trained):
    before = snapshot(trained)
    result = invoke(["train", f"resume={trained}", "model=resnet32"])
    one_line_exit_2(result, r"^error: resume=\S+: model.name=resnet32 differs from the run's model.name=resnet20; "
                            r"a resumed run keeps its model, data, task, batch size, optimizer and schedule")
    assert snapshot(trained) == before


def test_eval_with_another_task_is_refused(trained):
    result = invoke(["eval", str(trained), "task=regression"])
    one_line_exit_2(result, r"^error: checkpoint '\S+best\.pt' was trained for task=classification, "
                            r"not task=regression")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _scramble(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(path.stat().st_size))


@pytest.mark.parametrize("damage", [_truncate, _scramble, lambda p: p.write_bytes(b"")],
                         ids=["truncated", "scrambled", "empty"])
def test_damaged_checkpoint_eval_and_resume(run_copy, damage):
    damage(run_copy / "checkpoints" / "last.pt")
    before = snapshot(run_copy)
    pattern = r"^error: checkpoint '\S+last\.pt' is truncated or corrupt \(.+\); use the run's other checkpoint"
    one_line_exit_2(invoke(["eval", str(run_copy), "--checkpoint", "last"]), pattern)
    one_line_exit_2(invoke(["train", f"resume={run_copy}"]), pattern)
    assert snapshot(run_copy) == before
    # the other checkpoint still serves
    assert invoke(["eval", str(run_copy), "--checkpoint", "best"]).exit_code == 0


# ----- security: a checkpoint cannot run code, a config cannot name objects to call ------------

class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_pickled_code_is_refused(trained, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    state = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    state["model"]["fc.weight"] = _Payload(marker)
    torch.save(state, evil)
    pickle.loads(pickle.dumps(_Payload(tmp_path / "proof")))  # the payload does run when unpickled
    assert (tmp_path / "proof").exists()
    result = invoke(["eval", str(trained), "--checkpoint", str(evil)])
    one_line_exit_2(result, r"^error: checkpoint '\S+evil\.pt' refers to code \((posix|nt|os)\.system\) and is "
                            r"refused: checkpoints are loaded with weights_only=True")
    assert not marker.exists()


def test_override_naming_a_target_is_refused(tmp_path):
    marker = tmp_path / "ran"
    out = tmp_path / "runs"
    result = invoke(["train", *SMALL, "+model._target_=os.system", f"+model._args_=[touch {marker}]",
                     f"out_dir={out}"])
    one_line_exit_2(result, r"^error: config key 'model._target_' asks Hydra to instantiate 'os.system'; "
                            r"vaitrain builds objects only from its own registries")
    assert not marker.exists() and not out.exists()


def test_user_yaml_naming_a_target_is_refused(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "evil.yaml").write_text(
        f"# @package _global_\nmodel:\n  _target_: os.system\n  _args_: ['touch {marker}']\n")
    out = tmp_path / "runs"
    result = invoke(["train", *SMALL, f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "+experiment=evil",
                     f"out_dir={out}"])
    one_line_exit_2(result, r"^error: unknown key '_target_' in config file")
    assert not marker.exists() and not out.exists()


def test_no_hydra_instantiate_anywhere_in_vaitrain():
    """One way from config to object: vaitrain's registries. Nothing imports Hydra's instantiate."""
    root = Path(__file__).resolve().parents[1] / "vaitrain"
    pattern = re.compile(r"hydra\.utils|\b(instantiate|call|_locate|get_method|get_class)\(")
    offenders = [str(p) for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
