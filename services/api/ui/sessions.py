"""Signed-in sessions of the web pages: a token is typed once, then a cookie.

The cookie is signed (itsdangerous, HMAC-SHA256, with a timestamp) with a key kept in the
data folder (``ui-session.key``, 0600, made once by whichever API worker comes first), so
every worker of ``careplan api`` accepts the others' cookies. It holds the token's SHA-256
digest (never the token) and a random nonce; every request asks the token registry about
the digest again, so a token revoked or expired later ends its sessions at the next
request. The CSRF token of a session is an HMAC of its nonce (a synchronizer token tied to
the session): every form carries it, every POST is checked against it.

Before signing in there is a pre-session cookie (a nonce only) so the sign-in form has a
CSRF token too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from services.api.auth import Principal, TokenRegistry, digest
from services.shared.keys import key_in_file

COOKIE = "careplan_session"
#: A session lasts at most this long after sign-in (seconds); then the token is asked for again.
MAX_AGE = 8 * 3600
KEY_FILE = "ui-session.key"


def session_key(data_dir: Path) -> bytes:
    """The signing key, made on first use (services.shared.keys)."""
    return key_in_file(data_dir / KEY_FILE)


@dataclass(frozen=True)
class Session:
    nonce: str
    #: The token's digest; None before signing in.
    token_digest: str | None
    principal: Principal | None


class Sessions:
    def __init__(self, key: bytes, tokens: TokenRegistry) -> None:
        self._key = key
        self._tokens = tokens
        self._signer = URLSafeTimedSerializer(key, salt="careplan-ui-session")

    def read(self, cookie: str | None) -> Session | None:
        """The cookie's session; None when there is none, it is forged or too old. A session
        whose token is no longer valid comes back without a principal (signed out)."""
        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=MAX_AGE)
        except BadSignature:  # includes SignatureExpired
            return None
        if not isinstance(data, dict) or not isinstance(data.get("n"), str):
            return None
        found = data.get("d")
        if not isinstance(found, str):
            return Session(data["n"], None, None)
        return Session(data["n"], found, self._tokens.principal_of_digest(found))

    def anonymous(self) -> tuple[Session, str]:
        """A new pre-session (for the sign-in form's CSRF token) and its cookie value."""
        nonce = secrets.token_urlsafe(16)
        return Session(nonce, None, None), self._signer.dumps({"n": nonce})

    def sign_in(self, token: str) -> tuple[Session, str] | None:
        """A new session for a valid token (a new nonce: no CSRF token from before signing
        in is good after it), or None when the registry refuses the token."""
        token_digest = digest(token.strip())
        principal = self._tokens.principal_of_digest(token_digest)
        if principal is None:
            return None
        nonce = secrets.token_urlsafe(16)
        return Session(nonce, token_digest, principal), self._signer.dumps({"n": nonce, "d": token_digest})

    def csrf(self, session: Session) -> str:
        return hmac.new(self._key, f"csrf\n{session.nonce}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, sent: str | None) -> bool:
        return session is not None and bool(sent) and hmac.compare_digest(self.csrf(session), str(sent))
