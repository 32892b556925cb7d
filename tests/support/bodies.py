"""Schema-valid request bodies for the API's command routes, made from the command classes."""

from __future__ import annotations

import types
import typing
from datetime import UTC, datetime
from enum import Enum
from typing import Any
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel


def example_value(annotation: Any) -> Any:
    """A schema-valid value for a field's type (the first member of an enumeration)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return example_value(next(a for a in typing.get_args(annotation) if a is not type(None)))
    if origin is list:
        return [example_value(typing.get_args(annotation)[0])]
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(iter(annotation)).value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {n: example_value(f.annotation) for n, f in annotation.model_fields.items() if f.is_required()}
    moment = lambda: datetime(2026, 5, 4, 9, tzinfo=UTC).isoformat()
    return {UUID: lambda: str(uuid4()), str: lambda: "Example", int: lambda: 1, float: lambda: 1.0, bool: lambda: True,
            datetime: moment, AwareDatetime: moment}[annotation]()


def example_body(command: type[Any], target: str) -> dict[str, Any]:
    """The command's required fields but ``target`` (the id the route's path carries)."""
    return {n: example_value(f.annotation) for n, f in command.model_fields.items() if f.is_required() and n != target}
