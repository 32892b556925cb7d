"""``/problems/{code}``: what each problem type the API answers with means (public)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.problems import ApiProblem, known_codes


def include(router: APIRouter) -> None:
    @router.get("/problems/{code}", tags=["problems"], summary="What a problem type means")
    def problem_type(code: str) -> dict[str, str]:
        codes = known_codes()
        if code not in codes:
            raise ApiProblem(404, "not-found", "Not found", f"No problem type {code!r}.")
        return {"type": f"/problems/{code}", "title": code.replace("-", " ").capitalize(), "description": codes[code]}
