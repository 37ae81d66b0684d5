"""Append-only models: rows that, once written, are never changed or removed.

The ledger is the record of truth the Redis figures are derived from, so its history must not
change, whoever asks. Two layers enforce it, and a model gets both by subclassing
``AppendOnlyModel`` (and, when it declares its own ``Meta``, subclassing
``AppendOnlyModel.Meta``, which carries the triggers)::

    class OrderEvent(AppendOnlyModel):
        ...
        class Meta(AppendOnlyModel.Meta):
            indexes = [...]
            # only when some fields may hold personal data:
            triggers = append_only_triggers(erasable=("reason",))

- in Python, ``save()`` of an existing row, ``delete()`` and the queryset's ``update()`` and
  ``delete()`` raise ``LedgerIsAppendOnlyError`` (on every database);
- on PostgreSQL, triggers (django-pgtrigger, created by the model's migration) refuse every
  ``DELETE`` and every ``UPDATE`` from any client: a ``psql`` shell, another program, a raw
  cursor.

The one change allowed is erasure: a model names in its triggers the fields that may hold
personal data (``erasable``: JSON fields, emptied to ``{}``, and text fields, emptied to
``''``), and an ``UPDATE`` that empties only those and leaves every other column as it was
passes the trigger (``AppendOnlyQuerySet.erase``, used by
``forget_user``); the triggers are the one place that lists them, on every database.
No figure depends on those fields, so erasing them changes no history the figures are built
from. Neither layer covers ``TRUNCATE`` (a table owner's command, which Django's test flush
uses) or a role that can drop the trigger; pgtrigger's own ``pgtrigger.ignore`` switch, which
the application never uses, is as deliberate a bypass as dropping it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pgtrigger
from django.db import models


class LedgerIsAppendOnlyError(Exception):
    """Raised on any attempt to change or remove a recorded row: the ledger is the record of
    truth the Redis aggregates are derived from, so a row, once written, stays as it was."""


_M = TypeVar("_M", bound=models.Model)


class AppendOnlyQuerySet(models.QuerySet[_M]):
    def update(self, **kwargs: Any) -> int:
        raise LedgerIsAppendOnlyError("ledger rows are never updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise LedgerIsAppendOnlyError("ledger rows are never deleted")

    def erase(self) -> int:
        """Empty the model's erasable fields (``erasable_fields``) on these rows; returns how
        many rows. The one sanctioned change: what the triggers let through on PostgreSQL.
        Filter the rows that still hold something first, so that a second erasure reports 0.
        """
        fields = erasable_fields(self.model)
        if not fields:
            return 0
        return super().update(**{name: _empty(self.model, name) for name in fields})


def _empty(model: type[models.Model], name: str) -> dict[str, Any] | str:
    """What erasing field ``name`` leaves: ``{}`` in a JSON field, ``''`` in a text field."""
    return {} if isinstance(model._meta.get_field(name), models.JSONField) else ""


class NotAnErasure(pgtrigger.Condition):
    """True for an UPDATE that changes anything other than emptying the ``erasable`` fields
    (JSON to ``{}``, text to ``''``). Resolved from the model's columns when the migration is
    made, so a column added later is protected as soon as its migration exists."""

    def __init__(self, erasable: tuple[str, ...]) -> None:
        super().__init__(sql="(resolved per model)")
        self.erasable = erasable

    def resolve(self, model: type[models.Model]) -> str:
        kept = [f.column for f in model._meta.concrete_fields if f.name not in self.erasable]
        checks = [f'OLD."{column}" IS NOT DISTINCT FROM NEW."{column}"' for column in kept]
        for name in self.erasable:
            field = model._meta.get_field(name)
            if isinstance(field, models.JSONField):
                checks.append(f"NEW.\"{field.column}\" = '{{}}'::jsonb")
            elif isinstance(field, models.CharField | models.TextField):
                checks.append(f"NEW.\"{field.column}\" = ''")
            else:
                raise TypeError(
                    f"{model.__name__}.{name}: only JSON and text fields can be erasable"
                )
        return "NOT (" + " AND ".join(checks) + ")"


_REFUSE = (
    "RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
    "USING ERRCODE = 'integrity_constraint_violation', "
    "HINT = 'Recorded rows are never changed or removed; only forget_user may empty "
    "their erasable fields.';"
)


def append_only_triggers(erasable: tuple[str, ...] = ()) -> list[pgtrigger.Trigger]:
    """The PostgreSQL triggers of an append-only model (``Meta.triggers``): no DELETE, and no
    UPDATE but one that empties the ``erasable`` fields."""
    return [
        pgtrigger.Trigger(
            name="append_only_no_delete",
            when=pgtrigger.Before,
            operation=pgtrigger.Delete,
            func=_REFUSE,
        ),
        pgtrigger.Trigger(
            name="append_only_no_update",
            when=pgtrigger.Before,
            operation=pgtrigger.Update,
            condition=NotAnErasure(erasable),
            func=_REFUSE,
        ),
    ]


def erasable_fields(model: type[models.Model]) -> tuple[str, ...]:
    """The fields ``model``'s triggers let an erasure empty (its ``Meta.triggers``)."""
    return tuple(
        name
        for trigger in getattr(model._meta, "triggers", [])
        if isinstance(trigger.condition, NotAnErasure)
        for name in trigger.condition.erasable
    )


class AppendOnlyModel(models.Model):
    """Rows that are inserted, never changed (see the module docstring)."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True
        triggers = append_only_triggers()

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise LedgerIsAppendOnlyError("ledger rows are never updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise LedgerIsAppendOnlyError("ledger rows are never deleted")
