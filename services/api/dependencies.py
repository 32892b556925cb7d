"""What every route needs: the applications behind the API, who is calling, what they may do.

The actor of every event is the token's, never the body's. Reads answer with the version as
``ETag``; writes take ``If-Match`` (412 on a stale version, nothing written).
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol
from uuid import UUID

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from domain.base import Role
from services.api.auth import Principal, TokenRegistry
from services.api.problems import ApiProblem
from services.care import commands as c
from services.care.application import CareApplication

#: Who may send which commands (beyond the clinician's own-clients rule).
SUPERVISOR_ONLY: frozenset[type[BaseModel]] = frozenset(
    {c.LowerRisk, c.ActivateEmergencySupport, c.RecordCrisisResolved, c.EndEmergencySupport}
)
INTEGRATION_COMMANDS: frozenset[type[BaseModel]] = frozenset({c.SubmitQuestionnaire})
CLINICAL = (Role.CLINICIAN, Role.SUPERVISOR)
READERS = (Role.CLINICIAN, Role.SUPERVISOR, Role.INTEGRATION)

bearer = HTTPBearer(auto_error=False, description="A token made with `careplan api add-token`.")


class Owned(Protocol):
    """An aggregate type as the API shows it (services.api.routes.commands.Collection)."""

    @property
    def path(self) -> str: ...

    @property
    def getter(self) -> str: ...


class Api:
    """The application's parts: the care application, the escalation store, the tokens."""

    def __init__(
        self, care: CareApplication, tokens: TokenRegistry, escalation: Any | None = None, assessment: Any | None = None
    ) -> None:
        self.care = care
        self.tokens = tokens
        self.escalation = escalation
        self.assessment = assessment
        #: Every store's dead letters (services.operations.dead_letters.DeadLetterDesk).
        self.dead_letters: Any | None = None
        self._clients: dict[tuple[str, UUID], str] = {}
        #: JSON lines, one per request: who (from the token), what, when, the answer.
        self.access_log: Any | None = None
        #: What /readyz answers (services.api.health.Readiness); None: no /readyz.
        self.readiness: Any | None = None
        #: What /metrics computes when scraped (services.api.metrics.ScrapedFigures); None: the processes' only.
        self.metrics: Any | None = None
        #: The read models (services.views.queries.Views); None: no /caseload, /plans, /outcomes.
        self.views: Any | None = None
        #: The subscriptions store (services.subscriptions.service); None: no /subscriptions, /fhir/Subscription.
        self.subscriptions: Any | None = None

    # ----------------------------------------------------------------- who

    async def principal(self, request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
        """Async: a dictionary lookup needs no worker thread (FastAPI runs sync dependencies in one)."""
        principal = self.tokens.principal(request.headers.get("authorization"))
        if principal is None:
            raise ApiProblem(401, "unauthenticated", "Unauthenticated", "Send a valid token: Authorization: Bearer <token> "
                             "(unknown, revoked and expired tokens are refused alike).",
                             {"WWW-Authenticate": 'Bearer realm="careplan"'})
        request.state.principal = principal  # for the access log
        return principal

    @staticmethod
    def require(principal: Principal, roles: tuple[Role, ...], what: str) -> None:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ApiProblem(403, "forbidden", "Forbidden", f"A {principal.role.value} may not {what} (allowed: {allowed}).")

    @staticmethod
    def require_client(principal: Principal, client_id: str) -> None:
        if not principal.may_act_for(client_id):
            raise ApiProblem(403, "forbidden", "Forbidden", f"{principal.actor_id} is not assigned to this client.")

    def may_command(self, principal: Principal, command: type[BaseModel]) -> None:
        if principal.role is Role.INTEGRATION and command in INTEGRATION_COMMANDS:
            return
        roles = (Role.SUPERVISOR,) if command in SUPERVISOR_ONLY else CLINICAL
        self.require(principal, roles, f"send {command.__name__}")

    # ----------------------------------------------------------------- clients

    def client_of(self, collection: Owned, aggregate_id: UUID) -> str:
        """The client an aggregate belongs to (404 if there is no such aggregate). It never
        changes, so it is loaded once per aggregate."""
        key = (collection.path, aggregate_id)
        if (client := self._clients.get(key)) is None:
            client = self._clients[key] = str(getattr(self.care, collection.getter)(aggregate_id).client_id)
        return client


    def forget_client(self, client_id: str) -> None:
        """After the client's erasure (issue 16): this process keeps nothing of theirs."""
        self._clients = {key: client for key, client in self._clients.items() if client != client_id}


def who(api: Api) -> Any:
    """The ``principal`` parameter's annotation: the caller behind the request's bearer token."""
    return Annotated[Principal, Depends(api.principal)]


# --------------------------------------------------------------------- versions


#: The highest version a request may name: the stores keep versions as signed 64-bit
#: integers, and a larger number overflowed in the driver (a 500) instead of finding nothing.
MAX_VERSION = 2**63 - 1


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiProblem(400, "precondition-required", "Invalid If-Match",
                         f"If-Match must name one version, e.g. \"3\", not {value!r}.")
    return int(text)
