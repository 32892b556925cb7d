"""``careplan bench ...``: benchmarks that print figures and RESULT lines."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from services.cli.common import _settings, console

app = typer.Typer(help="Benchmarks that print figures and RESULT lines.", no_args_is_help=True)


@app.command("store")
def bench_store(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Which event store backend to measure.")] = "sqlite",
    commands: Annotated[int, typer.Option(help="Commands per save measurement.")] = 3000,
    replay_events: Annotated[int, typer.Option(help="Events in the replayed aggregate.")] = 10_000,
) -> None:
    """Saves/s vs. a plain eventsourcing Application, and replay vs. the library's JSON path."""
    from services.bench.store import run_store_benchmark

    run_store_benchmark(_settings(), backend=backend, commands=commands, replay_events=replay_events, console=console)


@app.command("relay")
def bench_relay(
    events: Annotated[int, typer.Option(help="Stored events relayed in the throughput measurement.")] = 20_000,
    rate: Annotated[float, typer.Option(help="Commands per second in the latency measurement.")] = 200,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
) -> None:
    """Relay throughput vs. raw nats-py publish_async, and commit-to-subscriber latency."""
    from services.bench.relay import run_relay_benchmark

    run_relay_benchmark(_settings(), events=events, rate=rate, seconds=seconds, console=console)


@app.command("crisis")
def bench_crisis(
    rate: Annotated[float, typer.Option(help="Questionnaire submissions per second.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
    share: Annotated[float, typer.Option(help="Share of submissions with PHQ-9 item 9 positive.")] = 0.2,
    submissions: Annotated[int, typer.Option(help="Submissions in the throughput measurement.")] = 2000,
) -> None:
    """Crisis latency vs. its floor, and scoring throughput vs. a raw ack-only consumer."""
    from services.bench.crisis import run_crisis_benchmark

    run_crisis_benchmark(_settings(), rate=rate, seconds=seconds, share=share, submissions=submissions, console=console)


@app.command("webhook")
def bench_webhook(
    events: Annotated[int, typer.Option(help="Events delivered in the throughput measurement.")] = 2000,
    rate: Annotated[float, typer.Option(help="Commands per second in the latency measurement.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
    subscriptions: Annotated[int, typer.Option(
        help="Subscriptions each receiving every event (and as many concurrent raw loops).")] = 4,
) -> None:
    """Webhook deliveries/s vs. a raw httpx POST loop to the same receiver; commit → delivered latency."""
    from services.bench.webhook import run_webhook_benchmark

    run_webhook_benchmark(_settings(), events=events, rate=rate, seconds=seconds, console=console,
                          subscriptions=subscriptions)


@app.command("audit")
def bench_audit(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store for both paths.")] = "sqlite",
    events: Annotated[int, typer.Option(help="Events of the plan replayed at a moment.")] = 10_000,
    verify_events: Annotated[int, typer.Option(help="Stored events the chain is verified over.")] = 100_000,
) -> None:
    """Point-in-time replay vs. the library's replay; hash-chain verification rate."""
    from services.bench.audit import run_audit_benchmark

    settings = _settings().model_copy(update={"database": backend})
    run_audit_benchmark(settings, events=events, verify_events=verify_events, console=console)


@app.command("api")
def bench_api(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store for both paths.")] = "sqlite",
    commands: Annotated[int, typer.Option(help="Commands in the throughput measurement.")] = 2000,
    rate: Annotated[float, typer.Option(help="Commands per second in the latency measurement.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
    clients: Annotated[int, typer.Option(help="HTTP clients sending at once in the throughput measurement.")] = 4,
    workers: Annotated[int, typer.Option(help="API worker processes (CAREPLAN_API_WORKERS).")] = 1,
) -> None:
    """Commands through the HTTP API vs. the Python application; p50/p99 at a steady rate."""
    from services.bench.api import run_api_benchmark

    settings = _settings().model_copy(update={"database": backend})
    run_api_benchmark(settings, commands=commands, rate=rate, seconds=seconds, clients=clients, workers=workers,
                      console=console)


@app.command("views")
def bench_views(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store of the events and the views.")] = "sqlite",
    plans: Annotated[int, typer.Option(help="Plans (each with a course) in the store and the caseload.")] = 10_000,
    rounds: Annotated[int, typer.Option(help="Reads of each kind in the latency measurement.")] = 200,
) -> None:
    """Views catch-up from zero vs. the library's replay of the same events; caseload read p99."""
    from services.bench.views import run_views_benchmark

    run_views_benchmark(_settings(), backend=backend, plans=plans, rounds=rounds, console=console)


@app.command("scale")
def bench_scale(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store of every application.")] = "sqlite",
    events: Annotated[int | None, typer.Option(help="Events in the data set (default 1,000,000 on PostgreSQL, "
                                                    "200,000 on SQLite).")] = None,
) -> None:
    """A year of a hospital network's events; audit reads against reading only their answer; verify events/s."""
    from services.bench.scale import run_scale_benchmark

    run_scale_benchmark(_settings(), backend=backend, events=events, console=console)
