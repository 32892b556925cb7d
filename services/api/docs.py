"""``/docs`` and ``/redoc`` that work offline: Swagger UI's and ReDoc's assets are served from
the ``fastapi-offline`` package (which vendors them) under ``/docs/assets``, never a CDN.

The pages are plain Starlette routes (as FastAPI's own docs routes are), so they stay out
of the OpenAPI document and out of ``app.routes``' APIRoutes."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.requests import Request
from starlette.staticfiles import StaticFiles

ASSETS = "/docs/assets"
#: No external request of any kind; Swagger UI's inline start-up script needs 'unsafe-inline'.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'")


def assets_folder() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Create the app with ``docs_url=None, redoc_url=None``; this adds both pages back."""
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger(_: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # Swagger UI would otherwise ask an online validator about the document
            swagger_ui_parameters={"validatorUrl": None},
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    async def redoc(_: Request) -> HTMLResponse:
        page = get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{ASSETS}/favicon.png",
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
    app.mount(ASSETS, StaticFiles(directory=assets_folder()), name="docs-assets")
