CREATE OR REPLACE TRIGGER wallets_entry_immutable
    BEFORE UPDATE OR DELETE ON wallets_entry
    FOR EACH ROW EXECUTE FUNCTION wallets_forbid_change();
