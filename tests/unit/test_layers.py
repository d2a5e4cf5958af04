"""The layer contracts in pyproject.toml hold for the package, and a lower module importing a higher one
breaks them: `make lint` (lint-imports) fails on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports over the copy of the package in `tree`, with the project's contracts."""
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "operator" / "kova", tmp_path / "operator" / "kova",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_package_keeps_its_layers(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "back_import", "contract"), [
    ("api/models.py", "import kova.adapters.kube", "Layers"),  # the vocabulary reaching up to an adapter
    ("compute/lifecycle.py", "import kova.controllers.instance", "Layers"),  # domain → Kopf handler
    ("openstack/image/glance.py", "import kova.controllers.image", "Layers"),  # HTTP → Kopf layer
    ("controllers/instance.py", "import kova.controllers.access", "One controller per kind"),
    ("image/rules.py", "import kubernetes", "The domain is pure"),
])
def test_a_back_import_breaks_a_contract(tree: Path, module: str, back_import: str, contract: str) -> None:
    path = tree / "operator" / "kova" / module
    path.write_text(path.read_text() + f"\n{back_import}  # noqa\n")
    result = lint(tree)
    assert result.returncode != 0
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), result.stdout
