"""Event ids are derived from aggregate id and version, the same way on every path."""

from __future__ import annotations

from uuid import UUID, uuid5

from hypothesis import given
from hypothesis import strategies as st

from domain.base import EVENT_ID_NAMESPACE, derive_event_id


@given(st.uuids(), st.integers(min_value=1, max_value=10**9))
def test_derived_ids_are_uuid5_of_aggregate_and_version(aggregate_id: UUID, version: int) -> None:
    assert derive_event_id(aggregate_id, version) == str(uuid5(EVENT_ID_NAMESPACE, f"{aggregate_id}:{version}"))
    assert derive_event_id(str(aggregate_id), version) == derive_event_id(aggregate_id, version)
