"""Adversarial suite, config: every key vaitrain does not know or honour, every malformed override,
every non-finite number and every broken user YAML file ends in one line, exit 2, nothing written.
Plus a property-based fuzz of the override grammar (no input yields a traceback)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from adversarial import cli, refused
from vaitrain.config import BOUNDS, compose, validate
from vaitrain.errors import ConfigError


def train_refused(tmp_path: Path, args: list[str], pattern: str) -> None:
    """`train` refuses before anything is written: no out_dir at all."""
    out = tmp_path / "runs"
    refused(cli(["train", *args, f"out_dir={out}"]), pattern)
    assert not out.exists()


# ----- unknown keys, hydra.* settings, deletions ---------------------------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("+newkey=1", r"^error: unknown config key 'newkey'; valid top-level keys: .*out_dir"),
    ("++newkey=1", r"^error: unknown config key 'newkey'; valid top-level keys: "),
    ("+trainer.newkey=1", r"^error: '\+trainer.newkey=1': adding keys with \+ is not supported"),
    ("trainer.epoch=3", r"^error: unknown config key 'trainer.epoch'; valid keys here: trainer.epochs"),
    ("model.actt=relu", r"^error: unknown config key 'model.actt'; valid keys here: model.act"),
    ("a.b.c=1", r"^error: unknown config key 'a.b.c'"),
    ("hydra.run.dir=elsewhere", r"^error: 'hydra.run.dir' is a Hydra setting vaitrain does not use; use out_dir=DIR"),
    ("hydra.sweep.dir=elsewhere", r"^error: 'hydra.sweep.dir' is a Hydra setting vaitrain does not use; use out_dir=DIR"),
    ("hydra.job.chdir=true", r"^error: 'hydra.job.chdir' is a Hydra setting .*vaitrain never changes the working"),
    ("hydra.job.name=x", r"^error: 'hydra.job.name' is a Hydra setting vaitrain does not use; use name=TAG"),
    ("hydra.verbose=true", r"^error: 'hydra.verbose' is a Hydra setting vaitrain does not use"),
    ("hydra.output_subdir=null", r"^error: 'hydra.output_subdir' is a Hydra setting .*only hydra.searchpath"),
    ("hydra/launcher=basic", r"^error: 'hydra/launcher' is a Hydra setting vaitrain does not use"),
    ("~trainer.epochs", r"^error: '~trainer.epochs': deleting a key or group is not supported"),
    ("~optim", r"^error: '~optim': deleting a key or group is not supported; set it|^error: '~optim': deleting"),
    ("~model.act", r"^error: '~model.act': deleting a key or group is not supported"),
    ("~data=shapes", r"^error: '~data': deleting a key or group is not supported"),
])
def test_unknown_or_unused_key(tmp_path, override, pattern):
    train_refused(tmp_path, [override], pattern)


# ----- numbers: NaN and infinities in every float option ------------------------------------------

def _float_options() -> list[str]:
    cfg = compose([])
    container = OmegaConf.to_container(cfg, resolve=True)
    keys = []

    def walk(node, prefix):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(v, key)
            elif isinstance(v, float):
                keys.append(key)

    walk(container, "")
    return keys


FLOATS = _float_options()


def test_every_bounded_float_is_found():
    """The generated cases below cover every float option with bounds (an independent list)."""
    bounded_floats = [k for k, (lo, _) in BOUNDS.items() if isinstance(lo, float) and k in FLOATS]
    assert len(FLOATS) >= 25 and set(bounded_floats) <= set(FLOATS)


@pytest.fixture(scope="module")
def default_cfg():
    return compose([])


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOATS)
def test_non_finite_float_is_refused_with_its_range(default_cfg, key, value):
    """validate() on the composed config (the CLI path is checked below for a few keys)."""
    cfg = default_cfg.copy()
    OmegaConf.update(cfg, key, value)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    line = str(err.value)
    assert line.startswith(f"{key}={value} is not a finite number; ") and "\n" not in line
    if key in BOUNDS:
        lo, hi = BOUNDS[key]
        assert line.endswith(f">= {lo}" if hi is None else f"in [{lo}, {hi}]")


@pytest.mark.parametrize("override", ["optim.lr=nan", "optim.lr=inf", "model.dropout=-inf", "sched.gamma=nan",
                                      "norm.eps=inf", "data.noise=nan"])
def test_non_finite_float_at_the_cli(tmp_path, override):
    key = override.split("=")[0]
    train_refused(tmp_path, [override], rf"^error: {key}=\S+ is not a finite number; ")


@pytest.mark.parametrize("override, pattern", [
    ("optim.lr=1e999", r"^error: optim.lr=inf is not a finite number; it must be >= 0.0"),
    ("optim.betas=[nan,0.9]", r"^error: optim.betas\[0\]=nan is not a finite number"),
    ("optim.lr=-1", r"^error: optim.lr=-1.0 is out of range; it must be >= 0.0"),
    ("trainer.epochs=0", r"^error: trainer.epochs=0 is out of range; it must be >= 1"),
    ("data.val_fraction=0.99", r"^error: data.val_fraction=0.99 is out of range; it must be in \[0.0, 0.95\]"),
    ("trainer.epochs=1.5", r"^error: trainer.epochs=1.5 is not a valid int"),
    ("trainer.epochs=nan", r"^error: trainer.epochs=nan is not a valid int"),
])
def test_out_of_range_numbers(tmp_path, override, pattern):
    train_refused(tmp_path, [override], pattern)


# ----- the override grammar ------------------------------------------------------------------------

@pytest.mark.parametrize("override, pattern", [
    ("trainer.epochs", r"^error: malformed override 'trainer.epochs'"),
    ("=3", r"^error: malformed override '=3': the key is missing"),
    ("trainer.epochs=[", r"^error: malformed override"),
    ("optim.lr='", r"^error: malformed override"),
    ("a b=1", r"^error: malformed override"),
    ("trainer.epochs=int(x)", r"^error: malformed override"),
    ("optim.lr=tag(a,1)", r"^error: malformed override"),
    ("trainer.epochs=3\nseed=1", r"^error: malformed override 'trainer.epochs=3\\nseed=1'"),  # escaped: one line
    ("\x00=1", r"^error: malformed override '\\x00=1'"),
    ("x" * 5000 + "=1", r"^error: unknown config key 'x{40}\.\.\.' \(5000 characters\)"),
    ("-0", r"^error: No such option: -0 \(see `\S+ train --help`\)"),
    ("--multrun", r"^error: No such option: --multrun \(Possible options: --multirun\)"),
    ("trainer.epochs=1,2", r"^error: sweep values \(a,b or range\(...\)\) need -m/--multirun"),
    ("seed=range(3)", r"^error: sweep values .* need -m/--multirun"),
    ("seed=shuffle(1,2)", r"^error: sweep values .* need -m/--multirun"),
    ("model=glob(resnet*)", r"^error: sweep values .* need -m/--multirun"),
    ("optim.lr=interval(0,1)", r"^error: sweep values .* need -m/--multirun"),
    ("name=${name}", r"^error: cannot resolve the config: Recursive interpolation"),
    ("model.act=${oc.env:VAITRAIN_NO_SUCH_VAR}", r"^error: cannot resolve the config: .*VAITRAIN_NO_SUCH_VAR"),
    ("name=${", r"^error: malformed override|^error: cannot resolve"),
    ("model=../../etc/passwd", r"^error: model=../../etc/passwd is not a valid choice; choose one of: "),
])
def test_grammar(tmp_path, override, pattern):
    train_refused(tmp_path, [override], pattern)


@pytest.mark.parametrize("override, pattern", [
    ("optim.lr=interval(0,1)", r"^error: 'optim.lr=interval\(...\)' is a continuous range"),
    ("trainer.epochs=glob(*)", r"^error: 'trainer.epochs=glob\(...\)' matches config-group options"),
    ("model=glob(zzz*)", r"^error: 'model=glob\(zzz\*\)' matches none of model's options"),
    ("~optim", r"^error: '~optim': deleting a key or group is not supported"),
    ("hydra.sweep.dir=x", r"^error: 'hydra.sweep.dir' is a Hydra setting"),
])
def test_sweep_grammar(tmp_path, override, pattern):
    out = tmp_path / "runs"
    refused(cli(["train", "-m", override, f"out_dir={out}"]), pattern)
    assert not out.exists()


# ----- the user's own config files (hydra.searchpath) ----------------------------------------------

@pytest.fixture
def user_conf(tmp_path) -> Path:
    conf = tmp_path / "myconf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "optim").mkdir()
    files = {
        "experiment/typo.yaml": "# @package _global_\noptim:\n  lrr: 0.1\n",
        "experiment/syntax.yaml": "# @package _global_\noptim:\n  lr: [1, 2\n",
        "experiment/tabs.yaml": "# @package _global_\noptim:\n\tlr: 0.1\n",
        "experiment/nopkg.yaml": "optim:\n  lr: 0.5\n",
        "experiment/newtop.yaml": "# @package _global_\nnewkey: 1\n",
        "experiment/nan.yaml": "# @package _global_\noptim:\n  lr: .nan\n",
        "experiment/good.yaml": "# @package _global_\noptim:\n  lr: 0.25\n",
        "optim/mine.yaml": "name: sgd\nlrr: 0.1\n",
    }
    for name, text in files.items():
        (conf / name).write_text(text)
    return conf


@pytest.mark.parametrize("choice, pattern", [
    ("+experiment=typo", r"^error: unknown key 'lrr' in config file {conf}/experiment/typo.yaml; valid keys: lr, "),
    ("+experiment=syntax", r"^error: YAML syntax error in {conf}/experiment/syntax.yaml, line 4, column 1: "),
    ("+experiment=tabs", r"^error: YAML syntax error in {conf}/experiment/tabs.yaml, line 3, column 1: "),
    ("+experiment=nopkg", r"^error: unknown key 'experiment' in config file {conf}/experiment/nopkg.yaml"),
    ("+experiment=newtop", r"^error: unknown key 'newkey' in config file {conf}/experiment/newtop.yaml"),
    ("+experiment=nan", r"^error: "),  # Hydra reads the option name 'nan' as a float: one line all the same
    ("+experiment=missing", r"^error: experiment=missing is not a valid choice; choose one of: .*cifar10_resnet20.*"
                            r"typo$"),  # the packaged recipes and the user folder's
    ("optim=mine", r"^error: unknown key 'lrr' in config file {conf}/optim/mine.yaml"),
])
def test_user_config_file_errors_name_the_real_file(tmp_path, user_conf, choice, pattern):
    args = [f"hydra.searchpath=[file://{user_conf}]", choice]
    train_refused(tmp_path, args, pattern.format(conf=str(user_conf)))


def test_user_config_file_that_works(user_conf):
    """The same search path and a correct file: honoured (the refusals above are not blanket)."""
    result = cli(["config", f"hydra.searchpath=[file://{user_conf}]", "+experiment=good"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.25" in result.stdout


def test_yaml_python_tag_cannot_run_code(tmp_path, user_conf):
    marker = tmp_path / "ran"
    (user_conf / "experiment" / "evil.yaml").write_text(
        f"# @package _global_\nname: !!python/object/apply:os.system ['touch {marker}']\n")
    train_refused(tmp_path, [f"hydra.searchpath=[file://{user_conf}]", "+experiment=evil"],
                  r"^error: .*(could not determine a constructor|python/object)")
    assert not marker.exists()


# ----- property-based: no override yields a traceback -----------------------------------------------

KEYS = ["trainer.epochs", "optim.lr", "model", "optim", "data.root", "name", "seed", "sched.milestones",
        "model.act", "+x", "~trainer", "hydra.run.dir", "a.b", "+optim.lr", "", "optim.betas"]
VALUES = ["1", "-1", "1e999", "nan", "inf", "[1,2]", "[", "]", "{a:1}", "${x}", "'q'", '"', "\\", "a,b",
          "range(3)", "glob(*)", "interval(0,1)", "choice(a,b)", "null", "true", "é", "$", "*", "a b", "sgd",
          "${", "}", "sort(3,1)", "str(3)", "int(1.5)", "extend_list(1)"]
override = st.one_of(
    st.builds(lambda k, v, w: f"{k}={v}{w}", st.sampled_from(KEYS), st.sampled_from(VALUES),
              st.sampled_from(VALUES + [""])),
    st.text(max_size=30),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(override, min_size=1, max_size=3))
def test_fuzz_override_grammar_never_tracebacks(overrides):
    result = cli(["config", *overrides])
    assert result.exit_code in (0, 2), (overrides, result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, (overrides, result.stderr)
        assert result.stderr.startswith("error: ")
    elif any(o in ("-h", "--help") for o in overrides):  # the text strategy can draw the help option
        assert "Usage:" in result.stdout
    else:  # accepted: then it is a whole config, every float finite
        assert "model:" in result.stdout and not any(
            isinstance(v, float) and not math.isfinite(v) for v in _leaves(result.stdout))


def _leaves(yaml_text: str) -> list:
    out = []

    def walk(node):
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
        else:
            out.append(node)

    walk(OmegaConf.to_container(OmegaConf.create(yaml_text)))
    return out
