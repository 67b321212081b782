"""The OpenAPI document: valid OpenAPI 3, generated from the handlers, naming every API route served."""

from __future__ import annotations

import asyncio
import json
import re

from openapi_spec_validator import validate
from tornado.httpclient import AsyncHTTPClient

from moi.server import make_app
from tests.test_relay_security import SECRET, server

SAMPLE = "00000000-0000-4000-8000-000000000000"


def served_api_patterns() -> list[re.Pattern[str]]:
    app = make_app(cookie_secret=SECRET)
    patterns = [rule.matcher.regex for rule in app.wildcard_router.rules]  # type: ignore[attr-defined]
    api = ("/api/v1/", "/healthz", "/metrics")
    return [p for p in patterns if p.pattern.startswith(api) and "openapi" not in p.pattern]


def test_the_document_is_valid_openapi_and_matches_the_routes_both_ways(r) -> None:
    async def scenario() -> tuple[dict, int, bytes, int]:
        async with server() as port:
            client = AsyncHTTPClient()
            answer = await client.fetch(f"http://127.0.0.1:{port}/api/v1/openapi.json")
            docs = await client.fetch(f"http://127.0.0.1:{port}/api/docs")
            script = await client.fetch(f"http://127.0.0.1:{port}/api/docs/static/swagger-ui-bundle.js")
            return json.loads(answer.body), docs.code, docs.body, script.code

    document, docs_code, page, script_code = asyncio.run(scenario())
    validate(document)  # raises on anything OpenAPI 3 does not allow
    concrete = {re.sub(r"\{[^}]+\}", SAMPLE, path): path for path in document["paths"]}
    for pattern in served_api_patterns():  # every route served is in the document
        assert any(pattern.fullmatch(path) for path in concrete), pattern.pattern
    for path, template in concrete.items():  # and the document names no route that is not served
        assert any(pattern.fullmatch(path) for pattern in served_api_patterns()), template
    assert {"post", "get"} <= set(document["paths"]["/api/v1/jobs"])
    assert "/api/v1/jobs/{job_id}/cancel" in document["paths"]
    assert document["paths"]["/api/v1/jobs/{job_id}"]["get"]["parameters"][0]["name"] == "job_id"
    assert docs_code == 200 and b"swagger-ui-bundle.js" in page and script_code == 200  # no CDN
