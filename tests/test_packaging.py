"""The wheel ships conf/ as vaitrain.conf; an installed copy composes its configs from any folder."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_contains_every_config_file(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    wheel = next(tmp_path.glob("vaitrain-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    yaml_files = sorted(p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml"))
    assert yaml_files and all(f"vaitrain/conf/{f}" in names for f in yaml_files)
    assert "vaitrain/conf/__init__.py" in names
    for package in ("models", "data", "tasks", "optim", "engine", "track", "schema", "bench"):
        assert f"vaitrain/{package}/__init__.py" in names, package


def test_configs_found_from_another_working_directory(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vaitrain", "config", "model=unet", "optim=sgd"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "name: unet" in out.stdout and "name: sgd" in out.stdout
