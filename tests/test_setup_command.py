"""`impasto setup FOLDER`: load any kind of package once and exit (what an image build runs
to bake weights in); `--install-requirements` installs the folder's requirements first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sagemaker_folders import GATED, code_folder

pytestmark = pytest.mark.timeout(300)


def setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "impasto.cli.main", "setup", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_setup_loads_an_impasto_package_once(tmp_path: Path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.py").write_text(
        "from pathlib import Path\n\n\nclass Model:\n"
        "    def load(self):\n"
        f"        with Path({str(tmp_path / 'loads')!r}).open('a') as f:\n"
        "            f.write('x')\n\n"
        "    def predict(self, model_input):\n        return model_input\n"
    )
    done = setup(str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loads").read_text() == "x"
    assert "loaded in" in done.stdout


def test_setup_runs_a_sagemaker_model_fn_once(tmp_path: Path):
    folder = code_folder(tmp_path / "model", GATED)
    (folder / "load.open").write_text("1")
    done = setup(str(folder))
    assert done.returncode == 0, done.stderr
    assert (folder / "loads").read_text() == "x"


def test_setup_fails_when_the_load_fails(tmp_path: Path):
    folder = code_folder(
        tmp_path / "model", "def model_fn(model_dir):\n    raise OSError('no weights')\n"
    )
    done = setup(str(folder))
    assert done.returncode == 6
    assert "no weights" in done.stderr


def test_install_requirements_runs_pip_on_the_folders_file(tmp_path: Path):
    folder = code_folder(tmp_path / "model", GATED)
    (folder / "load.open").write_text("1")
    (folder / "code" / "requirements.txt").write_text("pillow\n")  # already installed: no change
    done = setup(str(folder), "--install-requirements")
    assert done.returncode == 0, done.stderr
    (folder / "code" / "requirements.txt").write_text(f"{tmp_path / 'no-such-project'}\n")
    done = setup(str(folder), "--install-requirements")
    assert done.returncode == 4
    assert "pip install -r" in done.stderr
    assert (folder / "loads").read_text() == "x"  # the failed install stopped before loading
