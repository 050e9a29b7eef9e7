"""vaitrain lab (issue 14): each topic's measurement against the lecture's independent numbers
(REFERENCE.md), at tiny sizes; the topics' folders are normal sweeps with readable records."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from vaitrain.cli import app
from vaitrain.lab import LAB_FILE, REPORT_FILE, TOPICS, run_topic
from vaitrain.lab.base import LabContext

TINY = ["trainer.threads=1", "trainer.device=cpu", "trainer.progress=none"]


def tiny(tmp_path: Path) -> LabContext:
    return LabContext("tiny", tmp_path)


def test_lab_lists_every_topic_with_its_claim():
    out = CliRunner().invoke(app, ["lab"], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    required = {"init", "gradients", "normalization", "optimizers", "density", "sampling", "depth",
                "batchsize", "weightdecay", "autodiff", "inputnorm"}
    assert required <= set(TOPICS)
    for topic in TOPICS.values():
        assert topic.name in out.output and topic.claim[:40] in out.output


def test_unknown_topic_and_size_are_one_line_errors(tmp_path):
    out = CliRunner().invoke(app, ["lab", "inits", "--out-dir", str(tmp_path)])
    assert out.exit_code == 2 and "no lab topic 'inits'" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(app, ["lab", "init", "--size", "huge", "--out-dir", str(tmp_path)])
    assert out.exit_code == 2 and "--size huge" in out.output
    assert not any(tmp_path.iterdir())  # nothing half-written


def findings(tmp_path: Path, topic: str) -> dict[str, float]:
    """Run an inspection topic at its tiny size; every number its findings measured."""
    result = run_topic(topic, size="tiny", out_dir=tmp_path)
    assert not result.sweeps and (result.lab_dir / REPORT_FILE).is_file()
    return {k: v for f in result.findings for k, v in f.numbers.items()}


def test_init_he_keeps_xavier_halves_selu_fixed_point(tmp_path, one_thread):
    n = findings(tmp_path, "init")
    assert 0.25 <= n["he_ratio"] <= 4.0  # REFERENCE: He within a small factor over 32 layers
    assert n["lecun_factor"] == pytest.approx(0.5, abs=0.05)  # 1/fan_in + ReLU: x1/2 per layer
    assert n["xavier_factor"] == pytest.approx(0.5, abs=0.05)  # Glorot = 1/fan_in on square layers
    assert n["default_ratio"] < 0.1  # PyTorch's default is not He
    assert n["selu_max_abs_mean"] <= 0.05 and 0.9 <= n["selu_var_min"] and n["selu_var_max"] <= 1.1


def test_gradients_vanish_with_sigmoid_and_come_back_with_bn_and_skips(tmp_path, one_thread):
    n = findings(tmp_path, "gradients")
    # sigmoid' <= 1/4: 19 layers down with Xavier's unit gain leave about (1/4)^19
    assert n["sigmoid"] < 1e-6
    assert 0.1 <= n["relu"] <= 10 and 0.1 <= n["selu"] <= 10
    assert n["sigmoid_bn"] > 1e4 * n["sigmoid"]
    assert n["resnet"] > 1e4 * n["plain_cnn"]


def test_decoupled_decay_is_l2_for_plain_sgd_only(tmp_path, one_thread):
    from vaitrain.lab.inspections import l2_step_matches

    assert l2_step_matches(0.1, 0.05) < 1e-6  # vaitrain's step vs the hand-computed w - lr (g + wd w)
    n = findings(tmp_path, "weightdecay")
    assert n["sgd"] < 1e-4  # equal up to float rounding
    assert n["momentum"] > 1e-3 and n["adam"] > 1e-2


def test_losses_are_nlls(tmp_path, one_thread):
    n = findings(tmp_path, "losses")
    assert n["ce"] == pytest.approx(n["by_hand"], abs=1e-5)
    assert n["nll"] == pytest.approx(n["from_mse"], abs=1e-4)


def test_jacobian_passes_reverse_per_output_forward_per_input(one_thread):
    from vaitrain.lab.inspections import autodiff_measure, jacobian_forward, mlp

    rows = autodiff_measure([(12, 3), (3, 12)])
    for r in rows:
        assert r["reverse_passes"] == r["m"] and r["forward_passes"] == r["n"]
        assert r["gap"] < 1e-5
    f, x = mlp(5, 4), torch.randn(5)
    expected = torch.func.jacrev(f)(x)  # a second implementation
    assert torch.allclose(jacobian_forward(f, x), expected, atol=1e-6)


def test_autodiff_topic_reports_the_pass_counts(tmp_path, one_thread):
    result = run_topic("autodiff", size="tiny", out_dir=tmp_path)
    assert result.findings[0].holds, result.findings[0].measured
    assert "2 backward, 32 JVPs" in (result.lab_dir / REPORT_FILE).read_text()


def test_inputnorm_channel_stats_and_whitening(tmp_path):
    n = findings(tmp_path, "inputnorm")
    assert n["channel_mean"] < 1e-3
    assert n["patch_max_offdiag"] > 0.5  # neighbouring pixels stay correlated
    assert n["white_gap"] < 0.1  # held-out patches, whitened with train's ZCA: near the identity


def test_gradient_noise_falls_as_one_over_batch(one_thread):
    from vaitrain.lab.training import gradient_noise

    pool = 128
    noise = gradient_noise([4, 32], pool, draws=100)
    theory = (pool - 4) / 4 / ((pool - 32) / 32)  # sampling without replacement
    assert noise[4] / noise[32] == pytest.approx(theory, rel=0.35)


def _records_final(run_dir: Path) -> dict:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [l for l in lines if l["kind"] == "epoch"][-1]


def test_density_topic_mdn_beats_gaussian_and_is_a_normal_sweep(tmp_path):
    from vaitrain.compare import compare_paths

    result = run_topic("density", size="tiny", out_dir=tmp_path, overrides=TINY)
    nll = result.findings[0]
    assert nll.holds, nll.measured  # MDN's NLL below the single Gaussian's on shapes_ambiguous
    doc = json.loads((result.lab_dir / LAB_FILE).read_text())
    assert doc["status"] == "completed" and len(doc["findings"]) == len(result.findings)
    runs = compare_paths([str(result.lab_dir)]).runs  # compare-runs reads the lab folder
    assert sorted(r.config["task.head"] for r in runs) == ["gaussian", "mdn"]
    for run in runs:  # the numbers stated are the runs' own records
        head = run.config["task.head"]
        assert nll.numbers[f"nll_{head}"] == pytest.approx(_records_final(run.path)["val/nll"], rel=1e-6)
    page = (result.lab_dir / REPORT_FILE).read_text()
    assert nll.measured in page.replace("&#x27;", "'") and "predicted density" in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.parametrize("topic", ["normalization", "sampling", "depth", "batchsize"])
def test_training_topics_run_as_sweeps_and_report(tmp_path, topic):
    result = run_topic(topic, size="tiny", out_dir=tmp_path, overrides=TINY)
    assert result.sweeps and result.findings
    for sweep in result.sweeps:
        jobs = json.loads((sweep / "sweep.json").read_text())["jobs"]
        assert jobs and all(j["status"] == "completed" for j in jobs), jobs
    page = (result.lab_dir / REPORT_FILE).read_text()
    for f in result.findings:  # each claim with its measurement, and the verdict that matches it
        assert f.claim.split(":")[0][:30] in page.replace("&#x27;", "'")
        assert all(math.isfinite(v) for v in f.numbers.values()), f
    assert page.count("CONTRADICTS the claim") == len(result.contradicted)


def test_optimizers_topic_resumes_without_retraining(tmp_path):
    first = run_topic("optimizers", size="tiny", out_dir=tmp_path, overrides=TINY)
    assert [s.parent.parent.name for s in first.sweeps] == ["sgd", "adam", "alrao", "alrao_grid"]
    before = {p: p.read_bytes() for p in first.lab_dir.rglob("metrics.jsonl")}
    assert len(before) == 6
    again = run_topic("optimizers", size="tiny", out_dir=tmp_path, resume=first.lab_dir)
    assert again.lab_dir == first.lab_dir
    assert {p: p.read_bytes() for p in first.lab_dir.rglob("metrics.jsonl")} == before  # nothing retrained
    assert [f.numbers for f in again.findings] == [f.numbers for f in first.findings]


