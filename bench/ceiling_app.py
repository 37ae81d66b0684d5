"""The stats API benchmark's ceiling: a bare WSGI app that does one HGETALL per request.

``bench/api_bench.py`` serves it with the same gunicorn command as the real app (read from
docker-compose.yml) against the same Redis, so the ratio of the two is what Django, DRF and the
project's own code cost on top of the HTTP server and one Redis round trip. The hash read is
named by the bench (``CEILING_KEY``, the store's global hash); this module names no key itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import redis

_client = redis.Redis.from_url(os.environ["CEILING_REDIS_URL"])
_key = os.environ["CEILING_KEY"]


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    values = _client.hgetall(_key)
    body = json.dumps({k.decode(): int(v) for k, v in values.items()}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
