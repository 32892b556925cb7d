"""NATS users per process, and their permissions: ``deploy/nats/permissions.conf`` is
generated from the registry (`careplan contracts generate`, checked by `careplan contracts
check` and the tests), so a service added there gets its user and rights here.

``CAREPLAN_NATS_PASSWORDS_FILE`` names a JSON file ``{"<user>": "<password>", ...}`` with a
password for each user below; without it, `careplan up` generates one into its data dir
(``nats-passwords.json``, 0600, kept across restarts). It starts its embedded server with
those permissions (the passwords reach it through its environment) and gives each of its
processes its own user, so a service can publish only its own subjects."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from contracts.subjects import chain_subject, context_of_application, watermark_subject
from services.registry import PROCESSES, SERVICES, Service, relay_process
from services.shared.bus import AUDIT_STREAM, with_credentials
from services.shared.health import BUCKET as STATUS_BUCKET
from services.shared.health import key_of
from services.shared.lease import BUCKET as LEASE_BUCKET
from services.shared.lease import INSTANCE_SLOTS, MAX_PARTITIONS

PERMISSIONS_FILE = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "permissions.conf"

#: `careplan up`'s processes → their NATS users.
PROCESS_USERS = {process.name: process.nats_user for process in PROCESSES if process.nats_user is not None}
#: The one user that creates and changes the streams: `careplan up` (before it starts its
#: processes) and an operator's `careplan nats streams apply`.
ADMIN_USER = "admin"
#: Users for people and systems outside `careplan up`'s processes.
OTHER_USERS = ("hospital", "auditor", ADMIN_USER)
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


#: Where `careplan up` keeps the passwords it generates when none are configured (0600).
GENERATED_PASSWORDS_FILE = "nats-passwords.json"


def ensure_passwords(data_dir: Path) -> Path:
    """``<data_dir>/nats-passwords.json``: read if it is there (the same credentials across
    restarts), else a fresh random password for each user, written 0600 and atomically (a
    temporary file in the same folder, opened 0600, then renamed), so no reader ever sees a
    partial file and no other user can read it, whatever the umask. A file missing a user
    (one added to the registry since) gets that user's password added."""
    path = data_dir / GENERATED_PASSWORDS_FILE
    try:
        existing = json.loads(path.read_text())
    except FileNotFoundError:
        existing = {}
    except ValueError as e:
        msg = f"{path} is not JSON ({e}); remove it to have new NATS passwords generated"
        raise NatsPasswordsError(msg) from e
    if not isinstance(existing, dict):
        msg = f"{path} must hold a JSON object of user → password; remove it to have new ones generated"
        raise NatsPasswordsError(msg)
    wanted = {u: existing[u] if isinstance(existing.get(u), str) else secrets.token_urlsafe(24) for u in USERS}
    wanted = {**existing, **wanted}
    if wanted != existing or path.stat().st_mode & 0o077:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(wanted, indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    return path


def passwords_file_of(data_dir: Path, configured: Path | None = None) -> Path | None:
    """The passwords of a `careplan up` on ``data_dir``: the configured file
    (CAREPLAN_NATS_PASSWORDS_FILE), else the one it generated there, else None."""
    if configured is not None:
        return configured
    generated = data_dir / GENERATED_PASSWORDS_FILE
    return generated if generated.exists() else None


def running_up_url(data_dir: Path) -> str | None:
    """The NATS address the running `careplan up` wrote into its data dir (``careplan-up.json``);
    None when there is none (or it cannot be read)."""
    try:
        url = json.loads((data_dir / "careplan-up.json").read_text()).get("nats")
    except (OSError, ValueError, AttributeError):
        return None
    return str(url) if url else None


def url_as(url: str, user: str, data_dir: Path, configured: Path | None = None) -> str:
    """``url`` with ``user``'s credentials from the passwords file of the `careplan up` on
    ``data_dir`` — unless the URL carries credentials already, or there is no such file
    (a NATS without users): then ``url`` as it is. For the CLI's commands that talk to
    the NATS of a running `up` (streams as ``admin``, store checks as ``admin``)."""
    if any(urlsplit(u.strip() if "://" in u else f"nats://{u.strip()}").username for u in url.split(",")):
        return url
    path = passwords_file_of(data_dir, configured)
    if path is None:
        return url
    return with_credentials(url, user, load_passwords(path)[user])


def server_environment(passwords: dict[str, str]) -> dict[str, str]:
    """What permissions.conf reads: CAREPLAN_NATS_PW_<USER>. nats-server parses a variable's
    value as configuration, so a password that looks like a number or a date (``2026-11-...``)
    would not be a string: each is quoted."""
    return {f"CAREPLAN_NATS_PW_{user.upper()}": f'"{password}"' for user, password in passwords.items()}


# --------------------------------------------------------------------- permissions.conf

_HEADER = """\
# GENERATED from services/registry.py by `careplan contracts generate` (services/nats_auth.py);
# do not edit: `careplan contracts check` and the tests fail when it differs.
#
# Users and what each may do on the bus. Passwords come from the environment of the
# nats-server process (CAREPLAN_NATS_PW_<USER>); `careplan up` sets them from the JSON file
# of {"<user>": "<password>"} CAREPLAN_NATS_PASSWORDS_FILE names, else from the one it
# generates in its data dir (nats-passwords.json, 0600), and gives each of its processes its
# own user. To use it by hand, include it from a server config
# in this folder (include paths are relative to the including file):
#     include "permissions.conf"
#
# A service publishes only its own events (care.<context>.>, its dead letters included), its
# relay's watermark (careplan.watermark.<application>) and its store's chain head
# (audit.careplan.v1.chain.<store>, stream CARE_AUDIT); it reads single messages of CARE
# (direct get: history it never saw, a relay's check of its store against the stream), uses
# only its own durable consumer (named after it) and its own lease in the KV bucket
# careplan_leases (one instance per durable; partitioned, its durables <name>-p<k> and leases <name>.>); each relay and service puts only its own status
# records in the KV bucket careplan_status (for /readyz; the auditor may read them, and the
# info of each service's durable consumer, for /metrics); everyone
# may read the stream's info; inboxes
# (_INBOX.>) carry the replies of JetStream requests. Only the admin user creates or changes
# the streams CARE and CARE_AUDIT (`careplan up`, `careplan nats streams apply`): every other
# process checks their configuration and refuses to start when it differs. No user but admin
# may update, delete or purge CARE or CARE_AUDIT or delete a message from them (denied
# explicitly; admin is not granted delete or purge either, only the deletion of single CARE
# messages, which the erasure of a client needs: `careplan client erase`), and only the relays (the stores'
# publishers) may publish on audit.>, each its own store's chain head.
#
# The hospital user reads care.> through its own pull consumer "hospital" and publishes
# nothing on care.>, audit.> or careplan.>. NATS permissions match whole subject tokens, so
# consumer names cannot be granted by prefix: a second hospital system gets a user of its own.
"""
STREAM = "CARE"
_STREAM_INFO = ["$JS.API.INFO", f"$JS.API.STREAM.INFO.{STREAM}", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"]
_STREAM_OWN = [f"$JS.API.STREAM.{verb}.{stream}" for stream in (STREAM, AUDIT_STREAM) for verb in ("CREATE", "UPDATE")]
_DIRECT_GET = [f"$JS.API.DIRECT.GET.{STREAM}", f"$JS.API.DIRECT.GET.{STREAM}.>", f"$JS.API.STREAM.MSG.GET.{STREAM}"]


#: Never any process's but the admin user's: changing, deleting or emptying the streams or
#: removing a message from them. Denied explicitly (beside every user's allow-list, which
#: never names them), so a future widening of an allow-list cannot open them: whoever holds
#: a relay's credentials can then not discard the chain heads published to CARE_AUDIT after
#: rewriting a chain, nor rewrite CARE.
_STREAM_GUARDED = [f"$JS.API.STREAM.{verb}.{stream}" for stream in (STREAM, AUDIT_STREAM)
                   for verb in ("UPDATE", "DELETE", "PURGE", "MSG.DELETE")]


def _publishing(store: str) -> list[str]:
    """A store's publisher: its events, its watermark, its chain head."""
    return [chain_subject(store), f"$JS.API.STREAM.INFO.{AUDIT_STREAM}", f"care.{context_of_application(store)}.>",
            watermark_subject(store)]


def _lease(durable: str) -> list[str]:
    kv = f"KV_{LEASE_BUCKET}"
    return [f"$KV.{LEASE_BUCKET}.{durable}", f"$JS.API.STREAM.INFO.{kv}", f"$JS.API.STREAM.CREATE.{kv}",
            f"$JS.API.DIRECT.GET.{kv}.$KV.{LEASE_BUCKET}.{durable}", f"$JS.API.STREAM.MSG.GET.{kv}"]


def _status(components: list[str]) -> list[str]:
    """A process's own status records (services.shared.health), as ``_lease`` does it."""
    kv = f"KV_{STATUS_BUCKET}"
    return [*(f"$KV.{STATUS_BUCKET}.{key_of(c)}" for c in components), f"$JS.API.STREAM.INFO.{kv}",
            f"$JS.API.STREAM.CREATE.{kv}"]


def _status_reader() -> list[str]:
    kv = f"KV_{STATUS_BUCKET}"
    return [f"$JS.API.STREAM.INFO.{kv}", f"$JS.API.DIRECT.GET.{kv}.>", f"$JS.API.STREAM.MSG.GET.{kv}"]


def _durables() -> list[str]:
    """Every durable consumer a service may have: its own, and each partition's (``<name>-p<k>``)."""
    return [durable for service in SERVICES for durable in (service.name, *(f"{service.name}-p{k}" for k in range(MAX_PARTITIONS)))]


def _consumer_info() -> list[str]:
    """The services' durable consumers' info, partitions included (the API's /metrics: their
    backlog; store check|recover, deadletter park), nothing else of them."""
    return [f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}" for durable in _durables()]


def _consumer(durable: str) -> list[str]:
    return [f"$JS.API.CONSUMER.*.{STREAM}.{durable}", f"$JS.API.CONSUMER.*.{STREAM}.{durable}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}", f"$JS.ACK.{STREAM}.{durable}.>"]


def _service_rights(service: Service) -> list[str]:
    own = _publishing(service.store) if service.relays else []
    # partitioned, each instance also puts its own record, service:<name>.i<j> (its slot)
    reports = [service.process, *([f"relay:{service.store}"] if service.relays else []),
               *(f"{service.process}.i{j}" for j in range(INSTANCE_SLOTS))]
    # Partitioned (services/shared/partitions.py): the durables <name>-p<k>, and the leases
    # <name>.p<k>, <name>.i<j> (instance slots) and <name>.duties.
    partitions = [right for k in range(MAX_PARTITIONS) for right in _consumer(f"{service.name}-p{k}")]
    return [*own, *_DIRECT_GET, *_lease(service.name), *_lease(f"{service.name}.>"), *_STREAM_INFO,
            *_consumer(service.name), *partitions, *_status(reports)]


def _user(comment: str, user: str, allow: list[str], deny: list[str] | None = None) -> str:
    if user != ADMIN_USER:
        deny = [*(deny or []), *_STREAM_GUARDED]
    rights = f"allow: {json.dumps(allow)}" + (f", deny: {json.dumps(deny)}" if deny else "")
    return (f"    # {comment}\n"
            f"    {{ user: {user}, password: $CAREPLAN_NATS_PW_{user.upper()},\n"
            f"      permissions: {{\n"
            f"        publish: {{ {rights} }}\n"
            f"        subscribe: {{ allow: [\"_INBOX.>\"] }} }} }}\n")


def render_permissions() -> str:
    """``deploy/nats/permissions.conf`` as the registry declares the system."""
    users = []
    for process in PROCESSES:
        if process.nats_user is None:
            continue
        store = process.name.removeprefix("relay:")
        if process == relay_process(store):
            users.append(_user(f"the {store} store's relay: its events", process.nats_user,
                               [*_publishing(store), *_DIRECT_GET, *_STREAM_INFO, *_status([process.name])]))
            continue
        service = next(s for s in SERVICES if s.process == process.name)
        what = "consumer and relay" if service.relays else f"consumer; the {service.store} store's relay publishes"
        users.append(_user(f"{service.name}: {service.summary} ({what})", process.nats_user, _service_rights(service),
                           None if service.relays else ["audit.>"]))
    users.append(_user('a hospital subscriber: its own durable consumer "hospital", nothing published', "hospital",
                       [*_STREAM_INFO, *_consumer("hospital"), f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.hospital"],
                       ["care.>", "audit.>", "careplan.>"]))
    users.append(_user("an auditor: reads stored messages and the status records, changes nothing", "auditor",
                       [f"$JS.API.STREAM.INFO.{AUDIT_STREAM}", f"$JS.API.STREAM.MSG.GET.{AUDIT_STREAM}",
                        f"$JS.API.DIRECT.GET.{AUDIT_STREAM}", f"$JS.API.DIRECT.GET.{AUDIT_STREAM}.>", *_STREAM_INFO,
                        *_DIRECT_GET[2:], *_DIRECT_GET[:2], *_status_reader(), *_consumer_info()], ["care.>", "audit.>"]))
    users.append(_user("the streams' owner: creates and changes CARE and CARE_AUDIT (careplan up, careplan nats "
                       "streams apply); reads CARE and resets a service's durable consumer (careplan store check|recover, "
                       "deadletter park); deletes an erased client's messages from CARE; publishes nothing", ADMIN_USER,
                       [*_STREAM_INFO, f"$JS.API.STREAM.INFO.{AUDIT_STREAM}", *_STREAM_OWN, *_DIRECT_GET,
                        # an erased client's messages, each removed with the server's secure erase (issue 16)
                        f"$JS.API.STREAM.MSG.DELETE.{STREAM}",
                        *_consumer_info(), *(f"$JS.API.CONSUMER.DELETE.{STREAM}.{durable}" for durable in _durables())],
                       ["care.>", "audit.>"]))
    return _HEADER + "\nauthorization {\n  users = [\n" + "".join(users) + "  ]\n}\n"


def write_permissions() -> bool:
    """Writes ``permissions.conf`` if it differs from the registry's; whether it did."""
    wanted = render_permissions()
    if PERMISSIONS_FILE.exists() and PERMISSIONS_FILE.read_text() == wanted:
        return False
    PERMISSIONS_FILE.write_text(wanted)
    return True


def permissions_problem() -> str | None:
    """Why the checked-in ``permissions.conf`` is not the registry's, or None."""
    if not PERMISSIONS_FILE.exists() or PERMISSIONS_FILE.read_text() != render_permissions():
        return f"{PERMISSIONS_FILE.relative_to(PERMISSIONS_FILE.parents[2])} differs from what services/registry.py declares"
    return None
