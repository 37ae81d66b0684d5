"""The stats API benchmark's ceilings: bare WSGI apps doing the least work an endpoint could.

``bench/api_bench.py`` serves this module with the same gunicorn command as the real app (read
from docker-compose.yml) against the same Redis, so the ratio of the two is what Django, DRF
and the project's own code cost on top of the HTTP server, the Redis round trip and the body:

- any path but ``/days``: one ``HGETALL`` of a small hash (``CEILING_KEY``, the store's global
  hash), its fields as a JSON object: the simple ceiling;
- ``/days?start_date=&end_date=``: what ``/stats/by-date`` does, bare: the range's days read
  from one Redis hash in one call (``HMGET`` of one field per day, ``orders:gross:refunded``, in
  ``CEILING_DAYS_KEY``, which the bench fills from the store) and the same JSON body, written
  by ``json.dumps`` (money as floats: ``12.5`` where orderpipe writes ``12.50``, the same
  number).

The keys are named by the bench; this module names none itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any
from urllib.parse import parse_qs

import redis

_client = redis.Redis.from_url(os.environ["CEILING_REDIS_URL"])
_key = os.environ["CEILING_KEY"]
_days_key = os.environ.get("CEILING_DAYS_KEY", "")
_DAY = timedelta(days=1)


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/days":
        body = json.dumps(days_body(environ.get("QUERY_STRING", "")), separators=(",", ":"))
    else:
        values = _client.hgetall(_key)
        body = json.dumps({k.decode(): int(v) for k, v in values.items()})
    encoded = body.encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(encoded)))]
    )
    return [encoded]


def days_body(query: str) -> dict[str, Any]:
    """/stats/by-date's body for ``interval=day``, money in USD (two decimals)."""
    params = parse_qs(query)
    start = date.fromisoformat(params["start_date"][0])
    end = date.fromisoformat(params["end_date"][0])
    names = []
    day = start
    while day <= end:
        names.append(day.isoformat())
        day += _DAY
    rows = []
    orders = gross = refunded = 0
    for name, value in zip(names, _client.hmget(_days_key, names), strict=True):
        o, g, r = map(int, value.split(b":")) if value else (0, 0, 0)
        orders, gross, refunded = orders + o, gross + g, refunded + r
        rows.append(
            {
                "date": name,
                "total_orders": o,
                "total_revenue": (g - r) / 100,
                "gross_revenue": g / 100,
                "refunded": r / 100,
            }
        )
    return {
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "interval": "day",
        "currency": "USD",
        "total_orders": orders,
        "total_revenue": (gross - refunded) / 100,
        "gross_revenue": gross / 100,
        "refunded": refunded / 100,
        "days": rows,
    }
