"""Admin form for fixing a rejected order: the corrected payload must pass the same validator."""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from orders.models import RejectedOrder
from orders.validation import Rejection, validate_message


def payload_errors(payload: str) -> list[str]:
    """Why ``payload`` would be rejected by the consumer (empty when it would be accepted).

    Validated as if received now: a payload without ``order_timestamp`` will be dated by its
    SQS SentTimestamp on resubmission, so it must not fail for lack of a date here.
    """
    result = validate_message(payload, received_at=timezone.now())
    if isinstance(result, Rejection):
        return [f"{r.code} ({r.field}): {r.message}" for r in result.reasons]
    return []


class RejectedOrderForm(forms.ModelForm):
    class Meta:
        model = RejectedOrder
        fields = ["staff_note", "corrected_payload"]
        widgets = {
            "corrected_payload": forms.Textarea(
                attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}
            ),
        }

    def clean_corrected_payload(self) -> str:
        payload = self.cleaned_data.get("corrected_payload", "")
        if payload.strip():
            errors = payload_errors(payload)
            if errors:
                raise ValidationError(errors)
        return payload
