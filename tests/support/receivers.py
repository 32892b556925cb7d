"""Local receivers for escalation notifications: a webhook endpoint that verifies every
Standard Webhooks signature with the ``standardwebhooks`` library, and an SMTP server
(``aiosmtpd``). Both on free ports of 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from standardwebhooks import Webhook, WebhookVerificationError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    #: The verified payload, or None when the signature did not verify.
    payload: Any
    answered: int


@dataclass
class WebhookReceiver:
    """Answers each path with the statuses in ``answers[path]`` in turn (the last one
    repeated; 200 for a path not named); a request whose signature does not verify is 401."""

    secret: str
    answers: dict[str, list[int]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    #: Seconds to wait before answering, per request in turn (a receiver that hangs).
    delays: list[float] = field(default_factory=list)
    #: Requests being answered now (their bodies read).
    in_flight: int = 0
    #: A Retry-After header to answer with, per path.
    retry_after: dict[str, str] = field(default_factory=dict)

    def verified(self, path: str | None = None) -> list[Received]:
        return [r for r in self.received if r.payload is not None and (path is None or r.path == path)]

    def _answer(self, path: str) -> int:
        statuses = self.answers.get(path, [200])
        return statuses.pop(0) if len(statuses) > 1 else statuses[0]


@contextmanager
def webhook_receiver(secret: str, answers: dict[str, list[int]] | None = None) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, answers or {})
    verifier = Webhook(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                payload = verifier.verify(body, headers)
            except WebhookVerificationError:
                payload = None
            status = receiver._answer(self.path) if payload is not None else 401
            receiver.received.append(Received(self.path, headers, body, payload, status))
            if receiver.delays:
                receiver.in_flight += 1
                time.sleep(receiver.delays.pop(0))
                receiver.in_flight -= 1
            self.send_response(status)
            if self.path in receiver.retry_after:
                self.send_header("retry-after", receiver.retry_after[self.path])
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # a held request does not hold the test when it ends
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


class Inbox:
    """aiosmtpd's handler: every message accepted, kept parsed."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []
        #: Replies to RCPT TO in turn ("550 ..." refuses a recipient); then every one is accepted.
        self.rcpt_replies: list[str] = []
        self.rcpt_attempts = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        self.rcpt_attempts += 1
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()
