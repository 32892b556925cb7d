"""A 3-node JetStream cluster from deploy/nats/cluster/*.conf (as they are, with a CA and
certificates made at test time in ./tls/ of their working directory): clients only over TLS,
routes over mutual TLS; a stream with 3 replicas, and one node killed while the relay
publishes: nothing is lost."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from services.care.application import CareApplication
from services.shared.bus import nats_server_binary
from services.shared.settings import Settings
from tests.integration.test_relay import assert_exactly_once_in_commit_order, write_load, write_plans
from tests.support.bus import InProcessRelay, create_streams, read_stream
from tests.support.tls import make_tls

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "cluster"
CLIENT_PORTS = (24221, 24222, 24223)
URLS = ",".join(f"tls://127.0.0.1:{p}" for p in CLIENT_PORTS)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[bytes]]]:
    # the configs read ./tls/{ca,server-cert,server-key}.pem; every client here (the relay's
    # included) trusts the test CA through SSL_CERT_FILE, as an operator's processes would
    monkeypatch.setenv("SSL_CERT_FILE", str(make_tls(tmp_path / "tls") / "ca.pem"))
    busy = [p for p in (*CLIENT_PORTS, 26221, 26222, 26223) if not _port_free(p)]
    if busy:
        pytest.fail(f"ports {busy} of deploy/nats/cluster are taken by another process", pytrace=False)
    nodes = []
    for i in (1, 2, 3):
        log = (tmp_path / f"n{i}.log").open("wb")
        nodes.append(
            subprocess.Popen([nats_server_binary(), "-c", str(CLUSTER_DIR / f"n{i}.conf")], cwd=tmp_path, stdout=log, stderr=log)
        )
    try:
        asyncio.run(_wait_for_jetstream_cluster())
        yield nodes
    finally:
        for node in nodes:
            if node.poll() is None:
                node.terminate()
        for node in nodes:
            node.wait(timeout=20)


async def _wait_for_jetstream_cluster(timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await nats.connect(URLS.split(","), connect_timeout=1, max_reconnect_attempts=1, allow_reconnect=False)
            try:
                info = await nc.jetstream().account_info()
                if info is not None:
                    # a 3-replica stream needs all three peers: try to create and drop one
                    from nats.js.api import StreamConfig

                    js = nc.jetstream()
                    await js.add_stream(StreamConfig(name="PROBE", subjects=["probe.>"], num_replicas=3))
                    await js.delete_stream("PROBE")
                    return
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def test_a_node_killed_while_publishing_loses_nothing(tmp_path: Path, cluster: list[subprocess.Popen[bytes]]) -> None:
    settings = Settings(data_dir=tmp_path / "data", stream_replicas=3, relay_ack_timeout=3)
    create_streams(URLS, settings)
    app = CareApplication(settings)
    try:
        plan_ids = write_plans(app, 10)
        writer = threading.Thread(target=write_load, args=(app, plan_ids, 3000))
        async with InProcessRelay(settings, URLS) as relay:
            writer.start()
            await relay.wait_position(500)
            nc = await nats.connect(URLS.split(","))
            info = await nc.jetstream().stream_info(settings.stream_name)
            await nc.close()
            assert info.config.num_replicas == 3
            leader = info.cluster.leader if info.cluster else None
            # Kill the stream leader: the hardest case (a new leader must be elected).
            victim = next(i for i, name in enumerate(("careplan-n1", "careplan-n2", "careplan-n3")) if name == leader)
            cluster[victim].kill()
            cluster[victim].wait()
            writer.join()
            await relay.wait_position(app.recorder.max_notification_id(), timeout=120)
        surviving = ",".join(f"nats://127.0.0.1:{p}" for i, p in enumerate(CLIENT_PORTS) if i != victim)
        messages = await read_stream(surviving)
        assert len(messages) == 3020
        assert_exactly_once_in_commit_order(messages, app)
    finally:
        app.close()


async def test_clients_connect_only_over_tls_and_routes_form_over_mutual_tls(
    tmp_path: Path, cluster: list[subprocess.Popen[bytes]],
) -> None:
    # over TLS, trusting the CA: a replicated stream works (the fixture made and dropped one too)
    nc = await nats.connect(URLS.split(","), max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        from nats.js.api import StreamConfig

        await js.add_stream(StreamConfig(name="TLS_R3", subjects=["tls.>"], num_replicas=3))
        assert (await js.publish("tls.one", b"x")).seq == 1
        info = await js.stream_info("TLS_R3")
        assert info.cluster is not None and info.cluster.leader and len(info.cluster.replicas or []) == 2
        # the replicas catch up over the TLS routes (under load not at once, but within seconds)
        deadline = asyncio.get_running_loop().time() + 30
        while not all(r.current for r in info.cluster.replicas or []):
            assert asyncio.get_running_loop().time() < deadline, info.cluster
            await asyncio.sleep(0.2)
            info = await js.stream_info("TLS_R3")
            assert info.cluster is not None
        await js.delete_stream("TLS_R3")
    finally:
        await nc.close()
    # a plain connection: the server asks for TLS and answers nothing in clear text but an error
    for port in CLIENT_PORTS:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            greeting = s.recv(4096).decode()
            assert '"tls_required":true' in greeting, greeting
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
            try:
                answer = s.recv(4096)
            except OSError:
                answer = b""
            assert b"PONG" not in answer, answer
    # a client that trusts no such CA is refused too (the certificate does not verify)
    import ssl

    with pytest.raises(Exception):  # noqa: B017 - a TLS verification failure, however nats-py wraps it
        await nats.connect(URLS.split(",")[0], tls=ssl.create_default_context(cafile=None, capath=str(tmp_path)),
                           allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
    # the routes are up, each node knows both others (over mutual TLS: the configs' cluster.tls verify)
    logs = "".join((tmp_path / f"n{i}.log").read_text(errors="replace") for i in (1, 2, 3))
    assert "Route connection created" in logs and "JetStream cluster new metadata leader" in logs
