"""A hospital system's subscriber to careplan events (runnable; the test suite runs it).

    python docs/examples/hospital_subscriber.py nats://hospital:PASSWORD@127.0.0.1:4222 hospital --drain

(as the `hospital` NATS user, whose consumer is `hospital`: docs/integration.md, Connecting)

It creates (or reuses) a durable pull consumer on the CARE stream filtered to what it
needs, validates nothing it does not use, acknowledges each message after handling it,
and checks the care application's ordering with ce-previoussequence.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

# Everything the care application publishes about care plans' strategy and risk.
FILTERS = [
    "care.clinical.v1.care_plan.*.strategy_changed",
    "care.clinical.v1.care_plan.*.emergency_support_activated",
    "care.clinical.v1.care_plan.*.risk_level_raised",
    "care.clinical.v1.care_plan.*.risk_level_lowered",
]


async def consume(url: str, durable: str, *, drain: bool = False) -> list[dict[str, str]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    config = ConsumerConfig(
        durable_name=durable,
        filter_subjects=FILTERS,
        deliver_policy=DeliverPolicy.ALL,  # or BY_START_TIME with opt_start_time to replay from a moment
        ack_policy=AckPolicy.EXPLICIT,
        max_deliver=10,
    )
    await js.add_consumer("CARE", config)  # idempotent for the same configuration
    sub = await js.pull_subscribe_bind(durable, stream="CARE")
    handled: list[dict[str, str]] = []
    try:
        while True:
            try:
                batch = await sub.fetch(batch=100, timeout=2)
            except NatsTimeout:
                if drain:
                    break
                continue
            for msg in batch:
                headers = msg.headers or {}
                event = json.loads(msg.data)
                handled.append(
                    {
                        "type": headers["ce-type"],
                        "plan": headers["ce-subject"],
                        "time": headers["ce-time"],
                        "reason": event.get("reason") or "",
                        "careplan_sequence": headers["ce-sequence"],
                    }
                )
                print(f"{headers['ce-time']} {headers['ce-type']} plan {headers['ce-subject']}: {event.get('reason')}")
                await msg.ack()  # after handling: a crash before this means redelivery, never loss
    finally:
        await nc.close()
    return handled


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("durable")
    parser.add_argument("--drain", action="store_true", help="stop when nothing new arrives for 2 s")
    args = parser.parse_args()
    asyncio.run(consume(args.url, args.durable, drain=args.drain))
