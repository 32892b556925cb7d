"""``careplan bench relay``.

(a) Throughput: N stored events relayed from position 0 (read, decode, CloudEvent,
    publish_async, PubAck, position recorded) vs. raw nats-py ``publish_async`` of the
    same subjects, bodies and headers to the same server, same window. Target ≥ 0.8×.
(b) Latency from command commit to delivery at a JetStream subscriber, at a steady rate
    of commands per second, with the relay in a process of its own.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import DeliverPolicy, StreamConfig
from rich.console import Console
from rich.table import Table

from domain.base import Actor, CommandContext, Role
from domain.care_plan import CarePlan
from domain.catalogues.care import CopingSkill
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.bus import EmbeddedNats, apply_streams_at
from services.shared.cloudevents import cloudevent
from services.shared.commands import CommandMeta
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings

THROUGHPUT_TARGET = 0.8
ACTOR = Actor(id="clinician-17", role=Role.CLINICIAN)
NOTE = "Practised a breathing exercise before a difficult call; noticed the urge to withdraw."


def _store_events(app: CareApplication, events: int, plans: int = 20) -> None:
    ctx = CommandContext(actor=ACTOR, at=app.clock(), correlation_id=c.uuid4())
    aggregates = []
    for i in range(plans):
        plan = CarePlan.draft(
            c.uuid4(), client_id=f"client-{i}", title="Bench", strategy=Strategy.SHORT_TERM_MODERATE,
            therapy_models=[TherapyModel.STEADY_PROGRESS], ctx=ctx,
        )
        plan.target_coping_skill(CopingSkill.COMMUNICATION, ctx=ctx)
        aggregates.append(plan)
    app.save(*aggregates)
    written = 2 * plans
    while written < events:
        for plan in aggregates:
            for _ in range(25):
                plan.record_skill_progress(CopingSkill.COMMUNICATION, note=NOTE, ctx=ctx)
            written += 25
        app.save(*aggregates)


async def _relay_rate(settings: Settings, url: str, events: int) -> float:
    stores = OutboxStores(settings, "care")
    relay = Relay(
        settings, application="care", nats_url=url,
        recorder=stores.recorder, mapper=stores.mapper, tracking=stores.tracking,
    )
    stop = asyncio.Event()
    start = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    # Woken by the relay's own word (a position recorded, a change of state), not by polling
    # it every millisecond on the loop the relay runs on.
    while relay.stats.position < events and not task.done():
        relay.stats.changed.clear()
        await asyncio.wait([asyncio.ensure_future(relay.stats.changed.wait()), task], timeout=1,
                           return_when=asyncio.FIRST_COMPLETED)
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    stores.close()
    return events / elapsed


async def _raw_rate(settings: Settings, url: str, events: int, run: int) -> float:
    stores = OutboxStores(settings, "care")
    messages = []
    previous = 0
    for n in stores.recorder.select_notifications(start=1, limit=events):
        m = cloudevent("care", n, stores.mapper.to_public_json(n), previous)
        previous = n.id
        headers = dict(m.headers, **{"Nats-Msg-Id": f"raw{run}:{n.id}"})
        messages.append(("raw" + m.subject[len("care"):], m.body, headers))
    stores.close()
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=settings.relay_window + 1)
    try:
        await js.add_stream(StreamConfig(name="RAW", subjects=["raw.>"], duplicate_window=settings.stream_duplicate_window_seconds))
    except Exception:  # noqa: BLE001 - exists from an earlier round
        pass
    start = time.perf_counter()
    window: list[Any] = []
    for subject, body, headers in messages:
        if len(window) >= settings.relay_window:
            await window.pop(0)
        window.append(await js.publish_async(subject, body, headers=headers))
    for future in window:
        await future
    elapsed = time.perf_counter() - start
    await nc.close()
    return events / elapsed


def measure_throughput(base: Settings, events: int, rounds: int = 2) -> tuple[float, float]:
    ours, raw = [], []
    for run in range(rounds):
        with tempfile.TemporaryDirectory(prefix="careplan-bench-relay-") as tmp:
            settings = base.model_copy(update={"data_dir": Path(tmp), "database": "sqlite", "nats_url": None})
            app = CareApplication(settings)
            _store_events(app, events)
            app.close()
            with EmbeddedNats(store_dir=Path(tmp) / "nats") as server:
                asyncio.run(apply_streams_at(server.url, settings))  # as `careplan up` would
                # alternate the order so neither side always meets a warmer server
                if run % 2 == 0:
                    ours.append(asyncio.run(_relay_rate(settings, server.url, events)))
                    raw.append(asyncio.run(_raw_rate(settings, server.url, events, run)))
                else:
                    raw.append(asyncio.run(_raw_rate(settings, server.url, events, run)))
                    ours.append(asyncio.run(_relay_rate(settings, server.url, events)))
    return statistics.median(ours), statistics.median(raw)


def measure_latency(base: Settings, rate: float, seconds: float) -> list[float]:
    """Milliseconds from the commit of each command to its delivery to a subscriber."""
    with tempfile.TemporaryDirectory(prefix="careplan-bench-latency-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp), "database": "sqlite"})
        with EmbeddedNats(store_dir=Path(tmp) / "nats") as server:
            asyncio.run(apply_streams_at(server.url, settings))  # as `careplan up` would
            env = {"CAREPLAN_DATA_DIR": tmp, "CAREPLAN_NATS_URL": server.url, "CAREPLAN_DATABASE": "sqlite"}
            ready = Path(tmp) / "relay.ready"
            relay = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "relay", "--ready-file", str(ready)],
                env={**_os_env(), **env}, stderr=subprocess.DEVNULL,
            )
            try:
                while not ready.exists():
                    time.sleep(0.02)
                return asyncio.run(_latency(settings, server.url, rate, seconds))
            finally:
                relay.terminate()
                relay.wait()


def _os_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}


async def _latency(settings: Settings, url: str, rate: float, seconds: float) -> list[float]:
    committed: dict[str, float] = {}
    delivered: dict[str, float] = {}
    total = int(rate * seconds)
    nc = await nats.connect(url)
    js = nc.jetstream()
    done = asyncio.Event()

    async def on_message(msg: Any) -> None:
        delivered[msg.headers["ce-id"]] = time.time()
        if len(delivered) >= total + 2:
            done.set()

    sub = await js.subscribe("care.>", cb=on_message, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)

    def write() -> None:
        app = CareApplication(settings)
        meta = CommandMeta(actor=ACTOR)
        plan_id = app.handle(
            c.DraftCarePlan(client_id="client-1", title="Latency", strategy=Strategy.SHORT_TERM_MODERATE,
                            therapy_models=[TherapyModel.STEADY_PROGRESS]),
            meta,
        ).aggregate_id
        app.handle(c.TargetCopingSkill(plan_id=plan_id, skill=CopingSkill.COMMUNICATION), meta)
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            result = app.handle(c.RecordSkillProgress(plan_id=plan_id, skill=CopingSkill.COMMUNICATION, note=NOTE), meta)
            committed[str(result.event_ids[0])] = time.time()
        app.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        await asyncio.wait_for(done.wait(), timeout=seconds * 3 + 30)
    finally:
        writer.join()
        await sub.unsubscribe()
        await nc.close()
    return [(delivered[k] - t) * 1000 for k, t in committed.items() if k in delivered]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def run_relay_benchmark(base: Settings, *, events: int, rate: float, seconds: float, console: Console) -> dict[str, float]:
    ours, raw = measure_throughput(base, events)
    latencies = measure_latency(base, rate, seconds)
    ratio = ours / raw
    table = Table(title="careplan bench relay (SQLite store, embedded nats-server)")
    table.add_column("measure")
    table.add_column("careplan relay", justify="right")
    table.add_column("raw nats-py", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    table.add_row(f"events published and acked /s ({events:,})", f"{ours:,.0f}", f"{raw:,.0f}", f"{ratio:.2f}", f"≥ {THROUGHPUT_TARGET}")
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    table.add_row(
        f"commit → subscriber at {rate:.0f} commands/s, {len(latencies):,} events", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "", "", ""
    )
    console.print(table)
    print(f"LATENCY relay_commit_to_subscriber p50_ms={p50:.1f} p99_ms={p99:.1f} rate={rate:.0f}/s samples={len(latencies)}")
    print(f"RESULT relay_throughput ratio={ratio:.2f} target={THROUGHPUT_TARGET}")
    return {"ratio": ratio, "p50": p50, "p99": p99}
