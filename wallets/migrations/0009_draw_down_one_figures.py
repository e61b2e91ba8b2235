"""`wallets_draw_down_one` also answers the wallet's restricted balance after the
event and its effective credit limit (at p_now), as `wallets_draw_down` does: a
usage event booked alone then knows its available funds without reading the wallet
again (`billing.usage` books single events with it).

Built from migration 0008's text (one source for the booking statement), with the
two OUT parameters added; the return type changes, so the function is dropped and
created again.
"""

import importlib

from django.db import migrations

V1 = importlib.import_module("wallets.migrations.0008_ledger_speed")

SIGNATURE = """wallets_draw_down_one(
    bigint, numeric, bigint, jsonb, timestamptz, text, text, text, text, jsonb, text, integer,
    timestamptz)"""


def _with_figures(sql: str) -> str:
    replacements = [
        (
            "OUT out_debt_room numeric, OUT out_currency text, OUT out_earlier_hash text\n)",
            "OUT out_debt_room numeric, OUT out_currency text, OUT out_earlier_hash text,\n"
            "    OUT out_restricted_after numeric, OUT out_credit_limit numeric\n)",
        ),
        (
            "    out_currency := w.currency;\n",
            "    out_currency := w.currency;\n"
            "    out_restricted_after := w.restricted_balance;\n"
            "    out_credit_limit := w.credit_limit\n"
            "        + CASE WHEN w.temporary_credit_increase > 0\n"
            "                    AND p_now < w.temporary_increase_valid_until\n"
            "               THEN w.temporary_credit_increase ELSE 0 END;\n",
        ),
        (
            "           (SELECT json_agg(json_build_array(t.id, t.take::text)) FROM takes t)\n"
            "    INTO out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after, "
            "out_lots\n",
            "           (SELECT json_agg(json_build_array(t.id, t.take::text)) FROM takes t),\n"
            "           COALESCE(tx.restricted_after, w.restricted_balance)\n"
            "    INTO out_outcome, out_tx_id, out_covered, out_balance_after, out_debt_after, "
            "out_lots,\n         out_restricted_after\n",
        ),
    ]
    for old, new in replacements:
        assert sql.count(old) == 1, f"migration 0008's function changed near: {old!r}"
        sql = sql.replace(old, new)
    return sql


FORWARD = f"DROP FUNCTION {SIGNATURE};\n" + _with_figures(V1.DRAW_DOWN_ONE)
REVERSE = f"DROP FUNCTION {SIGNATURE};\n" + V1.DRAW_DOWN_ONE


class Migration(migrations.Migration):
    dependencies = [("wallets", "0008_ledger_speed")]

    operations = [migrations.RunSQL(FORWARD, reverse_sql=REVERSE)]
