"""Admin form for fixing a rejected order: the corrected payload must pass the same validator,
must be the same order (its user_id and order_id), and must not be one the consumer would
reject again.

A ``duplicate_order_id`` message is usually a changed re-send of an order already counted;
sent back under another order_id it would be counted twice. So it goes back only as a new
order, by an explicit decision (a tick and a reason, recorded on the row and logged) of a
reviewer allowed to resubmit.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils import timezone

from orders.commit import RECORDED_TYPES
from orders.models import AcceptedOrder, RejectedOrder
from orders.validation import (
    DUPLICATE_ORDER_ID,
    Event,
    Order,
    Rejection,
    safe_text,
    validate_message,
)


def payload_errors(
    payload: str, row: RejectedOrder | None = None, *, new_order_decided: bool = False
) -> list[str]:
    """Why ``payload`` cannot be resubmitted for ``row`` (empty when it can).

    Validated as if received now: a payload without ``order_timestamp`` is dated on
    resubmission by the first SentTimestamp of ``row``'s message, so it must not fail for
    lack of a date here. A fix keeps the row's ``user_id`` and ``order_id``; only a
    ``duplicate_order_id`` row with ``new_order_decided`` may (and must) take a new
    ``order_id``, one the ledger does not hold. A message of a type the consumer does not
    record (``RECORDED_TYPES``) is ``unknown_type`` here as there.
    """
    result = validate_message(payload, received_at=timezone.now(), types=RECORDED_TYPES)
    if isinstance(result, Rejection):
        return [f"{r.code} ({r.field}): {r.message}" for r in result.reasons]
    return [] if row is None else _identity_errors(result, row, new_order_decided)


def _identity_errors(
    order: Order | Event, row: RejectedOrder, new_order_decided: bool
) -> list[str]:
    # An event (refund, cancellation) names no user: its order_id is its identity.
    user_id = order.user_id if isinstance(order, Order) else None
    if row.order_id is None or (user_id is not None and row.user_id is None):
        return [
            "order_id, user_id: the rejected message has no readable order_id or user_id, and a "
            "corrected order must keep both; its producer has to send this order again."
        ]
    errors = []
    if user_id is not None and user_id != row.user_id:
        errors.append(
            f"user_id: a corrected order keeps the rejected message's user_id "
            f"{safe_text(row.user_id or '', 80)!r}, not {safe_text(user_id, 80)!r}."
        )
    original = safe_text(row.order_id, 80)
    if DUPLICATE_ORDER_ID not in row.codes:
        if order.order_id != row.order_id:
            errors.append(
                f"order_id: a corrected order keeps the rejected message's order_id "
                f"{original!r}, not {safe_text(order.order_id, 80)!r}."
            )
        return errors
    if order.order_id == row.order_id:
        errors.append(
            f"{DUPLICATE_ORDER_ID} (order_id): order {original!r} was already counted with a "
            "different payload, and the consumer would reject this again. A changed re-send of "
            "that order is not a new order: mark this row reviewed. Only if it is a different "
            "order that reused the id, give it a new order_id and record that decision."
        )
    elif not new_order_decided:
        errors.append(
            f"order_id: a new order_id counts this message as an order besides {original!r}; "
            "that needs the decision 'count as a new order', with its reason, by a reviewer "
            "allowed to resubmit."
        )
    elif AcceptedOrder.objects.filter(order_id=order.order_id).exists():
        errors.append(
            f"order_id: order {safe_text(order.order_id, 80)!r} is already in the ledger; "
            "choose an order_id no order has."
        )
    return errors


class RejectedOrderForm(forms.ModelForm[RejectedOrder]):
    class Meta:
        model = RejectedOrder
        fields = ["staff_note", "corrected_payload"]
        widgets = {
            "corrected_payload": forms.Textarea(
                attrs={"rows": 16, "cols": 100, "style": "font-family: monospace"}
            ),
        }

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        deciding = cleaned.get("count_as_new_order", False)
        payload = cleaned.get("corrected_payload", "")
        if payload.strip() and "corrected_payload" not in self.errors:
            # A decision recorded earlier holds for the payload it was made with, not another.
            decided = deciding or (
                self.instance.new_order_decided_at is not None
                and "corrected_payload" not in self.changed_data
            )
            errors = payload_errors(payload, self.instance, new_order_decided=decided)
            if errors:
                self.add_error("corrected_payload", errors)
        return cleaned


class NewOrderDecisionForm(RejectedOrderForm):
    """The form of a ``duplicate_order_id`` row for a reviewer allowed to resubmit: it adds
    the decision to count the message as a new order (the admin records and logs it)."""

    count_as_new_order = forms.BooleanField(
        required=False,
        label="Count as a new order",
        help_text="This message is a different order that reused an order_id, not a changed "
        "re-send of the order already counted: it goes back under the new order_id of the "
        "corrected payload and is counted besides the first. Recorded with your name and "
        "logged.",
    )
    decision_reason = forms.CharField(
        required=False,
        label="Why",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 100}),
        help_text="What shows it is a different order (kept on the row as the record of the "
        "decision: no personal data).",
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("count_as_new_order") and not cleaned.get("decision_reason", "").strip():
            self.add_error("decision_reason", "Say why this is a different order.")
        return cleaned
