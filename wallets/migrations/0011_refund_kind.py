# A ledger transaction kind for refunded payments (issue 12, item 2).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("wallets", "0010_money_in_time"),
    ]

    operations = [
        migrations.AlterField(
            model_name="ledgertransaction",
            name="kind",
            field=models.CharField(
                choices=[
                    ("grant", "Credit granted"),
                    ("activation", "Pending credit activated"),
                    ("usage", "Usage drawn down"),
                    ("expiry", "Credit expired"),
                    ("void", "Credit voided"),
                    ("transfer", "Transfer between wallets"),
                    ("debt_payment", "Payment on debt"),
                    ("debt_settlement", "Debt settled from credit"),
                    ("reversal", "Reversal"),
                    ("rounding", "Rounding to the cent"),
                    ("refund", "Payment for credit refunded"),
                ],
                max_length=20,
            ),
        ),
    ]
