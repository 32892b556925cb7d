"""Fixtures shared by every tier.

The application suite runs against SQLite and PostgreSQL. PostgreSQL comes from
``CAREPLAN_TEST_POSTGRES_*`` (default: 127.0.0.1:5432, user root, database test); when it
cannot be reached the tests that need it fail loudly rather than skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from domain.base import Actor, CommandContext, Role
from services.shared.clock import ManualClock
from services.shared.persistence import drop_postgres_schemas
from services.shared.settings import Settings

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers start with COLUMNS=80 in their environment (a plain run has none),
    # and the CLI's Rich console, made at import, would keep that width for good: the tests that
    # give the CLI a wider COLUMNS (CliRunner's env) would read tables cut at 80 columns.
    os.environ.pop("COLUMNS", None)

PG = {
    "host": os.environ.get("CAREPLAN_TEST_POSTGRES_HOST", "127.0.0.1"),
    "port": int(os.environ.get("CAREPLAN_TEST_POSTGRES_PORT", "5432")),
    "user": os.environ.get("CAREPLAN_TEST_POSTGRES_USER", "root"),
    "password": os.environ.get("CAREPLAN_TEST_POSTGRES_PASSWORD", ""),
    "dbname": os.environ.get("CAREPLAN_TEST_POSTGRES_DBNAME", "test"),
}

CLINICIAN = Actor(id="clinician-17", role=Role.CLINICIAN)
SUPERVISOR = Actor(id="supervisor-3", role=Role.SUPERVISOR)
ESCALATION = Actor(id="escalation-service", role=Role.SERVICE)
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def ctx(actor: Actor = CLINICIAN, at: datetime = T0) -> CommandContext:
    return CommandContext(actor=actor, at=at, correlation_id=uuid.UUID(int=1))


def postgres_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a fresh schema of the test database; drop it with ``drop_schemas``."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    return Settings(
        data_dir=data_dir,
        database="postgres",
        postgres_host=PG["host"],
        postgres_port=PG["port"],
        postgres_user=PG["user"],
        postgres_password=PG["password"],
        postgres_dbname=PG["dbname"],
        postgres_schema_prefix=prefix,
        postgres_pool_size=2,
        **overrides,  # type: ignore[arg-type]
    )


def drop_schemas(settings: Settings) -> None:
    drop_postgres_schemas(settings)


@pytest.fixture(scope="session")
def postgres_available() -> None:
    import psycopg

    try:
        with psycopg.connect(
            host=PG["host"], port=PG["port"], user=PG["user"], password=PG["password"] or None, dbname=PG["dbname"],
            connect_timeout=5,
        ):
            pass
    except psycopg.OperationalError as e:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} (user {PG['user']}, database {PG['dbname']}): {e}. "
            "Start it, or point CAREPLAN_TEST_POSTGRES_* at one.",
            pytrace=False,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings for each backend in turn; the same tests run on both."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
        return
    request.getfixturevalue("postgres_available")
    settings = postgres_settings(tmp_path)
    try:
        yield settings
    finally:
        drop_schemas(settings)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)
