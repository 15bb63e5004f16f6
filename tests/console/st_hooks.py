"""A schemathesis check of our own (loaded with ``SCHEMATHESIS_HOOKS``): every error is an RFC
9457 problem document whose ``status`` is the response's, and every 400 names the parameter or
body field that was wrong."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.check
def errors_are_problems_naming_the_parameter(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type") or response.headers.get("Content-Type")
    value = content_type[0] if isinstance(content_type, list) else str(content_type)
    if not value.startswith("application/problem+json"):
        raise AssertionError(f"{response.status_code} is not a problem document: {value}")
    body = json.loads(response.content)
    if body.get("status") != response.status_code:
        raise AssertionError(f"problem status {body.get('status')} != {response.status_code}")
    if response.status_code == 400 and not body.get("parameter"):
        raise AssertionError(f"a 400 that names no parameter: {body.get('detail')}")
    return None
