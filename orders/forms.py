"""Admin form for fixing a rejected order: the corrected payload must pass the same validator,
and must not be one the consumer would reject again."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from orders.commit import RECORDED_TYPES
from orders.models import RejectedOrder
from orders.validation import DUPLICATE_ORDER_ID, Rejection, safe_text, validate_message


def payload_errors(payload: str, row: RejectedOrder | None = None) -> list[str]:
    """Why ``payload`` would be rejected by the consumer (empty when it would be accepted).

    Validated as if received now: a payload without ``order_timestamp`` is dated on
    resubmission by the first SentTimestamp of ``row``'s message, so it must not fail for
    lack of a date here. A row rejected as ``duplicate_order_id`` cannot go back with the same
    ``order_id``: the first version of that order stands, so it would be rejected again. A
    message of a type the consumer does not record (``RECORDED_TYPES``) is ``unknown_type``
    here as there.
    """
    result = validate_message(payload, received_at=timezone.now(), types=RECORDED_TYPES)
    if isinstance(result, Rejection):
        return [f"{r.code} ({r.field}): {r.message}" for r in result.reasons]
    if row is not None and DUPLICATE_ORDER_ID in row.codes and result.order_id == row.order_id:
        return [
            f"{DUPLICATE_ORDER_ID} (order_id): order {safe_text(result.order_id, 80)!r} was "
            "already applied with a different payload, so this order would be rejected again; "
            "give the corrected order another order_id."
        ]
    return []


class RejectedOrderForm(forms.ModelForm[RejectedOrder]):
    class Meta:
        model = RejectedOrder
        fields = ["staff_note", "corrected_payload"]
        widgets = {
            "corrected_payload": forms.Textarea(
                attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}
            ),
        }

    def clean_corrected_payload(self) -> str:
        payload: str = self.cleaned_data.get("corrected_payload", "")
        if payload.strip():
            errors = payload_errors(payload, self.instance)
            if errors:
                raise ValidationError(errors)
        return payload
