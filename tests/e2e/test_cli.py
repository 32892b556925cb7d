"""The installed ``careplan`` command, as a newcomer runs it."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.demo import demo_copy


def careplan(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("careplan", path=str(Path(sys.executable).parent)) or "careplan"
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_demo_prints_the_story_and_leaves_the_store_for_inspection(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    result = demo_copy(tmp_path_factory, tmp_path / "data")  # `careplan demo --data-dir`, run once for the e2e tests
    out = result.stdout
    assert "identified as unrealistic" in out
    assert "Strategy changed: short_term_moderate → mid_term_in_depth" in out
    assert "Phase middle started" in out
    assert "Expectation chain: 'I should never feel anxious or low again'" in out
    with sqlite3.connect(tmp_path / "data" / "care.sqlite") as db:
        (count,) = db.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    assert count == 46  # the story, the crisis submission, the plan's reactions, the clinician's decision
    # and the services, started by the demo, scored and escalated
    assert "PHQ-9 scored: total 12 (moderate)" in out
    assert "GAD-7 scored: total 8 (mild)" in out
    assert "Escalation raised (urgent): phq9_suicide_item" in out
    assert "No acknowledgement from level 1" in out and "Level 2 (on-call clinician) notified" in out
    assert "Emergency support activated for crisis" in out
    assert "Escalation acknowledged at level 2" in out and "Crisis resolved" in out
    assert "Emergency support ended; strategy now mid_term_in_depth" in out
    # and the scheduling service: the course planned weekly, re-planned for the crisis and after it
    assert "Schedule opened: interpersonal course of 14 sessions" in out
    assert "Slot 14 (session) scheduled for" in out and "Slot 2 (check_in) scheduled for" in out
    assert "Schedule follows strategy emergency_support (was mid_term_in_depth)" in out
    stored = {}
    for store in ("assessment", "escalation", "scheduling"):
        with sqlite3.connect(tmp_path / "data" / f"{store}.sqlite") as db:
            (stored[store],) = db.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    assert stored["assessment"] == 4 and stored["escalation"] >= 6 and stored["scheduling"] > 14
    total = count + sum(stored.values())
    assert f"{total} events stored" in out
    # the subscriptions service notes which client each plan and course belongs to (no subscription yet)
    with sqlite3.connect(tmp_path / "data" / "subscriptions.sqlite") as db:
        (links,) = db.execute("SELECT COUNT(*) FROM stored_events").fetchone()
    held = re.search(r"JetStream stream CARE holds (\d+) events", out)
    assert held and int(held.group(1)) == total + links  # every event of every store, once


def test_demo_defaults_to_a_data_folder_in_the_working_directory_whatever_careplan_data_dir_says(
    tmp_path: Path,
) -> None:
    result = careplan("demo", cwd=tmp_path, env={"CAREPLAN_DATA_DIR": str(tmp_path / "elsewhere")})
    assert result.returncode == 0, result.stderr
    # --data-dir is absent, so the demo uses its own default folder under the working directory
    assert (tmp_path / "careplan-data" / "demo" / "care.sqlite").exists()


def test_bad_settings_get_a_clear_error(tmp_path: Path) -> None:
    result = careplan("demo", cwd=tmp_path, env={"CAREPLAN_DATABASE": "oracle"})
    assert result.returncode != 0
    assert "database" in (result.stdout + result.stderr)
