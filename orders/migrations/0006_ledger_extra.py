# The ledger stops keeping message bodies: it keeps the order, plus the body's fields listed in
# LEDGER_EXTRA_FIELDS (none by default) in `extra`. Existing rows keep those fields of their
# old body, then the body column (with every shipping_address and payment_method) is dropped.
# Going back restores the column empty (its default): the bodies are gone for good.

from django.conf import settings
from django.db import migrations, models

from orders.validation import kept_fields

_BATCH = 2000


def keep_listed_fields(apps, schema_editor):
    """``extra`` from each old body: only the fields listed in LEDGER_EXTRA_FIELDS when this
    runs (nothing to read when none are listed). Runs before the append-only trigger exists."""
    names = settings.LEDGER_EXTRA_FIELDS
    if not names:
        return
    db = schema_editor.connection.alias
    AcceptedOrder = apps.get_model("orders", "AcceptedOrder")
    rows = AcceptedOrder.objects.using(db).order_by("pk").values_list("pk", "body")
    batch = []
    for pk, body in rows.iterator(chunk_size=_BATCH):
        extra = kept_fields(body, names)
        if extra:
            batch.append(AcceptedOrder(pk=pk, extra=extra))
        if len(batch) >= _BATCH:
            AcceptedOrder.objects.using(db).bulk_update(batch, ["extra"])
            batch = []
    AcceptedOrder.objects.using(db).bulk_update(batch, ["extra"])


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0005_rejectedordercode'),
    ]

    operations = [
        migrations.AddField(
            model_name='acceptedorder',
            name='extra',
            field=models.JSONField(default=dict, editable=False, help_text="The body's fields listed in LEDGER_EXTRA_FIELDS (none by default), numbers with a fraction or exponent as their exact text."),
        ),
        migrations.RunPython(keep_listed_fields, migrations.RunPython.noop),
        # A default, so that reversing the removal can add the column back to existing rows.
        migrations.AlterField(
            model_name='acceptedorder',
            name='body',
            field=models.TextField(default='', editable=False),
        ),
        migrations.RemoveField(
            model_name='acceptedorder',
            name='body',
        ),
    ]
