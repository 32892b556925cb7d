"""The API's routes, one module per concern. Each module's ``include`` adds its routes to a
router (``create_app`` passes the application's own, so every route stays an ``APIRoute``
of ``app.routes``, in the order the OpenAPI document lists them).

Routes are made in functions and loops (one per command class, per collection), so their
parameters are given as signatures built here: FastAPI reads the parameters (and so the
OpenAPI document) from the signature."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


def signature(endpoint: Callable[..., Any], parameters: list[inspect.Parameter]) -> None:
    """Give ``endpoint`` these (keyword-only) parameters as FastAPI sees them."""
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Any)  # type: ignore[attr-defined]


def param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
