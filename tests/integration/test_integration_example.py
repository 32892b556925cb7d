"""docs/examples/hospital_subscriber.py runs as documented against a live relay."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.care.application import CareApplication
from services.shared.bus import EmbeddedNats
from services.shared.settings import Settings
from tests.support.bus import InProcessRelay, with_streams
from tests.support.story import every_event_story

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "hospital_subscriber.py"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


async def test_the_documented_subscriber_receives_strategy_and_risk_changes(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    spec = importlib.util.spec_from_file_location("hospital_subscriber", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    settings = Settings(data_dir=tmp_path / "data")
    app = CareApplication(settings)
    try:
        every_event_story(app)
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(app.recorder.max_notification_id())
    finally:
        app.close()
    handled = await example.consume(nats_server.url, "ehr-risk", drain=True)
    types = [h["type"].rsplit(".", 1)[1] for h in handled]
    assert types == ["strategy_changed", "risk_level_raised", "emergency_support_activated", "risk_level_lowered"]
    assert all(h["reason"] for h in handled)
    # durable: a second run resumes after the acknowledged messages
    assert await example.consume(nats_server.url, "ehr-risk", drain=True) == []
