# On PostgreSQL the database itself refuses DELETE and UPDATE of ledger rows (an UPDATE that
# only empties `extra`, forget_user's erasure, excepted); elsewhere these operations do nothing.
# After 0006, whose data migration updates rows.

import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('orders', '0006_ledger_extra'),
    ]

    operations = [
        pgtrigger.migrations.AddTrigger(
            model_name='acceptedorder',
            trigger=pgtrigger.compiler.Trigger(name='append_only_no_delete', sql=pgtrigger.compiler.UpsertTriggerSql(func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation', HINT = 'Recorded rows are never changed or removed; only forget_user may empty their erasable fields.';", hash='18d5fa6ec4faa1da5cca98c071500582171d0b5d', operation='DELETE', pgid='pgtrigger_append_only_no_delete_34068', table='orders_acceptedorder', when='BEFORE')),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name='acceptedorder',
            trigger=pgtrigger.compiler.Trigger(name='append_only_no_update', sql=pgtrigger.compiler.UpsertTriggerSql(condition='WHEN (NOT (OLD."id" IS NOT DISTINCT FROM NEW."id" AND OLD."order_id" IS NOT DISTINCT FROM NEW."order_id" AND OLD."user_id" IS NOT DISTINCT FROM NEW."user_id" AND OLD."value_cents" IS NOT DISTINCT FROM NEW."value_cents" AND OLD."ordered_at" IS NOT DISTINCT FROM NEW."ordered_at" AND OLD."day" IS NOT DISTINCT FROM NEW."day" AND OLD."items" IS NOT DISTINCT FROM NEW."items" AND OLD."fingerprint" IS NOT DISTINCT FROM NEW."fingerprint" AND OLD."message_id" IS NOT DISTINCT FROM NEW."message_id" AND OLD."received_at" IS NOT DISTINCT FROM NEW."received_at" AND NEW."extra" = \'{}\'::jsonb))', func="RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'integrity_constraint_violation', HINT = 'Recorded rows are never changed or removed; only forget_user may empty their erasable fields.';", hash='6f79d8e16ea02feaf6040b6219af45fd012e8bf5', operation='UPDATE', pgid='pgtrigger_append_only_no_update_17b12', table='orders_acceptedorder', when='BEFORE')),
        ),
    ]
