"""The image's build stage, replayed without Docker: its ``COPY`` lines (with ``.dockerignore`` applied) and its
two ``uv sync`` commands, taken from the Dockerfile, install the project from the lock alone into a fresh
environment, and the installed ``triggers`` runs. Not checked: the base image and ``pip install uv``."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".stack" / "tools" / "bin" / "uv"


def build_stage() -> list[str]:
    """The build stage's instructions, one per line (continuations joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stage = text.split(" AS runtime")[0].split(" AS build", 1)[1]
    return [line.strip() for line in stage.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _pattern(glob: str) -> re.Pattern[str]:
    out = ""
    for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob.strip("/")):
        out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
    return re.compile(out)


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(p) for p in prefixes):
            verdict = not negated
    return verdict


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!"))))
    return rules


def copy(sources: list[str], dest: Path, into: bool, rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    """``COPY sources... dest`` of a build context that is the repository, as Docker does it (``into``: the
    destination is a folder, written with a trailing slash)."""
    for source in sources:
        origin = ROOT / source
        files = [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if ignored(relative, rules):
                continue
            if origin.is_file():
                target = dest / path.name if (len(sources) > 1 or into) else dest
            else:
                target = dest / path.relative_to(origin)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def test_every_workspace_member_is_in_the_lock_only_layer() -> None:
    """The first ``uv sync`` (dependencies only) needs every member's pyproject.toml: a member added to the
    workspace but not to the Dockerfile would break the image build."""
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["workspace"]["members"]
    members = {m for pattern in workspace for m in (p.parent for p in ROOT.glob(f"{pattern}/pyproject.toml"))}
    before_sync = []
    for line in build_stage():
        if "uv sync" in line:
            break
        if line.startswith("COPY "):
            before_sync += shlex.split(line)[1:-1]
    assert {f"{m.relative_to(ROOT).as_posix()}/pyproject.toml" for m in members} <= set(before_sync)
    assert {"pyproject.toml", "uv.lock"} <= set(before_sync)


def test_the_build_stage_installs_from_the_lock_and_the_command_runs(tmp_path: Path) -> None:
    if not UV.exists():
        pytest.skip("uv is installed by make install")
    workdir, venv = tmp_path / "src", tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy"}
    rules, synced = dockerignore(), 0
    for line in build_stage():
        if line.startswith("COPY "):
            *sources, dest = shlex.split(line)[1:]
            copy(sources, workdir / dest, dest.endswith("/"), rules)
        for command in re.findall(r"uv sync[^&]*", line):
            args = shlex.split(command)[1:]
            done = subprocess.run([str(UV), *args], cwd=workdir, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{command}\n{done.stderr}"
            synced += 1
    assert synced == 2
    shown = subprocess.run([str(venv / "bin" / "triggers"), "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "run" in shown.stdout, shown.stderr
    # not editable: the installed packages live in the environment, not in the copied sources
    assert not list(venv.rglob("*.pth")) or all("src" not in p.read_text() for p in venv.rglob("*.pth"))
