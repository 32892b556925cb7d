"""Data closed at rest (issue 13): with a cipher key configured, `careplan up` keeps no
clinical text readable in any file under its data directory — the stores (eventsourcing's
cipher), the relay positions, the access log, and JetStream's own file store (its `cipher`,
keyed from the same secret) — and every directory there is its user's only (0700) and every
file 0600."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from eventsourcing.cipher import AESCipher


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    msg = f"timed out waiting for {what}"
    raise AssertionError(msg)


def token(data: Path, env: dict[str, str], actor: str, role: str) -> str:
    made = subprocess.run([sys.executable, "-m", "services.cli", "api", "add-token", "--actor", actor, "--role", role,
                           "--all-clients", "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True)
    return made.stdout.strip().splitlines()[-1]


def test_with_a_cipher_key_no_clinical_text_is_readable_in_any_file_and_every_file_is_the_owners(tmp_path: Path) -> None:
    sentinel = f"SENTINEL-{secrets.token_hex(8)}"
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    data.mkdir(mode=0o755)  # a folder someone made open: `up` narrows it
    os.chmod(data, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREPLAN_", "PROMETHEUS_"))}
    env["CAREPLAN_CIPHER_KEY"] = AESCipher.create_key(32)
    clinician = {"Authorization": f"Bearer {token(data, env, 'clinician-5', 'clinician')}"}
    supervisor = {"Authorization": f"Bearer {token(data, env, 'supervisor-3', 'supervisor')}"}
    with (tmp_path / "up.log").open("w") as log:
        up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file",
                               str(ready)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(ready.exists, 90, "careplan up")
        url = json.loads(ready.read_text())["api"]
        plan = httpx.post(f"{url}/plans", headers=clinician, timeout=30, json={
            "client_id": "client-rest-1", "title": "Rest", "strategy": "short_term_moderate",
            "therapy_models": ["steady_drive"]})
        assert plan.status_code == 201, plan.text
        plan_id = plan.json()["aggregate_id"]
        for step, body in (("record-consent", {"note": f"Consent given; {sentinel}"}),
                           ("explain-confidentiality", {"note": "Explained"}),
                           ("raise-crisis", {"reason": f"Disclosed a plan; {sentinel}"})):
            answer = httpx.post(f"{url}/plans/{plan_id}/{step}", headers=clinician, timeout=30, json=body)
            assert answer.status_code == 200, (step, answer.text)

        def escalated() -> bool:
            crises = httpx.get(f"{url}/escalations", headers=supervisor, timeout=30).json()
            return any(c["plan_id"] == plan_id for c in crises)

        wait_for(escalated, 60, "the crisis escalated")

        def relayed() -> bool:
            text = httpx.get(f"{url}/metrics", timeout=30).text
            lags = [line for line in text.splitlines() if line.startswith("careplan_relay_lag_events{")]
            return bool(lags) and all(line.rsplit(" ", 1)[1] in ("0.0", "0") for line in lags)

        wait_for(relayed, 60, "every store relayed to the stream")
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert (tmp_path / "up.log").read_text().count(sentinel) == 0

    # The sentinel went into the stores and the stream: it must be readable in no file.
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any("jetstream" in p.parts for p in files), "JetStream's store is not under the data dir"
    readable = [str(p.relative_to(data)) for p in files if sentinel.encode() in p.read_bytes()]
    assert readable == []
    # Every directory 0700, every file 0600 (nothing for the group or others).
    open_to_others = [(str(p.relative_to(data)), oct(stat.S_IMODE(p.stat().st_mode)))
                      for p in [data, *data.rglob("*")] if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert open_to_others == []


def test_an_encrypted_store_keeps_the_permissions_file_it_is_given(tmp_path: Path) -> None:
    """With users, `up` gives nats-server the permissions file: the encrypted store's own
    configuration includes it (nats-server takes one -c), so users still apply."""
    import asyncio

    import nats

    from services.nats_auth import PERMISSIONS_FILE, USERS, server_environment
    from services.shared.bus import EmbeddedNats, nats_store_key, with_credentials

    passwords = {user: secrets.token_urlsafe(16) for user in USERS}
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_args=["-c", str(PERMISSIONS_FILE)],
                      env={**os.environ, **server_environment(passwords)}, probe_user=("auditor", passwords["auditor"]),
                      store_key=nats_store_key("k" * 32)) as server:
        assert "ChaCha20-Poly1305" in (tmp_path / "nats" / "nats-server.log").read_text()
        assert passwords["auditor"] not in (tmp_path / "nats" / "careplan-nats.conf").read_text()

        async def anonymous_refused() -> bool:
            try:
                nc = await nats.connect(server.url, allow_reconnect=False, connect_timeout=2)
            except Exception:  # noqa: BLE001 - refused, as it should be
                return True
            await nc.close()
            return False

        assert asyncio.run(anonymous_refused())

        async def auditor_reads() -> None:
            nc = await nats.connect(with_credentials(server.url, "auditor", passwords["auditor"]), connect_timeout=2)
            await nc.close()

        asyncio.run(auditor_reads())
