"""The crises held open, as a view the escalation application keeps from its own log.

Only two kinds of event decide whether a crisis is open: ``EscalationRaised`` opens it and
``CrisisResolved`` closes it. The view reads just those, from the notification log, from
where it last stopped (its position), so a call reads what was recorded since the last one
and then loads the open crises only — never every crisis ever raised. It lives in memory: at
a process's start (and after a store is recovered) it is rebuilt from the log, reading two
notifications per crisis and no crisis's events; the log stays the only record, so the view
is correct across restarts by construction and rebuilt by forgetting it (:meth:`reset`).

The stores commit notifications in id order (eventsourcing locks the table on insert), so a
position never skips an event committed later with a smaller id."""

from __future__ import annotations

import threading
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.events.escalation import CrisisResolved, EscalationRaised

PAGE = 500


class OpenCrises:
    def __init__(self, recorder: Any, mapper: Any) -> None:
        self.recorder, self.mapper = recorder, mapper
        self.topics = (get_topic(EscalationRaised), get_topic(CrisisResolved))
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        #: open crisis id → its client (None: a fail-safe crisis whose client is unknown), oldest first
        self.position = 0
        self.open: dict[UUID, str | None] = {}
        #: open crisis id → its plan (None: raised with no plan), for the caseload's counts per plan
        self.plan_of: dict[UUID, UUID | None] = {}
        #: notifications read so far (for tests and figures: what a call costs)
        self.read = 0

    def refresh(self) -> dict[UUID, str | None]:
        """Follows the log from the last position; returns a copy of the open crises."""
        with self._lock:
            while batch := self.recorder.select_notifications(
                start=self.position + 1, limit=PAGE, topics=self.topics
            ):
                for notification in batch:
                    self.read += 1
                    if notification.topic == self.topics[0]:
                        event = self.mapper.to_domain_event(notification)
                        # an erased client's crisis (issue 16) reads as ErasedEvent: no client, no plan
                        self.open[notification.originator_id] = getattr(event, "client_id", None)
                        self.plan_of[notification.originator_id] = getattr(event, "plan_id", None)
                    else:
                        self.open.pop(notification.originator_id, None)
                        self.plan_of.pop(notification.originator_id, None)
                self.position = batch[-1].id
            return dict(self.open)

    def plans_open(self) -> dict[UUID, UUID | None]:
        """Each open crisis's plan, as of the last :meth:`refresh`."""
        with self._lock:
            return dict(self.plan_of)
