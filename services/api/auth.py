"""Bearer tokens → who is calling, in which role, for which clients.

Tokens are configured in a JSON file (``CAREPLAN_API_TOKENS_FILE``) that holds only their
SHA-256 digests; ``careplan api add-token`` makes a token, stores its digest and prints
the token once. A token is long and random, so a plain digest (no salt, no stretching)
is enough: it cannot be guessed from its digest, and lookups stay one dictionary access.

Each token has a non-secret id (``list-tokens`` shows it, ``revoke-token`` takes it), may
expire, and may be revoked. The running API notices a change of the file (its inode, size
or modification time, looked at no more than once a second) and reads it again, so a new,
revoked or expired token takes effect without a restart. Writers take turns on a lock file
and replace the file atomically (a unique 0600 temporary file in the same folder, fsync,
rename), so concurrent ``add-token`` calls all land and no reader sees half a file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.base import Actor, Role

log = logging.getLogger(__name__)

#: Roles a token may carry (services act through the bus, not the API).
API_ROLES = (Role.CLINICIAN, Role.SUPERVISOR, Role.AUDITOR, Role.INTEGRATION)
ALL_CLIENTS = "*"
#: Roles whose tokens must name their clients or say ``--all-clients`` explicitly: all of them
#: (a token made before this rule, stored without clients, still reads as all clients).
EXPLICIT_SCOPE_ROLES = API_ROLES
#: How often, at most, the running API looks at the token file for a change.
CHECK_INTERVAL_SECONDS = 1.0


class Principal(BaseModel):
    """The caller behind a token. A clinician acts only for the clients listed (``*``: all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor_id: str = Field(min_length=1, max_length=200)
    role: Role
    clients: tuple[str, ...] = (ALL_CLIENTS,)

    @property
    def actor(self) -> Actor:
        return Actor(id=self.actor_id, role=self.role)

    def may_act_for(self, client_id: str | None) -> bool:
        """None (a record whose client is unknown, e.g. a fail-safe crisis): all-clients tokens only."""
        return ALL_CLIENTS in self.clients or (client_id is not None and client_id in self.clients)


class StoredToken(Principal):
    """One line of the token file. Files written before ids and expiry existed have neither:
    such a token gets an id derived from its digest and never expires."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    id: str = Field(default="", pattern=r"^$|^tok-[0-9a-f]{12,32}$")
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    @model_validator(mode="after")
    def _derived_id(self) -> StoredToken:
        if not self.id:
            object.__setattr__(self, "id", derived_id(self.sha256))
        return self

    @property
    def principal(self) -> Principal:
        return Principal(actor_id=self.actor_id, role=self.role, clients=self.clients)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


class TokenFile(BaseModel):
    tokens: list[StoredToken] = []


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def derived_id(sha256: str) -> str:
    """The id of a token stored without one: the start of its digest (which is not secret
    either: the token cannot be found from it)."""
    return f"tok-{sha256[:12]}"


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _read(path: Path) -> TokenFile:
    return TokenFile.model_validate_json(path.read_bytes()) if path.exists() else TokenFile()


class TokenRegistry:
    """The tokens of one file, read again when the file changes.

    ``principal`` is on every request's path: it compares a monotonic clock reading with the
    next check's time, and only once a second stats the file."""

    def __init__(self, tokens: list[StoredToken], path: Path | None = None, *,
                 check_interval: float = CHECK_INTERVAL_SECONDS, clock: Callable[[], datetime] = _now) -> None:
        self._path = path
        self._check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: tuple[int, int, int, int] | None = None
        self._next_check = time.monotonic() + check_interval
        self._use(tokens)

    def _use(self, tokens: list[StoredToken]) -> None:
        usable = [t for t in tokens if t.revoked_at is None]
        # One assignment: a request in another thread sees the old or the new table, whole.
        self._by_digest = {t.sha256: (t.principal, t.expires_at) for t in usable}

    @classmethod
    def load(cls, path: Path | None, *, check_interval: float = CHECK_INTERVAL_SECONDS,
             clock: Callable[[], datetime] = _now) -> TokenRegistry:
        registry = cls([], path, check_interval=check_interval, clock=clock)
        registry.reload()
        return registry

    def _signature(self) -> tuple[int, int, int, int] | None:
        assert self._path is not None
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def reload(self) -> None:
        """Reads the file again if it changed since it was last read."""
        if self._path is None:
            return
        with self._lock:
            seen = self._signature()
            if seen == self._seen and seen is not None:
                return
            try:
                tokens = _read(self._path).tokens
            except (OSError, ValueError) as error:
                # A file the registry cannot read keeps the last good table (a partial file
                # cannot occur: writers rename whole files into place).
                log.error("API token file %s unreadable, keeping the tokens read before: %s", self._path,
                          type(error).__name__)
                return
            self._use(tokens)
            self._seen = seen

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + self._check_interval
        self.reload()

    def __len__(self) -> int:
        self._maybe_reload()
        return len(self._by_digest)

    def principal(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer <token>`` header, or None (no such
        token, revoked, or expired)."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        # Looking up the digest, not the token, leaks nothing through timing: an
        # attacker cannot steer which digest a guess produces.
        return self.principal_of_digest(digest(token.strip()))

    def principal_of_digest(self, sha256: str) -> Principal | None:
        """The principal of the token with this digest, or None (no such token, revoked, or
        expired): the web pages' sessions keep the digest, never the token, and ask again on
        every request, so a token revoked later ends its sessions too."""
        self._maybe_reload()
        found = self._by_digest.get(sha256)
        if found is None:
            return None
        principal, expires_at = found
        if expires_at is not None and expires_at <= self._clock():
            return None
        return principal


# --------------------------------------------------------------------- writing


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (across processes): an exclusive flock on ``<file>.lock``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, content: TokenFile) -> None:
    """Atomically: a unique temporary file (mkstemp makes it 0600) in the same folder,
    written and fsynced, renamed over the file, the folder fsynced."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(content.model_dump_json(indent=2, exclude_none=True))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


@contextlib.contextmanager
def _editing(path: Path) -> Iterator[TokenFile]:
    with _locked(path):
        current = _read(path)
        yield current
        _write(path, current)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s`` → a timedelta (positive, at most ten years)."""
    match = _DURATION.match(text)
    if match is None:
        msg = f"a duration is a whole number and a unit (s, m, h, d, w), e.g. 30d, not {text!r}"
        raise ValueError(msg)
    delta = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    if not timedelta(0) < delta <= timedelta(days=3653):
        msg = f"a token's lifetime must be more than 0 and at most ten years, not {text!r}"
        raise ValueError(msg)
    return delta


def add_token(path: Path, *, actor_id: str, role: Role, clients: tuple[str, ...] | None = None,
              expires_at: datetime | None = None, now: datetime | None = None) -> str:
    """Makes a new token for ``actor_id``, stores its digest in ``path`` and returns the
    token (the only time it is seen). See :func:`add_token_with_id` for its id too."""
    return add_token_with_id(path, actor_id=actor_id, role=role, clients=clients, expires_at=expires_at, now=now)[1]


def add_token_with_id(path: Path, *, actor_id: str, role: Role, clients: tuple[str, ...] | None,
                      expires_at: datetime | None = None, now: datetime | None = None) -> tuple[str, str]:
    """(id, token) of a new token. ``clients`` None (not given) is refused: a token names the
    clients it serves, or ``(ALL_CLIENTS,)`` (``--all-clients``)."""
    if role not in API_ROLES:
        msg = f"role {role.value!r} cannot hold an API token; one of: {', '.join(r.value for r in API_ROLES)}"
        raise ValueError(msg)
    if not clients:
        if role in EXPLICIT_SCOPE_ROLES:
            article = "an" if role.value[0] in "aeiou" else "a"
            msg = (f"{article} {role.value} token must name the clients it serves (--client C, repeatable) "
                   "or say --all-clients explicitly")
            raise ValueError(msg)
        clients = (ALL_CLIENTS,)
    now = now or _now()
    if expires_at is not None:
        if expires_at.tzinfo is None:
            msg = "an expiry must carry a time zone, e.g. 2026-12-31T00:00:00Z"
            raise ValueError(msg)
        if expires_at <= now:
            msg = f"the expiry {expires_at.isoformat()} is not in the future"
            raise ValueError(msg)
    token = secrets.token_urlsafe(32)
    stored = StoredToken(actor_id=actor_id, role=role, clients=clients, sha256=digest(token),
                         id=f"tok-{secrets.token_hex(8)}", created_at=now, expires_at=expires_at)
    with _editing(path) as current:
        current.tokens.append(stored)
    return stored.id, token


def list_tokens(path: Path) -> list[StoredToken]:
    return _read(path).tokens


def revoke_token(path: Path, token_id: str, *, now: datetime | None = None) -> StoredToken:
    """Marks the token revoked (kept in the file, so the list still names it); a running API
    refuses it within a second. KeyError when there is no such id."""
    with _editing(path) as current:
        for i, stored in enumerate(current.tokens):
            if stored.id == token_id:
                if stored.revoked_at is None:
                    stored = current.tokens[i] = stored.model_copy(update={"revoked_at": now or _now()})
                return stored
        raise KeyError(token_id)
