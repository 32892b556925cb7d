"""API tokens (issue 13): ids, expiry, revocation, changes without a restart, locked atomic
writes, integration tokens that must name their clients."""

from __future__ import annotations

import json
import multiprocessing
import stat
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domain.base import Role
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token, add_token_with_id, digest, list_tokens, revoke_token
from services.care.application import CareApplication
from services.shared.settings import Settings


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """An API whose registry was read once at start, like `careplan up`'s."""
    path = tmp_path / "api-tokens.json"
    care = CareApplication(Settings(data_dir=tmp_path))
    client = TestClient(create_app(Api(care, TokenRegistry.load(path))), raise_server_exceptions=False)
    yield client, path
    care.close()


def status(client: TestClient, token: str) -> int:
    # An unknown plan: 404 once the token is accepted, 401 otherwise.
    return client.get(f"/plans/{uuid4()}", headers={"Authorization": f"Bearer {token}"}).status_code


def wait_until(check: object, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_token_made_while_the_api_runs_works_at_once_and_a_revoked_one_stops(served: tuple[TestClient, Path]) -> None:
    client, path = served
    token_id, token = add_token_with_id(path, actor_id="sup-3", role=Role.SUPERVISOR, clients=("*",))
    assert wait_until(lambda: status(client, token) == 404), "a new token is refused until a restart"
    revoke_token(path, token_id)
    assert wait_until(lambda: status(client, token) == 401), "a revoked token is still accepted"
    refused = client.get(f"/plans/{uuid4()}", headers={"Authorization": f"Bearer {token}"})
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "/problems/unauthenticated"
    assert refused.headers["www-authenticate"].startswith("Bearer")


def test_an_expired_token_is_refused(served: tuple[TestClient, Path]) -> None:
    client, path = served
    token = add_token(path, actor_id="sup-3", role=Role.SUPERVISOR, clients=("*",), expires_at=datetime.now(tz=UTC) + timedelta(seconds=2))
    assert wait_until(lambda: status(client, token) == 404)
    assert wait_until(lambda: status(client, token) == 401, seconds=6), "an expired token is still accepted"
    assert client.get(f"/plans/{uuid4()}", headers={"Authorization": f"Bearer {token}"}).json()["type"] == \
        "/problems/unauthenticated"
    # and with a clock: valid before its expiry, not from it on
    at = datetime.now(tz=UTC) + timedelta(days=30)
    later = add_token(path, actor_id="sup-4", role=Role.SUPERVISOR, clients=("*",), expires_at=at)
    assert TokenRegistry.load(path, clock=lambda: at - timedelta(seconds=1)).principal(f"Bearer {later}") is not None
    assert TokenRegistry.load(path, clock=lambda: at).principal(f"Bearer {later}") is None


def test_the_lookup_stats_the_file_at_most_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "api-tokens.json"
    token = add_token(path, actor_id="sup-3", role=Role.SUPERVISOR, clients=("*",))
    registry = TokenRegistry.load(path)
    from services.api import auth

    stats = []
    real = auth.os.stat
    monkeypatch.setattr(auth.os, "stat", lambda p, *a, **k: stats.append(p) or real(p, *a, **k))
    started = time.monotonic()
    for _ in range(2000):
        assert registry.principal(f"Bearer {token}") is not None
    assert len(stats) <= int(time.monotonic() - started) + 1


def _add_many(path: str, worker: int, n: int) -> list[str]:
    return [add_token(Path(path), actor_id=f"actor-{worker}-{i}", role=Role.CLINICIAN, clients=("c",)) for i in range(n)]


def test_concurrent_add_token_calls_all_land_in_a_0600_file(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = [t for ts in pool.starmap(_add_many, [(str(path), w, 10) for w in range(4)]) for t in ts]
    stored = list_tokens(path)
    assert len(stored) == len(made) == 40
    assert {t.sha256 for t in stored} == {digest(t) for t in made}
    assert len({t.id for t in stored}) == 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_an_old_token_file_keeps_working_with_derived_ids(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    path.write_text(json.dumps({"tokens": [
        {"actor_id": "clin-1", "role": "clinician", "clients": ["client-1"], "sha256": digest("old-secret")},
        {"actor_id": "sup-1", "role": "supervisor", "sha256": digest("older-secret")},  # before clients were required
    ]}))
    registry = TokenRegistry.load(path)
    assert registry.principal("Bearer old-secret") is not None
    assert registry.principal("Bearer older-secret").clients == ("*",)  # what it always meant: all clients
    [old, _] = list_tokens(path)
    assert old.id == f"tok-{digest('old-secret')[:12]}" and old.expires_at is None
    add_token(path, actor_id="sup-3", role=Role.SUPERVISOR, clients=("*",))
    assert list_tokens(path)[0].id == old.id  # the id stays what it was
    revoke_token(path, old.id)
    assert TokenRegistry.load(path).principal("Bearer old-secret") is None


def test_every_token_names_its_clients_or_says_all_clients(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    for role in (Role.CLINICIAN, Role.SUPERVISOR, Role.AUDITOR, Role.INTEGRATION):
        with pytest.raises(ValueError, match="all-clients"):
            add_token(path, actor_id="someone", role=role)
    assert not path.exists()
    from services.cli.api import app

    runner = CliRunner()
    for role in ("clinician", "supervisor", "auditor"):
        unscoped = runner.invoke(app, ["add-token", "--actor", "x", "--role", role, "--data-dir", str(tmp_path)])
        assert unscoped.exit_code == 2 and "--all-clients" in unscoped.output
    assert not path.exists()
    base = ["add-token", "--actor", "ehr-1", "--role", "integration", "--data-dir", str(tmp_path)]
    refused = runner.invoke(app, base)
    assert refused.exit_code == 2 and "--all-clients" in refused.output
    scoped = runner.invoke(app, [*base, "--client", "client-1", "--client", "client-2", "--expires-in", "30d"])
    assert scoped.exit_code == 0, scoped.output
    everyone = runner.invoke(app, [*base, "--all-clients", "--expires-at", "2099-01-01T00:00:00Z"])
    assert everyone.exit_code == 0, everyone.output
    assert runner.invoke(app, [*base, "--all-clients", "--client", "client-1"]).exit_code == 2
    assert runner.invoke(app, [*base, "--client", "c", "--expires-at", "2099-01-01T00:00:00"]).exit_code == 2
    assert runner.invoke(app, [*base, "--client", "c", "--expires-in", "soon"]).exit_code == 2
    tokens = list_tokens(tmp_path / "api-tokens.json")
    assert [t.clients for t in tokens] == [("client-1", "client-2"), ("*",)]
    assert tokens[0].expires_at is not None and tokens[1].expires_at == datetime(2099, 1, 1, tzinfo=UTC)

    secret = scoped.output.strip().splitlines()[-1]
    listed = runner.invoke(app, ["list-tokens", "--json", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert secret not in listed.output and tokens[0].sha256 not in listed.output  # never a secret or a digest
    rows = json.loads(listed.output)
    assert [r["id"] for r in rows] == [t.id for t in tokens] and {r["status"] for r in rows} == {"active"}
    assert tokens[0].id in scoped.output  # add-token shows the id
    assert runner.invoke(app, ["revoke-token", tokens[0].id, "--data-dir", str(tmp_path)]).exit_code == 0
    assert runner.invoke(app, ["revoke-token", "tok-000000000000", "--data-dir", str(tmp_path)]).exit_code == 1
    table = runner.invoke(app, ["list-tokens", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert "revoked" in table.output and secret not in table.output
