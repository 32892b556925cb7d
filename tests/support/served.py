"""`careplan api serve` as a process of its own on a test's data folder, and the `careplan`
command run as a person would (no inherited CAREPLAN_* but the data folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def environment(data_dir: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | {
        "CAREPLAN_DATA_DIR": str(data_dir), "COLUMNS": "250"}


def careplan(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def add_token(env: dict[str, str], actor: str, role: str, *scope: str) -> str:
    made = careplan("api", "add-token", "--actor", actor, "--role", role, *scope, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    return made.stdout.split()[-1]


@contextmanager
def serving(data_dir: Path) -> Iterator[str]:
    """The API's address while `careplan api serve` runs on ``data_dir``."""
    ready = data_dir / "api.ready"
    ready.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "serve", "--ready-file", str(ready)],
                              env=environment(data_dir))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and server.poll() is None, "the API did not start"
            time.sleep(0.05)
        yield json.loads(ready.read_text())["api"]
    finally:
        server.terminate()
        server.wait(timeout=30)
