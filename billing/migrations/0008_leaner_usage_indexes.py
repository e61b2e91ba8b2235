"""Leaner usage-event indexes: every usage event pays for each index at insert.

Dropped, each the exact duplicate of the leading column of another index:
- `customer_id` (Django's automatic FK index): the unique (customer_id, event_id)
  and usage_customer_time (customer_id, timestamp) start with it;
- `product_item_id`: usage_item_time (product_item_id, timestamp) starts with it.

Made partial: the unique `reversal_transaction_id` → `usage_reversal_once` WHERE
reversal_transaction_id IS NOT NULL (almost every event is never reversed; NULLs
never conflicted anyway).

Hand-written SQL (the state operations are Django's): Django's own AlterField on a
foreign key would drop and re-add, i.e. re-validate, its constraint over the table.
"""

from django.db import migrations, models

FORWARD = """
DROP INDEX IF EXISTS billing_usageevent_customer_id_c3fb6c00;
DROP INDEX IF EXISTS billing_usageevent_product_item_id_266dcaed;
ALTER TABLE billing_usageevent DROP CONSTRAINT billing_usageevent_reversal_transaction_id_key;
CREATE UNIQUE INDEX usage_reversal_once ON billing_usageevent (reversal_transaction_id)
    WHERE reversal_transaction_id IS NOT NULL;
"""

REVERSE = """
DROP INDEX IF EXISTS usage_reversal_once;
ALTER TABLE billing_usageevent
    ADD CONSTRAINT billing_usageevent_reversal_transaction_id_key UNIQUE (reversal_transaction_id);
CREATE INDEX billing_usageevent_product_item_id_266dcaed ON billing_usageevent (product_item_id);
CREATE INDEX billing_usageevent_customer_id_c3fb6c00 ON billing_usageevent (customer_id);
"""


class Migration(migrations.Migration):
    dependencies = [("billing", "0007_class_warning_defaults")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, reverse_sql=REVERSE)],
            state_operations=[
                migrations.AlterField(
                    model_name="usageevent",
                    name="customer",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.PROTECT,
                        related_name="usage_events",
                        to="billing.customer",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="product_item",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=models.deletion.PROTECT,
                        related_name="usage_events",
                        to="billing.productitem",
                    ),
                ),
                migrations.AlterField(
                    model_name="usageevent",
                    name="reversal_transaction_id",
                    field=models.PositiveBigIntegerField(blank=True, null=True),
                ),
                migrations.AddConstraint(
                    model_name="usageevent",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("reversal_transaction_id__isnull", False)),
                        fields=("reversal_transaction_id",),
                        name="usage_reversal_once",
                    ),
                ),
            ],
        ),
    ]
