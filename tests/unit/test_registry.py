"""The registry is the one declaration of the system: every registered service is started by
`careplan up`, verified by audit, has its NATS user and permissions, and can be run by
`careplan service NAME`; the checked-in permissions are the registry's."""

from __future__ import annotations

from typer.testing import CliRunner

from contracts.subjects import APPLICATION_CONTEXTS
from services.audit.integrity import STORES as VERIFIED_STORES
from services.cli import app as cli
from services.nats_auth import PERMISSIONS_FILE, PROCESS_USERS, USERS, permissions_problem, render_permissions
from services.operations.recovery import STORE_CONSUMERS
from services.registry import PROCESSES, SERVICES, STORES, service
from services.shared.tracking import Tracked


def test_every_service_is_started_by_up_verified_by_audit_and_has_nats_permissions() -> None:
    started = {process.name for process in PROCESSES}
    permissions = render_permissions()
    for entry in SERVICES:
        assert entry.process in started
        assert entry.store in VERIFIED_STORES and entry.store in APPLICATION_CONTEXTS
        assert entry.name in STORE_CONSUMERS[entry.store]
        assert PROCESS_USERS[entry.process] == entry.nats_user and entry.nats_user in USERS
        assert f"user: {entry.nats_user}," in permissions
        assert f"$JS.API.CONSUMER.MSG.NEXT.CARE.{entry.name}" in permissions
        if entry.relays:
            assert f'"care.{APPLICATION_CONTEXTS[entry.store]}.>"' in permissions.split(f"user: {entry.nats_user},")[1].split("user:")[0]


def test_every_service_declares_its_application_store_and_reactions() -> None:
    for entry in SERVICES:
        application = entry.application
        assert issubclass(application, Tracked) and application.name == entry.store
        assert entry.subjects, f"{entry.name} reacts to nothing"
        assert service(entry.name) is entry


def test_every_store_is_published_by_exactly_one_process() -> None:
    for store in STORES:
        publishers = [p.name for p in PROCESSES if p.name == f"relay:{store}"]
        publishers += [s.process for s in SERVICES if s.store == store and s.relays]
        assert len(publishers) == 1, (store, publishers)


def test_the_checked_in_permissions_are_the_registrys() -> None:
    assert permissions_problem() is None, f"run `careplan contracts generate`: {PERMISSIONS_FILE}"


def test_the_cli_runs_exactly_the_registered_services() -> None:
    answer = CliRunner().invoke(cli, ["service", "no-such-service"])
    assert answer.exit_code == 2
    for entry in SERVICES:
        assert entry.name in answer.output
