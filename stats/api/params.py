"""Query-parameter parsing: each bad value becomes a 400 naming the parameter and the rule.

Serializers rather than hand-written ``int()`` calls, so the messages follow DRF's shape
(``{"limit": ["..."]}``) and drf-spectacular documents the same rules it enforces. The views
run them through ``validate_query`` on one shared instance each, not a new serializer per
request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers
from rest_framework.fields import SkipField, empty, get_error_detail

LIMIT_DEFAULT = 5
LIMIT_MIN = 1
LIMIT_MAX = 100

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class StrictDateField(serializers.DateField):
    """``YYYY-MM-DD`` and a real calendar day, nothing else.

    ``date.fromisoformat`` alone also takes ``20250101`` and ``2025-W01-1``; ``strptime``
    takes ``2025-1-1``. A wrong shape and an impossible day get different messages, so a
    client sees whether to fix the format or the date.
    """

    default_error_messages = {
        "invalid": "Must be a date in the form YYYY-MM-DD (got {value!r}).",
        "not_a_day": "{value} is not a calendar date.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="%Y-%m-%d", input_formats=["%Y-%m-%d"], **kwargs)

    def to_internal_value(self, value: Any) -> date:
        text = value if isinstance(value, str) else ""
        if not _ISO_DATE.fullmatch(text):
            self.fail("invalid", value=str(value)[:40])
        try:
            return date.fromisoformat(text)
        except ValueError:
            self.fail("not_a_day", value=text)


class LimitParams(serializers.Serializer[dict[str, Any]]):
    limit = serializers.IntegerField(
        required=False,
        default=LIMIT_DEFAULT,
        min_value=LIMIT_MIN,
        max_value=LIMIT_MAX,
        help_text=f"How many users to return, {LIMIT_MIN}-{LIMIT_MAX} (default {LIMIT_DEFAULT}).",
    )


class DateRangeParams(serializers.Serializer[dict[str, Any]]):
    start_date = StrictDateField(help_text="First day (UTC), YYYY-MM-DD, inclusive.")
    end_date = StrictDateField(
        help_text="Last day (UTC), YYYY-MM-DD, inclusive; not before start_date, and the "
        "range spans at most STATS_MAX_RANGE_DAYS days (366 by default)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs["start_date"], attrs["end_date"]
        if end < start:
            raise serializers.ValidationError(
                {"end_date": [f"Must not be before start_date ({start.isoformat()})."]}
            )
        span = (end - start).days + 1
        limit = settings.STATS_MAX_RANGE_DAYS
        if span > limit:
            raise serializers.ValidationError(
                {"end_date": [f"The range may span at most {limit} days; this one spans {span}."]}
            )
        return attrs


def validate_query(
    params: serializers.Serializer[dict[str, Any]], query: Mapping[str, str]
) -> dict[str, Any]:
    """``type(params)(data=query)``'s ``validated_data``, or its 400, through ``params``' fields.

    What ``Serializer.is_valid`` does for flat query parameters (each field, its
    ``validate_<name>`` method, then ``validate``), but on one shared instance: a new serializer
    per request deep-copies its fields, which cost about a tenth of a request. The fields keep
    no state between calls, so the instance is shared by all threads.
    """
    values: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for name, field in params.fields.items():
        method = getattr(params, f"validate_{name}", None)
        try:
            value = field.run_validation(query.get(name, empty))
            values[name] = method(value) if method is not None else value
        except serializers.ValidationError as exc:
            errors[name] = exc.detail
        except DjangoValidationError as exc:
            errors[name] = get_error_detail(exc)
        except SkipField:
            pass
    if errors:
        raise serializers.ValidationError(errors)
    validated: dict[str, Any] = params.validate(values)
    return validated


LIMIT_PARAMS = LimitParams()
DATE_RANGE_PARAMS = DateRangeParams()
