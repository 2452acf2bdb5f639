"""Fixtures for the offline checks of deploy/: the rendered overlays and the tools that check them.

``scripts/check-deploy.sh`` (run by ``make check``) installs kustomize, composecheck and the CRD schemas under
``.stack/tools/deploy`` and points these fixtures at them; without them the tests that need one are skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".stack" / "tools" / "deploy"
OVERLAYS = ("dev", "prod")


def tool(env: str, default: Path) -> Path:
    path = Path(os.environ.get(env, default))
    if not path.exists():
        pytest.skip(f"{path} is missing: scripts/check-deploy.sh (make check) installs it")
    return path


@pytest.fixture(scope="session")
def kustomize() -> Path:
    return tool("TRIGGERS_KUSTOMIZE", TOOLS / "bin" / "kustomize")


@pytest.fixture(scope="session")
def composecheck() -> Path:
    return tool("TRIGGERS_COMPOSECHECK", TOOLS / "bin" / "composecheck")


@pytest.fixture(scope="session")
def crd_schemas() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is missing: scripts/check-deploy.sh (make check) installs it")
    return tool("TRIGGERS_CRD_MODULES", TOOLS / "npm" / "node_modules")


def render(kustomize: Path, overlay: str) -> tuple[str, list[dict[str, Any]]]:
    """``kustomize build`` of one overlay: its text and its objects."""
    out = subprocess.run(
        [str(kustomize), "build", str(ROOT / "deploy" / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout, [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="session")
def rendered(kustomize: Path) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    return {overlay: render(kustomize, overlay) for overlay in OVERLAYS}
