"""``careplan views rebuild`` and ``careplan views status`` on the demo's data folder."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_cli import careplan
from tests.support.demo import demo_copy


def rows(data: Path) -> dict[str, list[tuple[object, ...]]]:
    with sqlite3.connect(data / "views.sqlite") as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("view_plans", "view_courses", "view_scores", "view_sessions")}


def test_views_rebuild_builds_the_caseload_of_the_demo_from_zero_and_again(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path / "data"
    demo_copy(tmp_path_factory, data)  # the demo's folder, as `careplan demo --data-dir` leaves it
    first = careplan("views", "rebuild", "--data-dir", str(data), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    applied = int(re.search(r"views rebuilt: (\d+) events applied", first.stdout).group(1))  # type: ignore[union-attr]
    assert applied > 20
    built = rows(data)
    assert len(built["view_plans"]) == 1 and len(built["view_courses"]) == 1
    plan = built["view_plans"][0]
    assert (plan[1], plan[2], plan[4]) == ("client-0042", "clinician-17", "active")
    assert {(s[4], s[5]) for s in built["view_scores"]} >= {("PHQ-9", 12), ("GAD-7", 8)}
    assert built["view_sessions"]
    status = careplan("views", "status", "--data-dir", str(data), cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("(0 behind)") == 4, status.stdout
    # rebuilding again empties and refills to exactly the same rows
    again = careplan("views", "rebuild", "--data-dir", str(data), cwd=tmp_path)
    assert again.returncode == 0 and f"{applied} events applied" in again.stdout
    assert rows(data) == built
