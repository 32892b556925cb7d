"""The store benchmark runs end to end and prints its RESULT lines (figures are not judged here)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from services.cli import app as cli

RESULT = re.compile(r"^RESULT (store_save|store_replay)_sqlite ratio=(\d+\.\d+) target=(\d+(\.\d+)?)$", re.MULTILINE)


def test_bench_store_prints_a_result_line_per_figure() -> None:
    result = CliRunner().invoke(cli, ["bench", "store", "--backend", "sqlite", "--commands", "40", "--replay-events", "300"])
    assert result.exit_code == 0, result.output
    found = {m.group(1): float(m.group(2)) for m in RESULT.finditer(result.output)}
    assert set(found) == {"store_save", "store_replay"}
    assert all(ratio > 0 for ratio in found.values())
