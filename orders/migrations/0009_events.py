# Order events (refunds, cancellations): the append-only OrderEvent ledger (its triggers let
# only forget_user's emptying of `reason` through) and the events that wait for their order.
# The ledger's orders gain their currency: rows recorded before it was kept are in the shop's
# currency of the moment the migration runs (STATS_CURRENCY), the only one accepted then.
# Adding a column with a default is DDL on PostgreSQL (no UPDATE runs, no trigger fires); the
# UPDATE trigger is made again because its condition lists every column.

import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models


def shop_currency_code() -> str:
    """Read when the migration runs, not when its module is imported."""
    return settings.STATS_CURRENCY


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0008_rejectedorder_review_and_retention'),
    ]

    operations = [
        migrations.CreateModel(
            name='OrderEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_id', models.CharField(editable=False, max_length=128, unique=True)),
                ('order_id', models.CharField(editable=False, max_length=128)),
                ('user_id', models.CharField(editable=False, help_text="The order's user.", max_length=128)),
                ('kind', models.CharField(choices=[('refunded', 'Refunded'), ('cancelled', 'Cancelled')], editable=False, max_length=16)),
                ('amount_cents', models.BigIntegerField(editable=False, help_text='What the event took off the order, in minor units.')),
                ('items', models.JSONField(editable=False, help_text="Refunded lines [{product_id, quantity, price_per_unit}] at the order's prices (exact text); empty for an amount or a cancellation.")),
                ('occurred_at', models.DateTimeField(editable=False, help_text="occurred_at, else the message's first SentTimestamp (UTC)")),
                ('reason', models.TextField(blank=True, editable=False)),
                ('currency', models.CharField(editable=False, max_length=3)),
                ('fingerprint', models.CharField(editable=False, max_length=80)),
                ('message_id', models.CharField(editable=False, max_length=255)),
                ('received_at', models.DateTimeField(editable=False, help_text='When the ledger recorded it (attached to its order).')),
            ],
            options={
                'ordering': ['occurred_at', 'event_id'],
                'abstract': False,
            },
        ),
        migrations.CreateModel(
            name='WaitingEvent',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('event_id', models.CharField(editable=False, max_length=128, unique=True)),
                ('order_id', models.CharField(editable=False, max_length=128)),
                ('kind', models.CharField(choices=[('refunded', 'Refunded'), ('cancelled', 'Cancelled')], editable=False, max_length=16)),
                ('amount_cents', models.BigIntegerField(editable=False, help_text='The amount given, in minor units (none: by items).', null=True)),
                ('items', models.JSONField(editable=False, help_text='[{product_id, quantity}] as given.')),
                ('stated_at', models.DateTimeField(editable=False, help_text="The message's own occurred_at (UTC), if any.", null=True)),
                ('occurred_at', models.DateTimeField(editable=False)),
                ('reason', models.TextField(blank=True, editable=False)),
                ('currency', models.CharField(editable=False, max_length=3)),
                ('fingerprint', models.CharField(editable=False, max_length=80)),
                ('message_id', models.CharField(editable=False, max_length=255)),
                ('queue_name', models.CharField(blank=True, editable=False, max_length=80)),
                ('receive_count', models.PositiveIntegerField(default=1, editable=False)),
                ('body', models.BinaryField(help_text='The message body as received.')),
                ('received_at', models.DateTimeField(editable=False, help_text='When it was first received.')),
                ('redacted_at', models.DateTimeField(blank=True, editable=False, help_text="When prune_rejected stripped the body's personal fields.", null=True)),
            ],
            options={
                'ordering': ['received_at', 'event_id'],
            },
        ),
        pgtrigger.migrations.RemoveTrigger(
            model_name='acceptedorder',
            name='append_only_no_update',
        ),
        migrations.AddField(
            model_name='acceptedorder',
            name='currency',
            field=models.CharField(default=shop_currency_code, editable=False, help_text='ISO 4217 code of value_cents and the prices.', max_length=3),
            preserve_default=False,
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='acceptedorder',
            trigger=pgtrigger.compiler.Trigger(name='append_only_no_update', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NOT (OLD."id" IS NOT DISTINCT FROM NEW."id" AND OLD."order_id" IS NOT DISTINCT FROM NEW."order_id" AND OLD."user_id" IS NOT DISTINCT FROM NEW."user_id" AND OLD."value_cents" IS NOT DISTINCT FROM NEW."value_cents" AND OLD."ordered_at" IS NOT DISTINCT FROM NEW."ordered_at" AND OLD."day" IS NOT DISTINCT FROM NEW."day" AND OLD."items" IS NOT DISTINCT FROM NEW."items" AND OLD."fingerprint" IS NOT DISTINCT FROM NEW."fingerprint" AND OLD."message_id" IS NOT DISTINCT FROM NEW."message_id" AND OLD."received_at" IS NOT DISTINCT FROM NEW."received_at" AND OLD."currency" IS NOT DISTINCT FROM NEW."currency" AND NEW."extra" = \'{}\'::jsonb))', func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation', HINT = 'Recorded rows are never changed or removed; only forget_user may empty their erasable fields.';", hash='15cba79e49961b9546f64a80f6852e605a71745b', operation='UPDATE', pgid='pgtrigger_append_only_no_update_17b12', table='orders_acceptedorder', when='BEFORE')),
        ),
        migrations.AddIndex(
            model_name='orderevent',
            index=models.Index(fields=['order_id', 'occurred_at', 'event_id'], name='event_order_time_idx'),
        ),
        migrations.AddIndex(
            model_name='orderevent',
            index=models.Index(fields=['received_at'], name='event_received_idx'),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='orderevent',
            trigger=pgtrigger.compiler.Trigger(name='append_only_no_delete', sql=pgtrigger.compiler.UpsertTriggerSql(func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation', HINT = 'Recorded rows are never changed or removed; only forget_user may empty their erasable fields.';", hash='a35ac7303b61d7593e18d37612116569bec045c5', operation='DELETE', pgid='pgtrigger_append_only_no_delete_e2b4a', table='orders_orderevent', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='orderevent',
            trigger=pgtrigger.compiler.Trigger(name='append_only_no_update', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NOT (OLD."id" IS NOT DISTINCT FROM NEW."id" AND OLD."event_id" IS NOT DISTINCT FROM NEW."event_id" AND OLD."order_id" IS NOT DISTINCT FROM NEW."order_id" AND OLD."user_id" IS NOT DISTINCT FROM NEW."user_id" AND OLD."kind" IS NOT DISTINCT FROM NEW."kind" AND OLD."amount_cents" IS NOT DISTINCT FROM NEW."amount_cents" AND OLD."items" IS NOT DISTINCT FROM NEW."items" AND OLD."occurred_at" IS NOT DISTINCT FROM NEW."occurred_at" AND OLD."currency" IS NOT DISTINCT FROM NEW."currency" AND OLD."fingerprint" IS NOT DISTINCT FROM NEW."fingerprint" AND OLD."message_id" IS NOT DISTINCT FROM NEW."message_id" AND OLD."received_at" IS NOT DISTINCT FROM NEW."received_at" AND NEW."reason" = \'\'))', func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation', HINT = 'Recorded rows are never changed or removed; only forget_user may empty their erasable fields.';", hash='3e78605a2481a32a2f53b09ce4ba59dbfbb1dfa8', operation='UPDATE', pgid='pgtrigger_append_only_no_update_fd972', table='orders_orderevent', when='BEFORE')),
        ),
        migrations.AddIndex(
            model_name='waitingevent',
            index=models.Index(fields=['order_id'], name='waiting_order_idx'),
        ),
        migrations.AddIndex(
            model_name='waitingevent',
            index=models.Index(fields=['received_at'], name='waiting_received_idx'),
        ),
    ]
