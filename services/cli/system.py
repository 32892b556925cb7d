"""``careplan up|demo|relay|service``: the system and its processes (commands of the root app)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from services.cli.common import _logging, _settings, console
from services.registry import SERVICE_NAMES

if TYPE_CHECKING:
    ServiceName = str
else:
    ServiceName = Literal[SERVICE_NAMES]  # the registry's services are the command's choices


def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where to keep the SQLite files (default: a new folder).")] = None,
) -> None:
    """Run a realistic care story and print it as a timeline; the data stays for inspection."""
    from services.demo import run_demo

    settings = _settings(data_dir)
    if data_dir is None:
        settings = settings.model_copy(update={"data_dir": Path("careplan-data") / "demo"})
    run_demo(settings, console)


def up(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (SQLite files, JetStream store).")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="Write {nats, api, data_dir} as JSON here once ready.")] = None,
    instances: Annotated[int | None, typer.Option(min=1, max=8, help="Processes of each partitionable service "
                                                  "(default: CAREPLAN_SERVICE_INSTANCES, else 1).")] = None,
) -> None:
    """Run the whole system on this machine until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from services.system import System

    _logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = _settings(data_dir)
    if instances is not None:
        settings = settings.model_copy(update={"service_instances": instances})
    with System(settings) as system:
        console.print(system.ready_line())
        if ready_file is not None:
            system.write_ready_file(ready_file)
        stop.wait()
        console.print("careplan stopping: relays finish what is in flight and record their position")
    console.print("careplan stopped")


def relay(
    ready_file: Annotated[Path | None, typer.Option(help="Written once the relay is publishing.")] = None,
) -> None:
    """Run the care application's relay (store → JetStream) as a process of its own."""
    from services.relay_process import run_relay_process

    _logging()
    run_relay_process(_settings(), ready_file=ready_file)


def service(
    name: Annotated[ServiceName, typer.Argument(help="Which service to run.")],
    ready_file: Annotated[Path | None, typer.Option(help="Written once the service is consuming.")] = None,
    instances: Annotated[int, typer.Option(min=1, max=8, help="Processes sharing the work (partitioned consumer: "
                                           "CAREPLAN_CONSUMER_PARTITIONS, 8 unless set).")] = 1,
) -> None:
    """Run one service alone against CAREPLAN_NATS_URL: its consumer and its relay."""
    from services.registry import service as registered
    from services.shared.runner import run_service_process

    _logging()
    if instances > 1:
        from services.shared.partitions import run_instances

        raise typer.Exit(run_instances(name, instances, _settings(), registered(name).unpartitioned))
    run_service_process(_settings(), registered(name).running, ready_file=ready_file)


# Registered on the root app in this order (their names are the functions' names).
COMMANDS: tuple[Callable[..., Any], ...] = (demo, up, relay, service)
