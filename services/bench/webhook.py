"""``careplan bench webhook``.

(a) Deliveries per second from the stream to a local receiver through the subscriptions
    service (consume, number, sign, POST, record the attempt; the care relay has published
    every event to the stream before the service starts), against a raw httpx POST
    loop of the same bodies to the same receiver, each on one kept-alive ``httpx.AsyncClient``.
    First one subscription against one loop (one request at a time each: the RESULT line,
    target ≥ 0.5×); then K (``--subscriptions``, default 4) subscriptions each matching every
    event — K × ``events`` deliveries, each subscription in order, K requests in flight at
    most — against K concurrent loops making as many POSTs: the same receiver, the same
    bodies, the same concurrency. Everything runs in this one process (one interpreter's
    CPU: consumer, engine and receiver for careplan; client and receiver for raw).
(b) Latency from a command's commit to its event's arrival at the receiver, at a steady
    rate (100 events/s by default), through the care relay and the service: p50 and p99.

The receiver (Starlette under uvicorn) runs in a thread of its own, with its own loop, so
it does not share the service's loop; it verifies nothing (the tests do) and answers 204.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self
from uuid import UUID

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain.base import Actor, Role
from services.bench.relay import _percentile
from services.care import commands as c
from services.care.application import CareApplication
from services.registry import service
from services.shared.bus import EmbeddedNats, apply_streams_at, connect, free_port
from services.shared.commands import CommandMeta
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings
from services.subscriptions.kinds import Scope
from services.subscriptions.service import SubscriptionsApplication

THROUGHPUT_TARGET = 0.5
META = CommandMeta(actor=Actor(id="clinician-1", role=Role.CLINICIAN))
HOSPITAL = Actor(id="bench-ehr", role=Role.INTEGRATION)


class Receiver:
    """Counts arrivals (by ``webhook-id``, with the time of the first) in a thread of its own."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self.count = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def _receive(self, request: Request) -> Response:
        await request.body()
        self.count += 1
        self.arrived.setdefault(request.headers.get("webhook-id", str(self.count)), time.time())
        return Response(status_code=204)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Self:
        app = Starlette(routes=[Route("/hook", self._receive, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off", access_log=False))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        while not self._server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(30)


def _plans(app: CareApplication, n: int) -> list[UUID]:
    return [app.handle(c.DraftCarePlan(client_id=f"client-{i}", title="Bench", strategy="short_term_moderate",
                                       therapy_models=["steady_drive"]), META).aggregate_id for i in range(n)]


def _goal(app: CareApplication, plan: UUID, i: int) -> str:
    return str(app.handle(c.AddGoal(plan_id=plan, description=f"Goal {i}"), META).event_ids[0])


async def _relay_until(settings: Settings, stop: asyncio.Event) -> None:
    stores = OutboxStores(settings, CareApplication.name)
    relay = Relay(settings, application=CareApplication.name, nats_url=settings.nats_url or "",
                  recorder=stores.recorder, mapper=stores.mapper, tracking=stores.tracking, woken_by_writer=False)
    try:
        await relay.run(stop)
    finally:
        stores.close()


async def _published(settings: Settings, count: int) -> None:
    """Until the stream holds ``count`` messages: the relay has published every event."""
    nc = await connect(settings.nats_url or "", name="careplan-bench-webhook", reconnect=False)
    try:
        js = nc.jetstream()
        while (await js.stream_info(settings.stream_name)).state.messages < count:
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def _deliveries(settings: Settings, receiver: Receiver, events: int, expected: int) -> tuple[float, list[bytes]]:
    """The service's steady rate from the stream: the care relay publishes every event first
    (it is the care application's, another process where deployed), then the service
    consumes, numbers, signs, POSTs and records; first arrival to the last (start-up excluded)."""
    stop = asyncio.Event()
    relaying = asyncio.create_task(_relay_until(settings, stop))
    try:
        await _published(settings, events)
    finally:
        stop.set()
        await relaying
    running = service("subscriptions").running(settings)
    await running.start()
    try:
        while receiver.count < 1:
            await asyncio.sleep(0.001)
        first, start = receiver.count, time.perf_counter()
        while receiver.count < expected:
            await asyncio.sleep(0.001)
        rate = (receiver.count - first) / (time.perf_counter() - start)
    finally:
        await running.stop()
    subs = SubscriptionsApplication(settings)
    try:
        sid = subs.subscriptions()[0].id
        bodies = [n.event.body for n in subs.numbered_events(sid, 0, min(events, 1000))]
    finally:
        subs.close()
    return rate, bodies


async def _raw_posts(receiver: Receiver, bodies: list[bytes], count: int, loops: int) -> float:
    """``loops`` concurrent loops of ``count`` POSTs each, one at a time per loop."""
    limits = httpx.Limits(max_connections=loops, max_keepalive_connections=loops)
    async with httpx.AsyncClient(limits=limits) as http:

        async def loop(k: int) -> None:
            for i in range(count):
                await http.post(receiver.url(), content=bodies[i % len(bodies)],
                                headers={"content-type": "application/json", "webhook-id": f"raw-{k}-{i}"})

        await http.post(receiver.url(), content=bodies[0], headers={"content-type": "application/json"})
        start = time.perf_counter()
        await asyncio.gather(*(loop(k) for k in range(loops)))
        return count * loops / (time.perf_counter() - start)


def measure_throughput(base: Settings, events: int, subscriptions: int = 1) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-webhook-") as tmp, \
            EmbeddedNats(store_dir=Path(tmp) / "nats") as server, Receiver() as receiver:
        settings = base.model_copy(update={"data_dir": Path(tmp) / "data", "database": "sqlite",
                                           "nats_url": server.url,
                                           "subscription_delivery_concurrency": subscriptions})
        asyncio.run(apply_streams_at(server.url, settings))
        subs = SubscriptionsApplication(settings)
        for _ in range(subscriptions):
            subs.subscribe("webhook", {"endpoint": receiver.url(), "filter": "care.clinical.>"}, Scope(("*",)),
                           HOSPITAL)
        subs.close()
        app = CareApplication(settings)
        plans = _plans(app, 20)
        for i in range(events - len(plans)):
            _goal(app, plans[i % len(plans)], i)
        app.close()
        ours, bodies = asyncio.run(_deliveries(settings, receiver, events, events * subscriptions))
        raw = asyncio.run(_raw_posts(receiver, bodies, events, subscriptions))
    return ours, raw


async def _latency(settings: Settings, receiver: Receiver, rate: float, seconds: float) -> list[float]:
    stop = asyncio.Event()
    relaying = asyncio.create_task(_relay_until(settings, stop))
    running = service("subscriptions").running(settings)
    await running.start()
    app = CareApplication(settings)
    committed: dict[str, float] = {}
    try:
        plans = await asyncio.to_thread(_plans, app, 10)
        total = int(rate * seconds)

        def write() -> None:
            start = time.monotonic()
            for i in range(total):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                event_id = _goal(app, plans[i % len(plans)], i)
                committed[event_id] = time.time()

        await asyncio.to_thread(write)
        deadline = time.monotonic() + 60
        while not set(committed) <= set(receiver.arrived) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        await running.stop()
        stop.set()
        await relaying
        app.close()
    return [(receiver.arrived[e] - t) * 1000 for e, t in committed.items() if e in receiver.arrived]


def measure_latency(base: Settings, rate: float, seconds: float) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-webhook-") as tmp, \
            EmbeddedNats(store_dir=Path(tmp) / "nats") as server, Receiver() as receiver:
        settings = base.model_copy(update={"data_dir": Path(tmp) / "data", "database": "sqlite",
                                           "nats_url": server.url})
        asyncio.run(apply_streams_at(server.url, settings))
        subs = SubscriptionsApplication(settings)
        subs.subscribe("webhook", {"endpoint": receiver.url(), "filter": "care.clinical.v1.care_plan.*.goal_added"},
                       Scope(("*",)), HOSPITAL)
        subs.close()
        return asyncio.run(_latency(settings, receiver, rate, seconds))


def run_webhook_benchmark(base: Settings, *, events: int, rate: float, seconds: float, console: Console,
                          subscriptions: int = 4) -> dict[str, Any]:
    """The RESULT line is one subscription against one raw loop (sequential, as the target
    was set); with ``subscriptions`` > 1, K subscriptions against K concurrent loops too."""
    measured = {1: measure_throughput(base, events, 1)}
    if subscriptions > 1:
        measured[subscriptions] = measure_throughput(base, events, subscriptions)
    latencies = measure_latency(base, rate, seconds)
    ours, raw = measured[1]
    ratio = ours / raw
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    table = Table(title="careplan bench webhook (SQLite stores, embedded nats-server, local receiver)")
    for column in ("measure", "careplan", "raw httpx", "ratio", "target"):
        table.add_column(column)
    for k, (ours_k, raw_k) in measured.items():
        table.add_row(f"deliveries/s, {events:,} events × {k} subscription(s); raw: {k} concurrent loop(s)",
                      f"{ours_k:,.0f}", f"{raw_k:,.0f}", f"{ours_k / raw_k:.2f}", f"≥ {THROUGHPUT_TARGET}")
    table.add_row(f"commit → delivered, {rate:.0f}/s for {seconds:g} s ({len(latencies)} events)",
                  f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "", "", "")
    console.print(table)
    print(f"RESULT webhook_throughput ratio={ratio:.2f} target={THROUGHPUT_TARGET}")
    if subscriptions > 1:
        ours_k, raw_k = measured[subscriptions]
        print(f"RESULT webhook_throughput_{subscriptions}_subscriptions ratio={ours_k / raw_k:.2f} "
              f"target={THROUGHPUT_TARGET}")
    print(f"LATENCY webhook_commit_to_delivered p50_ms={p50:.1f} p99_ms={p99:.1f} rate={rate:g}")
    return {"throughput_ratio": ratio, "p50_ms": p50, "p99_ms": p99}
