"""The whole system on one machine: embedded NATS (unless configured) and supervised
child processes (the registry's :data:`~services.registry.PROCESSES`: the care relay,
every service, the API). Used by `careplan up` and `careplan demo`."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from services.nats_auth import ADMIN_USER, PERMISSIONS_FILE, ensure_passwords, load_passwords, server_environment
from services.registry import PROCESSES, SERVICES
from services.shared import metrics
from services.shared.alarms import CRASH_LOOPING, Alarm
from services.shared.bus import EmbeddedNats, apply_streams_at, free_port, nats_store_key, with_credentials
from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: A child restarted this often within this many seconds is crash-looping (readiness: down).
CRASH_LOOP_RESTARTS = 3
CRASH_LOOP_WINDOW = 60.0
#: Written into the data dir for Prometheus's file-based discovery (deploy/monitoring/prometheus.yml).
SCRAPE_TARGETS_FILE = "prometheus-targets.json"


def closed_data_dir(path: Path) -> Path:
    """The data directory, made (or narrowed to) 0700: its stores, logs, tokens and NATS's
    files are the owner's only (every careplan process also runs with umask 077, so each file
    in it is 0600)."""
    data_dir = path.resolve()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if data_dir.stat().st_mode & 0o077:
        log.info("data directory %s was open to others: narrowed to 0700", data_dir)
        data_dir.chmod(0o700)
    return data_dir


def process_of(child: str) -> str:
    """The registry's process a child runs: ``service:assessment#2`` → ``service:assessment``."""
    return child.split("#", 1)[0]


@dataclass
class Child:
    """One supervised process: restarted with backoff if it dies, stopped with SIGTERM."""

    name: str
    args: list[str]
    env: dict[str, str]
    ready_file: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: When (monotonic) each restart happened: a burst of them is a crash loop.
    restarted_at: list[float] = field(default_factory=list)

    def state(self, now: float) -> str:
        """running, restarting (exited, about to start again) or crash-looping (it keeps dying)."""
        recent = [t for t in self.restarted_at if now - t < CRASH_LOOP_WINDOW]
        if len(recent) >= CRASH_LOOP_RESTARTS:
            return "crash-looping"
        if self.process is None or self.process.poll() is not None:
            return "restarting"
        return "running"

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.process = subprocess.Popen([*self.args, "--ready-file", str(self.ready_file)], env=self.env)

    def stop(self, timeout: float = 15) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class System:
    settings: Settings
    nats: EmbeddedNats | None = None
    nats_url: str = ""
    #: The NATS users' passwords when the server has users (default for the embedded one), else None.
    passwords: dict[str, str] | None = None
    api_url: str = ""
    children: list[Child] = field(default_factory=list)
    supervisor_file: Path | None = None
    metrics_dir: Path | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _watcher: threading.Thread | None = None
    #: A child's ``crash_looping`` alarm: logged here; its gauge is the API's, from the supervisor file.
    _crash_alarms: dict[str, Alarm] = field(default_factory=dict)

    def start(self, timeout: float = 60) -> System:
        data_dir = closed_data_dir(self.settings.data_dir)
        passwords_file = self.settings.nats_passwords_file
        if passwords_file is None and not self.settings.nats_url:
            # No NATS configured and no passwords given: the embedded server has users all the
            # same, with passwords generated once into the data dir (0600) and kept across restarts.
            passwords_file = ensure_passwords(data_dir)
        passwords = load_passwords(passwords_file) if passwords_file else None
        self.passwords = passwords
        cipher_key = self.settings.cipher_key.get_secret_value() if self.settings.cipher_key is not None else None
        store_key = nats_store_key(cipher_key) if cipher_key else None
        if self.settings.nats_url:
            self.nats_url = self.settings.nats_url
        else:
            assert passwords is not None  # the embedded server always has users (generated above)
            self.nats = EmbeddedNats(
                store_dir=data_dir / "nats", extra_args=["-c", str(PERMISSIONS_FILE)],
                env={**os.environ, **server_environment(passwords)}, probe_user=("auditor", passwords["auditor"]),
                store_key=store_key,
            ).start()
            self.nats_url = self.nats.url
        self._apply_streams(passwords)
        env = {**os.environ, "CAREPLAN_NATS_URL": self.nats_url, "CAREPLAN_DATA_DIR": str(data_dir)}
        env.pop("CAREPLAN_NATS_PASSWORDS_FILE", None)  # each process gets its own user, not every password
        if self.settings.escalation_policy_file is not None:
            env["CAREPLAN_ESCALATION_POLICY_FILE"] = str(self.settings.escalation_policy_file.resolve())
        # The API keeps one address for the system's lifetime, across restarts of its process.
        self.api_url = f"http://{self.settings.api_host}:{self.settings.api_port or free_port()}"
        env["CAREPLAN_API_PORT"] = self.api_url.rsplit(":", 1)[1]
        run_dir = Path(tempfile.mkdtemp(prefix="careplan-run-"))
        # The children's states, for the API's /readyz: a file, since it must work without NATS.
        self.supervisor_file = run_dir / "supervisor.json"
        env["CAREPLAN_SUPERVISOR_FILE"] = str(self.supervisor_file)
        # Every child records its metrics here; the API's /metrics sums them (multiprocess mode).
        self.metrics_dir = run_dir / "metrics"
        self.metrics_dir.mkdir()
        env[metrics.MULTIPROC_ENV] = str(self.metrics_dir)
        self.children = self.make_children(env, run_dir)
        if passwords is not None:
            users = {process.name: process.nats_user for process in PROCESSES}
            # The API reads only the status bucket (for /readyz): as the read-only auditor.
            users["api"] = users.get("api") or "auditor"
            for child in self.children:
                if (user := users.get(process_of(child.name))) is not None:
                    child.env = {**child.env, "CAREPLAN_NATS_URL": with_credentials(self.nats_url, user, passwords[user])}
        for child in self.children:
            child.start()
        self.write_supervisor_file()
        deadline = time.monotonic() + timeout
        for child in self.children:
            while not child.ready_file.exists():
                if time.monotonic() > deadline:
                    self.stop()
                    msg = f"{child.name} did not become ready within {timeout:.0f} s"
                    raise RuntimeError(msg)
                if child.process is not None and child.process.poll() is not None:
                    self.stop()
                    msg = f"{child.name} exited with status {child.process.returncode} while starting"
                    raise RuntimeError(msg)
                time.sleep(0.05)
        # Where `careplan status` finds this system's API by default.
        self.write_ready_file(data_dir / "careplan-up.json")
        # Where Prometheus finds it (file discovery: deploy/monitoring/prometheus.yml).
        self.write_scrape_targets(data_dir / SCRAPE_TARGETS_FILE)
        self._watcher = threading.Thread(target=self._supervise, name="careplan-supervisor", daemon=True)
        self._watcher.start()
        if self.settings.retention_days:  # the daily retention run (issue 16; off without a period)
            threading.Thread(target=self._retention, args=(env,), name="careplan-retention", daemon=True).start()
        return self

    def make_children(self, env: dict[str, str], run_dir: Path) -> list[Child]:
        """One child per process of the registry; ``service_instances`` > 1 runs that many of
        each partitionable service (``service:<name>``, ``service:<name>#2``, ...) over
        ``consumer_partitions`` (8 unless set). A service that cannot be partitioned runs once
        with none (its refusal would otherwise crash-loop it); the supervisor restarts it."""
        from services.shared.partitions import DEFAULT_PARTITIONS

        instances = self.settings.service_instances
        partitions = self.settings.consumer_partitions
        if instances > 1 and partitions <= 1:
            partitions = DEFAULT_PARTITIONS
        services = {s.process: s for s in SERVICES}
        children = []
        for process in PROCESSES:
            count, own = 1, env
            if (service := services.get(process.name)) is not None:
                if service.unpartitioned is not None:
                    own = {**env, "CAREPLAN_CONSUMER_PARTITIONS": "0"}
                else:
                    count, own = instances, {**env, "CAREPLAN_CONSUMER_PARTITIONS": str(partitions)}
            for i in range(count):
                name = process.name if i == 0 else f"{process.name}#{i + 1}"
                children.append(Child(name, [sys.executable, "-m", "services.cli", *process.args], dict(own),
                                      run_dir / f"{name.replace(':', '-')}.ready"))
        return children

    def _retention(self, env: dict[str, str], first_delay: float = 60.0) -> None:
        """``careplan retention run`` a minute after start, then every ``retention_interval_hours``:
        a process of its own (what it erases is recorded by the erasure itself); the log says
        how many were erased or refused, never who."""
        delay = first_delay
        while not self._stopping.wait(delay):
            delay = self.settings.retention_interval_hours * 3600
            done = subprocess.run([sys.executable, "-m", "services.cli", "retention", "run", "--json"],
                                  env={**env, "CAREPLAN_NATS_URL": self.url_as(ADMIN_USER),
                                       "CAREPLAN_RETENTION_DAYS": str(self.settings.retention_days)},
                                  capture_output=True, text=True, check=False)
            try:
                verdicts = [j["verdict"] for j in json.loads(done.stdout[done.stdout.index("["):])]
            except ValueError:
                log.error("retention run failed (exit %s); next run in %.0f h", done.returncode,
                          self.settings.retention_interval_hours)
                continue
            log.info("retention run: %d erased, %d refused (see `careplan retention run --dry-run`)",
                     verdicts.count("erased now"), verdicts.count("refused"))

    def url_as(self, user: str) -> str:
        """The NATS URL with ``user``'s credentials (as it is when the server has no users)."""
        return with_credentials(self.nats_url, user, self.passwords[user]) if self.passwords else self.nats_url

    def _apply_streams(self, passwords: dict[str, str] | None) -> None:
        """`up` owns the streams: it creates them, or brings them to its settings, before any
        of its processes starts (they only check them). With users, as the admin user."""
        url = with_credentials(self.nats_url, ADMIN_USER, passwords[ADMIN_USER]) if passwords else self.nats_url
        try:
            # A thread of its own, so that this works from inside a running event loop too.
            with ThreadPoolExecutor(1) as pool:
                changes = pool.submit(asyncio.run, apply_streams_at(url, self.settings)).result()
        except BaseException:
            self.stop()
            raise
        for change in changes:
            log.info("%s", change)

    def _supervise(self) -> None:
        backoff: dict[str, float] = {}
        while not self._stopping.wait(0.5):
            for child in self.children:
                if child.process is not None and child.process.poll() is not None and not self._stopping.is_set():
                    delay = backoff.get(child.name, 0.5)
                    log.warning("%s exited with %s; restarting in %.1f s", child.name, child.process.returncode, delay)
                    self._forget_metrics_of(child.process.pid)
                    self.write_supervisor_file()  # restarting, meanwhile
                    if self._stopping.wait(delay):
                        return
                    child.restarts += 1
                    child.restarted_at = [*child.restarted_at[-CRASH_LOOP_RESTARTS:], time.monotonic()]
                    child.start()
                    backoff[child.name] = min(delay * 2, 10)
            self._crash_looping()
            self.write_supervisor_file()

    def _forget_metrics_of(self, pid: int) -> None:
        """A dead child's live gauges leave /metrics (its counters stay in the sums)."""
        if self.metrics_dir is not None:
            metrics.guarded("supervisor mark_process_dead", lambda: metrics.mark_process_dead(pid, self.metrics_dir))

    def _crash_looping(self) -> None:
        """One ERROR when a child becomes crash-looping, one INFO when it runs stably again
        (no restart within the crash-loop window)."""
        now = time.monotonic()
        for child in self.children:
            alarm = self._crash_alarms.get(child.name)
            if alarm is None:
                alarm = self._crash_alarms[child.name] = Alarm(CRASH_LOOPING, child.name, metric=False)
            state = child.state(now)
            if state == "crash-looping":
                alarm.raise_(f"restarted {CRASH_LOOP_RESTARTS} times within {CRASH_LOOP_WINDOW:.0f} s")
            elif state == "running":
                alarm.clear()

    def supervision(self) -> dict[str, object]:
        """Each child's state and restart count (what /readyz adds to the status records)."""
        now = time.monotonic()
        return {"at": time.time(),
                "children": {c.name: {"state": c.state(now), "restarts": c.restarts} for c in self.children}}

    def write_supervisor_file(self) -> None:
        """Rewritten atomically, so the API never reads half of it."""
        if self.supervisor_file is None:
            return
        tmp = self.supervisor_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.supervision()))
        tmp.replace(self.supervisor_file)

    def ready_info(self) -> dict[str, object]:
        return {
            "nats": self.nats_url,
            "api": self.api_url,
            "data_dir": str(self.settings.data_dir.resolve()),
            "processes": {c.name: c.process.pid for c in self.children if c.process is not None},
        }

    def ready_line(self) -> str:
        where = "embedded" if self.nats is not None else "configured"
        parts = [f"NATS {self.nats_url} ({where}, stream {self.settings.stream_name})"]
        parts += [f"{c.name} pid {c.process.pid if c.process else '-'}" for c in self.children]
        parts.append(f"store {self.settings.database} in {self.settings.data_dir.resolve()}")
        parts.append(f"HTTP API {self.api_url} (docs {self.api_url}/docs, web pages {self.api_url}/ui/)")
        return "careplan ready: " + "; ".join(parts)

    def write_ready_file(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.ready_info()))
        tmp.replace(path)  # readers never see a half-written file

    def write_scrape_targets(self, path: Path) -> None:
        """The API's address in Prometheus's file-discovery form: the one target whose
        /metrics shows every process. Kept after a stop (Prometheus then reports the target
        down, which is the truth); rewritten on the next start."""
        host_port = self.api_url.split("://", 1)[1]
        targets = [{"targets": [host_port]}]
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(targets, indent=2))
        tmp.replace(path)

    def stop(self) -> None:
        self._stopping.set()
        (self.settings.data_dir.resolve() / "careplan-up.json").unlink(missing_ok=True)
        for child in reversed(self.children):
            child.stop()
        if self.nats is not None:
            self.nats.stop()

    def __enter__(self) -> System:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
