"""Query-parameter parsing: each bad value becomes a 400 naming the parameter and the rule.

Serializers rather than hand-written ``int()`` calls, so the messages follow DRF's shape
(``{"limit": ["..."]}``) and drf-spectacular documents the same rules it enforces. The views
run them through ``validate_query`` on one shared instance each, not a new serializer per
request.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.fields import SkipField, empty, get_error_detail

from orderpipe.api.errors import refuse_repeated
from stats.api.intervals import INTERVALS, MAX_BUCKETS, bucket_count, previous_period

# The days whose hours can be told in any zone (see HourParams).
HOURS_FIRST_DAY = date(1, 1, 2)
HOURS_LAST_DAY = date(9999, 12, 30)
LIMIT_DEFAULT = 5
LIMIT_MIN = 1
LIMIT_MAX = 100

# What /stats/top-products may rank by.
PRODUCT_ORDERS = ("revenue", "units")

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
    start_date = StrictDateField(
        help_text="First day (in the shop's time zone, STATS_TIME_ZONE), YYYY-MM-DD, inclusive."
    )
    end_date = StrictDateField(
        help_text="Last day, YYYY-MM-DD, inclusive; not before start_date. With interval=day "
        "the range spans at most STATS_MAX_RANGE_DAYS days (366 by default); with week or "
        f"month it touches at most {MAX_BUCKETS} weeks or months."
    )
    interval = serializers.ChoiceField(
        choices=INTERVALS,
        required=False,
        default="day",
        help_text="Bucket size: day (default), week (ISO weeks, Monday to Sunday) or month "
        "(calendar months). Each bucket is named by its first day and counts only the days "
        "inside the range.",
    )
    compare = serializers.ChoiceField(
        choices=["previous"],
        required=False,
        help_text="previous: also the same figures for the period just before, as long as "
        "this one (the same number of days; for interval=month over whole months, the same "
        "number of months), under `previous`.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end, interval = attrs["start_date"], attrs["end_date"], attrs["interval"]
        if end < start:
            raise serializers.ValidationError(
                {"end_date": [f"Must not be before start_date ({start.isoformat()})."]}
            )
        span = (end - start).days + 1
        limit = settings.STATS_MAX_RANGE_DAYS
        if interval == "day" and span > limit:
            raise serializers.ValidationError(
                {"end_date": [f"The range may span at most {limit} days; this one spans {span}."]}
            )
        count = bucket_count(start, end, interval)
        if count > MAX_BUCKETS:
            raise serializers.ValidationError(
                {
                    "end_date": [
                        f"A response has at most {MAX_BUCKETS} buckets: the range may touch at "
                        f"most {MAX_BUCKETS} {interval}s; this one touches {count}."
                    ]
                }
            )
        if attrs.get("compare") == "previous":
            try:
                attrs["previous"] = previous_period(start, end, interval)
            except OverflowError:
                rule = f"The period before {start.isoformat()} would start before 0001-01-01."
                raise serializers.ValidationError({"compare": [rule]}) from None
        return attrs


class TopProductsParams(serializers.Serializer[dict[str, Any]]):
    limit = serializers.IntegerField(
        required=False,
        default=LIMIT_DEFAULT,
        min_value=LIMIT_MIN,
        max_value=LIMIT_MAX,
        help_text=f"How many products to return, {LIMIT_MIN}-{LIMIT_MAX} (default "
        f"{LIMIT_DEFAULT}).",
    )
    by = serializers.ChoiceField(
        choices=PRODUCT_ORDERS,
        required=False,
        default="revenue",
        help_text="What the ranking is by: revenue (net, default) or units (net).",
    )
    start_date = StrictDateField(
        required=False,
        help_text="First day (in the shop's time zone), YYYY-MM-DD, inclusive; with end_date. "
        "Without both: all time.",
    )
    end_date = StrictDateField(
        required=False,
        help_text="Last day, YYYY-MM-DD, inclusive; with start_date, not before it; the range "
        "spans at most STATS_MAX_RANGE_DAYS days (366 by default).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("start_date"), attrs.get("end_date")
        if start is None and end is None:
            return attrs
        if start is None or end is None:
            missing, given = (
                ("end_date", "start_date") if end is None else ("start_date", "end_date")
            )
            raise serializers.ValidationError(
                {missing: [f"Required with {given}: a range names both of its days."]}
            )
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


class HourParams(serializers.Serializer[dict[str, Any]]):
    date = StrictDateField(
        required=False,
        help_text="The day, YYYY-MM-DD, in the shop's time zone (STATS_TIME_ZONE); default: "
        "today there. From 0001-01-02 (0001-01-03 with compare=previous) to 9999-12-30: a "
        "day's hours at the calendar's ends cannot be told in every zone.",
    )
    compare = serializers.ChoiceField(
        choices=["previous"],
        required=False,
        help_text="previous: also the hours of the day before, under `previous`.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A day's hours run from its local midnight to the next one, as UTC instants: within
        # a day of the calendar's ends, in some zone, one of them does not exist.
        day = attrs.get("date")
        first = HOURS_FIRST_DAY + timedelta(days=1 if attrs.get("compare") else 0)
        if day is not None and not first <= day <= HOURS_LAST_DAY:
            rule = f"Must be a day from {first.isoformat()} to {HOURS_LAST_DAY.isoformat()}."
            raise serializers.ValidationError({"date": [rule]})
        return attrs


def validate_query(
    params: serializers.Serializer[dict[str, Any]], query: QueryDict
) -> dict[str, Any]:
    """``type(params)(data=query)``'s ``validated_data``, or its 400, through ``params``' fields.

    What ``Serializer.is_valid`` does for flat query parameters, each given once (each field, its
    ``validate_<name>`` method, then ``validate``), but on one shared instance: a new serializer
    per request deep-copies its fields, which cost about a tenth of a request. The fields keep
    no state between calls, so the instance is shared by all threads.
    """
    refuse_repeated(query, params.fields)
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
TOP_PRODUCTS_PARAMS = TopProductsParams()
HOUR_PARAMS = HourParams()
