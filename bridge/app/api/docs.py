"""`/docs` served offline: Swagger UI's assets come from the `swagger-ui-bundle` package, not a CDN,
and the OpenAPI document declares the bearer credentials each path takes, so "Authorize" works.

The credentials themselves are checked in bridge.app.api.auth; this module only describes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SCHEMES: dict[str, dict[str, Any]] = {
    "device": {
        "type": "http",
        "scheme": "bearer",
        "description": "A device's bearer token (`sosbridge devices add` prints it once)",
    },
    "admin": {"type": "http", "scheme": "bearer", "description": "SOSBRIDGE_ADMIN_TOKEN"},
    "platform": {
        "type": "http",
        "scheme": "bearer",
        "description": "SOSBRIDGE_PLATFORM_TOKEN (while it is unset, every platform route answers 403; the "
                       "webhook secret is never accepted in its place)",
    },
}


def scheme_for(path: str) -> str | None:
    """Which credential a path takes; None for the open ones (health, metrics, schema, plug-ins)."""
    if path.startswith("/v1/devices"):
        return "admin"
    if path.startswith("/v1/platform/"):
        return "platform"
    if path.startswith(("/v1/alerts", "/v1/voice/")):
        return "device"
    return None


def add_security(schema: dict[str, Any]) -> dict[str, Any]:
    schema.setdefault("components", {})["securitySchemes"] = SCHEMES
    for path, operations in schema.get("paths", {}).items():
        scheme = scheme_for(path)
        if scheme is None:
            continue
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["security"] = [{scheme: []}]
    return schema


def install_docs(app: FastAPI) -> None:
    """For an app created with docs_url=None and redoc_url=None."""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui-assets")
    plain_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_security(plain_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url="/docs/oauth2-redirect",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
