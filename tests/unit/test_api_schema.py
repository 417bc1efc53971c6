"""The API against its own OpenAPI document (schemathesis, bounded): no 500, every status and
content type declared, every answer in its schema. The live stream never ends, so it is left out."""

from __future__ import annotations

from typing import Any

import schemathesis  # installed by `make test` (dev extra)
from hypothesis import HealthCheck, settings
from schemathesis import checks

from tests.unit.api_helpers import HQ, make_api

_app, _state, _sink, _clock = make_api(api={"burst": 100_000, "rate_per_s": 100_000.0})
schema = schemathesis.openapi.from_asgi("/openapi.json", _app).exclude(path="/v1/stream")
CHECKS = (
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
)


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {HQ}"}, checks=CHECKS)
