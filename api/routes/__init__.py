"""The API's routes, one module per resource."""

from __future__ import annotations

from typing import Any


def operation(tag: str, verb: str) -> dict[str, Any]:
    """A route's one tag and its operation id, `<tag>.<verb>`: what a client generated from
    /openapi.json calls it (`conversations.start`, `messages.post`), whatever the function's
    name in this code."""
    return {"tags": [tag], "operation_id": f"{tag}.{verb}"}
