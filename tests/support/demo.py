"""The demo's data folder, made once per test run and copied for each test that reads it.

`careplan demo` tells its whole story through the running system (its escalation waits out a
timeout in seconds), which takes several seconds; the CLI, views, audit and browser tests all
start from the folder it leaves. Each of them gets a copy of its own, so none sees another's
writes; the demo itself runs once per run (under pytest-xdist, once across the workers: the
first to need it makes it under a lock in the run's shared temporary folder).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    stdout: str
    stderr: str


def _run_demo(data: Path) -> DemoRun:
    # as a person runs it: no CAREPLAN_* inherited but the data folder given
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | {"COLUMNS": "200"}
    told = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--data-dir", str(data)],
        env=env,
        cwd=data.parent,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return DemoRun(told.returncode, told.stdout, told.stderr)


def demo_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoRun]:
    """The demo's data folder (not to be written: copy it with :func:`demo_copy`) and what it printed."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # shared by the workers of this run
    root = base / "demo-once"
    root.mkdir(exist_ok=True)
    with (root / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        told_file, data = root / "told.json", root / "data"
        if not told_file.exists():
            shutil.rmtree(data, ignore_errors=True)
            told = _run_demo(data)
            told_file.write_text(json.dumps(told.__dict__))
        told = DemoRun(**json.loads(told_file.read_text()))
    assert told.returncode == 0, told.stdout[-2000:] + told.stderr[-2000:]
    return data, told


def demo_copy(tmp_path_factory: pytest.TempPathFactory, to: Path) -> DemoRun:
    """A copy of the demo's data folder at ``to`` (which must not exist yet); what the demo printed."""
    data, told = demo_once(tmp_path_factory)
    shutil.copytree(data, to)
    return told
