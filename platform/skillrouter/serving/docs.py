"""The API's documentation page without a network: Swagger UI served from the `swagger-ui-bundle` wheel.

FastAPI's own `/docs` loads Swagger UI from a CDN and its `/redoc` ReDoc likewise, so both are blank on a machine
without internet (this project's default). `offline_docs(api)` replaces them: `/docs` is Swagger UI with its
script and style served by this app under `/docs/static/`, no favicon fetched, and `/redoc` is gone (no wheel
ships ReDoc's bundle).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = "/docs/static"


def offline_docs(api: FastAPI) -> None:
    """Serve `/docs` from the installed Swagger UI assets; drop FastAPI's CDN-backed `/docs` and `/redoc`."""
    from swagger_ui_bundle import swagger_ui_path

    cdn_pages = {api.docs_url, api.redoc_url, api.swagger_ui_oauth2_redirect_url} - {None}
    api.router.routes[:] = [r for r in api.router.routes if getattr(r, "path", None) not in cdn_pages]
    api.docs_url = api.redoc_url = None
    api.mount(STATIC, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=api.openapi_url, title=f"{api.title} API",
                                   swagger_js_url=f"{STATIC}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{STATIC}/swagger-ui.css", swagger_favicon_url="data:,")
