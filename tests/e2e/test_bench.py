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


def test_bench_relay_and_crisis_print_their_result_lines() -> None:
    runner = CliRunner()
    relay = runner.invoke(cli, ["bench", "relay", "--events", "300", "--rate", "50", "--seconds", "1"])
    assert relay.exit_code == 0, relay.output
    assert re.search(r"^RESULT relay_throughput ratio=\d+\.\d+ target=0\.8$", relay.output, re.MULTILINE)
    assert re.search(r"^LATENCY relay_commit_to_subscriber p50_ms=\d+\.\d+ p99_ms=\d+\.\d+", relay.output, re.MULTILINE)
    crisis = runner.invoke(cli, ["bench", "crisis", "--rate", "40", "--seconds", "1", "--submissions", "100"])
    assert crisis.exit_code == 0, crisis.output
    assert re.search(r"^RESULT crisis_latency_p99 ratio=\d+\.\d+ target=3\.0", crisis.output, re.MULTILINE)
    assert re.search(r"^RESULT scoring_throughput ratio=\d+\.\d+ target=0\.5$", crisis.output, re.MULTILINE)


def test_bench_views_prints_its_result_and_latency_lines() -> None:
    views = CliRunner().invoke(cli, ["bench", "views", "--plans", "120", "--rounds", "5"])
    assert views.exit_code == 0, views.output
    found = re.search(r"^RESULT views_catch_up_sqlite ratio=(\d+\.\d+) target=0\.5$", views.output, re.MULTILINE)
    assert found and float(found.group(1)) > 0
    assert re.search(r"^LATENCY views_caseload_sqlite plans=120 p50_ms=\d+\.\d+ p99_ms=\d+\.\d+$", views.output,
                     re.MULTILINE)


def test_bench_webhook_prints_its_result_and_latency_lines() -> None:
    webhook = CliRunner().invoke(cli, ["bench", "webhook", "--events", "150", "--rate", "30", "--seconds", "1"])
    assert webhook.exit_code == 0, webhook.output
    found = re.search(r"^RESULT webhook_throughput ratio=(\d+\.\d+) target=0\.5$", webhook.output, re.MULTILINE)
    assert found and float(found.group(1)) > 0
    assert re.search(r"^LATENCY webhook_commit_to_delivered p50_ms=\d+\.\d+ p99_ms=\d+\.\d+ rate=30$", webhook.output,
                     re.MULTILINE)
