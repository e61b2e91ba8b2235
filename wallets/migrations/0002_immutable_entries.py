"""Posted ledger rows are history: PostgreSQL refuses to change or delete them.
A mistake is fixed by a reversing transaction, never by an edit. (TRUNCATE stays
possible: it is how the test suite resets the database, and no code path uses it.)"""

from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION wallets_forbid_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows in % are immutable: book a reversing transaction instead', TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER wallets_entry_immutable
    BEFORE UPDATE OR DELETE ON wallets_entry
    FOR EACH ROW EXECUTE FUNCTION wallets_forbid_change();
CREATE TRIGGER wallets_lot_immutable
    BEFORE UPDATE OR DELETE ON wallets_grantconsumption
    FOR EACH ROW EXECUTE FUNCTION wallets_forbid_change();
"""

ALLOW = """
DROP TRIGGER IF EXISTS wallets_lot_immutable ON wallets_grantconsumption;
DROP TRIGGER IF EXISTS wallets_entry_immutable ON wallets_entry;
DROP FUNCTION IF EXISTS wallets_forbid_change();
"""


class Migration(migrations.Migration):
    dependencies = [("wallets", "0001_initial")]

    operations = [migrations.RunSQL(FORBID, reverse_sql=ALLOW)]
