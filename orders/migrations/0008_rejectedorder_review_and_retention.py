# Resubmission and export get their own permissions; a duplicate counted as a new order records
# who decided, when and why; retention marks what it removed (rejected_unredacted_idx: the rows
# prune_rejected has still to visit).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0007_ledger_append_only_triggers'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='rejectedorder',
            options={'ordering': ['-received_at', '-pk'], 'permissions': [('resubmit_rejectedorder', 'Can resubmit a corrected rejected order to the queue'), ('export_rejectedorder', 'Can export rejected orders, bodies included, as CSV')]},
        ),
        migrations.AddField(
            model_name='rejectedorder',
            name='new_order_decided_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='rejectedorder',
            name='new_order_decided_by',
            field=models.ForeignKey(blank=True, editable=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='rejectedorder',
            name='new_order_reason',
            field=models.TextField(blank=True, editable=False, help_text='Why this duplicate_order_id message is a different order and not a changed re-send of the one already counted.'),
        ),
        migrations.AddField(
            model_name='rejectedorder',
            name='redacted_at',
            field=models.DateTimeField(blank=True, editable=False, help_text='When personal data was removed from the body and the corrected payload (prune_rejected after REJECTED_RETENTION_DAYS, or forget_user).', null=True),
        ),
        migrations.AddField(
            model_name='rejectedorder',
            name='redaction',
            field=models.CharField(blank=True, choices=[('fields', "Personal fields removed: only the order's own fields are kept"), ('whole', 'Removed whole: it was not a JSON object')], editable=False, max_length=16),
        ),
        migrations.AlterField(
            model_name='rejectedorder',
            name='corrected_payload',
            field=models.TextField(blank=True, help_text="A fixed order (JSON): it must pass validation and keep the message's user_id and order_id; resubmit sends it to the queue."),
        ),
        migrations.AddIndex(
            model_name='rejectedorder',
            index=models.Index(condition=models.Q(('redacted_at__isnull', True)), fields=['received_at', 'id'], name='rejected_unredacted_idx'),
        ),
    ]
