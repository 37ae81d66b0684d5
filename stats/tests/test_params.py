"""``validate_query`` on a shared serializer answers exactly what a new serializer would.

The views validate query parameters through one ``LimitParams`` / ``DateRangeParams`` instance
each (``stats.api.params.validate_query``) instead of a serializer per request; these cases
hold both ways to the same values and the same error bodies, including several errors at once
and the cross-field rules.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.http import QueryDict
from rest_framework import serializers

from stats.api.params import (
    DATE_RANGE_PARAMS,
    LIMIT_PARAMS,
    DateRangeParams,
    LimitParams,
    validate_query,
)


def serializer_outcome(cls: type[serializers.Serializer[Any]], query: QueryDict) -> Any:
    params = cls(data=query.dict())
    return dict(params.validated_data) if params.is_valid() else {"errors": params.errors}


def shared_outcome(params: serializers.Serializer[dict[str, Any]], query: QueryDict) -> Any:
    try:
        return validate_query(params, query)
    except serializers.ValidationError as exc:
        return {"errors": exc.detail}


@pytest.mark.parametrize(
    "query",
    ["", "limit=7", "limit=1", "limit=100", "limit=0", "limit=101", "limit=abc", "limit=",
     "limit=2.5", "limit=" + "9" * 400, "format=json&limit=2", "other=1"],
)  # fmt: skip
def test_limit_is_validated_as_by_a_new_serializer(query: str) -> None:
    q = QueryDict(query)

    assert shared_outcome(LIMIT_PARAMS, q) == serializer_outcome(LimitParams, q)


@pytest.mark.parametrize(
    "query",
    [
        "start_date=2025-01-01&end_date=2025-01-31",
        "start_date=2024-02-29&end_date=2024-02-29",
        "start_date=2024-08-01&end_date=2025-08-01",
        "start_date=2024-08-01&end_date=2025-08-02",
        "start_date=2025-02-01&end_date=2025-01-31",
        "start_date=2025-02-30&end_date=2025-03-01",
        "start_date=2025/01/01&end_date=20250102",
        "start_date=&end_date=",
        "end_date=2025-01-02",
        "",
    ],
)
def test_date_range_is_validated_as_by_a_new_serializer(query: str) -> None:
    q = QueryDict(query)

    assert shared_outcome(DATE_RANGE_PARAMS, q) == serializer_outcome(DateRangeParams, q)


@pytest.mark.parametrize(
    ("params", "query", "repeated"),
    [
        (LIMIT_PARAMS, "limit=3&limit=4", ["limit"]),
        (LIMIT_PARAMS, "limit=3&limit=3", ["limit"]),
        (DATE_RANGE_PARAMS, "start_date=2025-01-01&start_date=2025-01-05&end_date=2025-01-02",
         ["start_date"]),
        (DATE_RANGE_PARAMS, "start_date=2025-01-01&start_date=x&end_date=1&end_date=2",
         ["start_date", "end_date"]),
    ],
)  # fmt: skip
def test_a_parameter_given_twice_is_refused_naming_it(
    params: serializers.Serializer[dict[str, Any]], query: str, repeated: list[str]
) -> None:
    """Where a new serializer would read the last value (and so answer another request
    than the one asked), the shared one refuses before reading any."""
    outcome = shared_outcome(params, QueryDict(query))

    assert outcome == {"errors": {name: ["Give this parameter once."] for name in repeated}}


def test_range_limit_is_read_per_call(settings) -> None:
    settings.STATS_MAX_RANGE_DAYS = 2
    q = QueryDict("start_date=2025-01-01&end_date=2025-01-03")

    assert shared_outcome(DATE_RANGE_PARAMS, q) == {
        "errors": {"end_date": ["The range may span at most 2 days; this one spans 3."]}
    }


def test_field_validate_methods_run_as_in_a_serializer() -> None:
    class Even(serializers.Serializer[dict[str, Any]]):
        n = serializers.IntegerField()

        def validate_n(self, value: int) -> int:
            if value % 2:
                raise serializers.ValidationError("Must be even.")
            return value * 10

    assert validate_query(Even(), QueryDict("n=4")) == {"n": 40}
    assert shared_outcome(Even(), QueryDict("n=3")) == {"errors": {"n": ["Must be even."]}}
