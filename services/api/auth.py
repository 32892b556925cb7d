"""Bearer tokens → who is calling, in which role, for which clients.

Tokens are configured in a JSON file (``CAREPLAN_API_TOKENS_FILE``) that holds only their
SHA-256 digests; ``careplan api add-token`` makes a token, stores its digest and prints
the token once. A token is long and random, so a plain digest (no salt, no stretching)
is enough: it cannot be guessed from its digest, and lookups stay one dictionary access.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from domain.base import Actor, Role

#: Roles a token may carry (services act through the bus, not the API).
API_ROLES = (Role.CLINICIAN, Role.SUPERVISOR, Role.AUDITOR, Role.INTEGRATION)
ALL_CLIENTS = "*"


class Principal(BaseModel):
    """The caller behind a token. A clinician acts only for the clients listed (``*``: all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor_id: str = Field(min_length=1, max_length=200)
    role: Role
    clients: tuple[str, ...] = (ALL_CLIENTS,)

    @property
    def actor(self) -> Actor:
        return Actor(id=self.actor_id, role=self.role)

    def may_act_for(self, client_id: str) -> bool:
        return ALL_CLIENTS in self.clients or client_id in self.clients


class StoredToken(Principal):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class TokenFile(BaseModel):
    tokens: list[StoredToken] = []


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenRegistry:
    def __init__(self, tokens: list[StoredToken]) -> None:
        self._by_digest = {t.sha256: Principal(actor_id=t.actor_id, role=t.role, clients=t.clients) for t in tokens}

    @classmethod
    def load(cls, path: Path | None) -> TokenRegistry:
        if path is None or not path.exists():
            return cls([])
        return cls(TokenFile.model_validate_json(path.read_bytes()).tokens)

    def __len__(self) -> int:
        return len(self._by_digest)

    def principal(self, authorization: str | None) -> Principal | None:
        """The principal for an ``Authorization: Bearer <token>`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        # Looking up the digest, not the token, leaks nothing through timing: an
        # attacker cannot steer which digest a guess produces.
        return self._by_digest.get(digest(token.strip()))


def add_token(path: Path, *, actor_id: str, role: Role, clients: tuple[str, ...] = (ALL_CLIENTS,)) -> str:
    """Makes a new token for ``actor_id``, stores its digest in ``path`` and returns the
    token (the only time it is seen)."""
    if role not in API_ROLES:
        msg = f"role {role.value!r} cannot hold an API token; one of: {', '.join(r.value for r in API_ROLES)}"
        raise ValueError(msg)
    token = secrets.token_urlsafe(32)
    current = TokenFile.model_validate_json(path.read_bytes()) if path.exists() else TokenFile()
    current.tokens.append(StoredToken(actor_id=actor_id, role=role, clients=clients, sha256=digest(token)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current.model_dump(mode="json"), indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    return token
