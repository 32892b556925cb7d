"""Signing secrets and sealed headers of subscriptions, from one key file.

A subscription's secret is never stored: it is derived from the service key and the
subscription's id and secret generation (HMAC-SHA256), so it can be shown once when made
or rotated and yet sign every request after. A rotation raises the generation; during the
grace period requests carry a signature with each secret (Standard Webhooks allows
several, space-separated). Header values may hold the receiver's credentials, so they are
recorded sealed (AES-GCM, eventsourcing's cipher) with a key derived from the same file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from uuid import UUID

from eventsourcing.cipher import AESCipher
from eventsourcing.utils import Environment
from standardwebhooks.webhooks import Webhook

from services.shared.keys import key_in_file
from services.shared.settings import Settings

SECRET_PREFIX = "whsec_"


class SubscriptionKeys:
    def __init__(self, key: bytes) -> None:
        self._key = key
        sealing = hmac.new(key, b"careplan subscriptions: sealed headers", hashlib.sha256).digest()
        self._cipher = AESCipher(Environment(env={"CIPHER_KEY": base64.b64encode(sealing).decode()}))

    @classmethod
    def of(cls, settings: Settings) -> SubscriptionKeys:
        return cls(key_in_file(settings.subscriptions_key_path()))

    def secret(self, subscription_id: UUID, generation: int) -> str:
        """The Standard Webhooks secret (``whsec_`` + base64 of 32 bytes)."""
        raw = hmac.new(self._key, f"secret:{subscription_id}:{generation}".encode(), hashlib.sha256).digest()
        return SECRET_PREFIX + base64.b64encode(raw).decode()

    def signature(self, subscription_id: UUID, generations: Sequence[int], message_id: str, at: datetime,
                  body: bytes) -> str:
        """``webhook-signature``: one ``v1,<base64>`` per valid secret, the current first."""
        text = body.decode()
        return " ".join(self._signer(subscription_id, g).sign(message_id, at, text) for g in generations)

    @lru_cache(maxsize=1024)  # noqa: B019 - one key object per process, its secrets derived once each
    def _signer(self, subscription_id: UUID, generation: int) -> Webhook:
        return Webhook(self.secret(subscription_id, generation))

    def seal(self, headers: Mapping[str, str]) -> str:
        if not headers:
            return ""
        return base64.b64encode(self._cipher.encrypt(json.dumps(dict(headers)).encode())).decode()

    def unseal(self, sealed: str) -> dict[str, str]:
        if not sealed:
            return {}
        found = json.loads(self._cipher.decrypt(base64.b64decode(sealed)))
        return {str(k): str(v) for k, v in found.items()}
