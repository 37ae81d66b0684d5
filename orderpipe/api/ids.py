"""Order and user ids in URL paths: any characters (percent-encoded), at most as long as
validation lets an id be.

A longer value can name no stored order or user, so it is a 400 naming the parameter rather
than a lookup that finds nothing; both APIs document the rule with the same parameter.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from rest_framework import serializers

from orders.validation import MAX_ID_LENGTH


def too_long_error(name: str) -> dict[str, list[str]]:
    """The 400 body of an over-long ``name``, as answered and as the schema's example."""
    return {name: [f"Must be at most {MAX_ID_LENGTH} characters long."]}


def validate_path_id(name: str, value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise serializers.ValidationError(too_long_error(name))
    return value


def validate_user_id(user_id: str) -> str:
    return validate_path_id("user_id", user_id)


def path_id_parameter(
    name: str, description: str, examples: list[OpenApiExample] | None = None
) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        OpenApiParameter.PATH,
        description=f"{description} (percent-encode it, `/` as `%2F`), 1-{MAX_ID_LENGTH} chars.",
        examples=examples or [],
    )
