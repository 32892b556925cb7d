"""NATS users per process, with the permissions of deploy/nats/permissions.conf.

``CAREPLAN_NATS_PASSWORDS_FILE`` names a JSON file ``{"<user>": "<password>", ...}`` with a
password for each user below. `careplan up` then starts its embedded server with those
permissions (the passwords reach it through its environment) and gives each of its
processes its own user, so a service can publish only its own subjects."""

from __future__ import annotations

import json
from pathlib import Path

PERMISSIONS_FILE = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "permissions.conf"

#: `careplan up`'s processes → their NATS users.
PROCESS_USERS = {
    "relay:care": "relay_care",
    "service:care-policies": "care_policies",
    "service:assessment": "assessment",
    "service:escalation": "escalation",
    "service:scheduling": "scheduling",
}
#: Users for people and systems outside `careplan up`.
OTHER_USERS = ("hospital", "auditor")
USERS = (*PROCESS_USERS.values(), *OTHER_USERS)


class NatsPasswordsError(ValueError):
    """The passwords file is missing a user, or is not what it should be."""


def load_passwords(path: Path) -> dict[str, str]:
    try:
        passwords = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        msg = f"Cannot read the NATS passwords file {path}: {e}"
        raise NatsPasswordsError(msg) from e
    if not isinstance(passwords, dict):
        msg = f"{path} must hold a JSON object of user → password"
        raise NatsPasswordsError(msg)
    missing = [u for u in USERS if not isinstance(passwords.get(u), str) or len(passwords[u]) < 12]
    if missing:
        msg = f"{path} needs a password of at least 12 characters for: {', '.join(missing)}"
        raise NatsPasswordsError(msg)
    unusable = [u for u in USERS if any(ch in passwords[u] for ch in '"\\ \t\n')]
    if unusable:
        msg = f"{path}: passwords may not hold quotes, backslashes or spaces ({', '.join(unusable)})"
        raise NatsPasswordsError(msg)
    return {u: passwords[u] for u in USERS}


def server_environment(passwords: dict[str, str]) -> dict[str, str]:
    """What permissions.conf reads: CAREPLAN_NATS_PW_<USER>. nats-server parses a variable's
    value as configuration, so a password that looks like a number or a date (``2026-11-...``)
    would not be a string: each is quoted."""
    return {f"CAREPLAN_NATS_PW_{user.upper()}": f'"{password}"' for user, password in passwords.items()}
