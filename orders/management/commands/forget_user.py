"""``python manage.py forget_user USER_ID``: erase one user's personal data everywhere the
project keeps it (the answer to a GDPR erasure request, or Shopify's ``customers/redact``).

The ledger's extra fields of the user's orders and the reasons of their refunds and
cancellations are emptied, the user's rejected messages keep
only the order's own fields and lose their staff notes; orders, amounts and every figure stay
(``orders.privacy.forget_user`` says what is kept where). Idempotent: run it again and it
reports zeros. Logged at INFO with counts, never the data.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.privacy import forget_user


class Command(BaseCommand):
    help = (
        "Erase a user's personal data (ledger extra fields, refund and cancellation reasons, "
        "rejected messages' payloads)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user_id", help="the user_id as sent in orders")

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = options["user_id"]
        if not user_id.strip():
            raise CommandError("USER_ID must not be empty")
        erasure = forget_user(user_id)
        self.stdout.write(
            f"forget_user {user_id}: extra fields emptied on {erasure.ledger_rows:,} ledger "
            f"row(s), reasons emptied on {erasure.event_reasons:,} refund(s) or "
            f"cancellation(s), personal data removed from {erasure.rejected_rows:,} rejected "
            f"message(s), {erasure.staff_notes:,} staff note(s) emptied"
            + ("" if erasure.changed else " (nothing left to erase)")
        )
