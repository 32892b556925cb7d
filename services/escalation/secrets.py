"""The escalation's webhook secrets, by name, from a file of their own.

The policy names a contact's webhook secret (``secret_name``); the secret itself is in
``CAREPLAN_ESCALATION_SECRETS_FILE`` (JSON, mode 0600, the escalation service's user only)::

    {"pager-a": "whsec_...", "inbasket": ["whsec_new...", "whsec_old..."]}

A list is a rotation under way: every secret in it signs each request (Standard Webhooks
allows several space-separated signatures), the first listed first, so the receiver may
switch to the new one at its own pace; then the old one is removed. The file is read
again whenever it changes (its size or modification time), so a rotation needs no restart.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from standardwebhooks import Webhook

from services.shared.settings import Settings

log = logging.getLogger(__name__)


class SecretsError(ValueError):
    """The secrets file is missing, unreadable or lacks a named secret (the message says which
    name and what to do, never a secret)."""


class EscalationSecrets:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._secrets: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()

    def of(self, name: str) -> tuple[str, ...]:
        """The secrets named ``name``, current first."""
        found = self._current().get(name)
        if not found:
            msg = f"the escalation secrets file has no secret named {name!r}; add it there"
            raise SecretsError(msg)
        return found

    def _current(self) -> dict[str, tuple[str, ...]]:
        if self.path is None:
            msg = "the policy names webhook secrets: set CAREPLAN_ESCALATION_SECRETS_FILE to the file that holds them"
            raise SecretsError(msg)
        with self._lock:
            try:
                stat = self.path.stat()
            except OSError as e:
                msg = f"the escalation secrets file cannot be read: {type(e).__name__}"
                raise SecretsError(msg) from None
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                self._secrets = _read(self.path)
                self._seen = seen
                if stat.st_mode & 0o077:
                    log.warning("the escalation secrets file can be read by others than its owner: chmod 600 it")
            return self._secrets


def _read(path: Path) -> dict[str, tuple[str, ...]]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        msg = f"the escalation secrets file is not a JSON object of names: {type(e).__name__}"
        raise SecretsError(msg) from None
    if not isinstance(raw, dict):
        msg = "the escalation secrets file is not a JSON object of names"
        raise SecretsError(msg)
    secrets: dict[str, tuple[str, ...]] = {}
    for name, value in raw.items():
        values = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else ()
        if not values or not all(isinstance(v, str) for v in values):
            msg = f"the escalation secret {name!r} is neither a secret nor a list of secrets"
            raise SecretsError(msg)
        for v in values:
            try:
                Webhook(v)
            except Exception:  # noqa: BLE001 - any refusal is the same mistake
                msg = f"the escalation secret {name!r} is not a Standard Webhooks secret (whsec_ followed by base64)"
                raise SecretsError(msg) from None
        secrets[str(name)] = values
    return secrets


_BY_PATH: dict[Path | None, EscalationSecrets] = {}


def escalation_secrets(settings: Settings) -> EscalationSecrets:
    """One reader per file in a process (it re-reads the file when it changes)."""
    path = settings.escalation_secrets_file
    if path not in _BY_PATH:
        _BY_PATH[path] = EscalationSecrets(path)
    return _BY_PATH[path]
