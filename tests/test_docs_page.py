"""`/docs` works without a network: every asset it names is served by the app itself."""

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from skillrouter.serving.docs import offline_docs


def test_docs_page_names_only_assets_the_app_serves():
    api = FastAPI(title="skillrouter")

    @api.get("/v1/route")
    def route() -> dict:
        return {}
    offline_docs(api)
    client = TestClient(api)
    page = client.get("/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", page.text)
    assert not [u for u in urls if re.match(r"(https?:)?//", u)], urls  # nothing from a CDN
    assets = [u for u in urls if u.startswith("/docs/static/")]
    assert {a.rsplit("/", 1)[1] for a in assets} == {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 100_000, asset
    assert client.get("/redoc").status_code == 404  # FastAPI's ReDoc page would load from a CDN
    assert "/v1/route" in client.get("/openapi.json").json()["paths"]
