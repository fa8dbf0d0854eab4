"""/docs works offline (Swagger UI from the installed package) and declares the bearer credentials."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from bridge.app.api.app import create_app
from bridge.app.config import Settings
from bridge.app.runtime import BridgeRuntime


async def test_docs_are_served_locally_with_security_schemes(tmp_path: Path) -> None:
    app = create_app(BridgeRuntime(Settings(data_dir=str(tmp_path))))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bridge") as client:
        page = await client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: '([^']+)'", page.text)
        assert urls and all(u.startswith("/") for u in urls), urls  # nothing from another host
        for url in urls:
            if url.startswith("/docs/assets/"):
                asset = await client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 100, url
        assert (await client.get("/docs/assets/swagger-ui-bundle.js")).status_code == 200
        schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    assert {name: s["scheme"] for name, s in schemes.items()} == {
        "device": "bearer",
        "admin": "bearer",
        "platform": "bearer",
    }
    assert schema["paths"]["/v1/devices"]["post"]["security"] == [{"admin": []}]
    assert schema["paths"]["/v1/alerts"]["post"]["security"] == [{"device": []}]
    assert schema["paths"]["/v1/platform/alerts/{alert_id}/ack"]["post"]["security"] == [{"platform": []}]
    assert "security" not in schema["paths"]["/healthz"]["get"]
