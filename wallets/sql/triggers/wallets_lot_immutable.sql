CREATE OR REPLACE TRIGGER wallets_lot_immutable
    BEFORE UPDATE OR DELETE ON wallets_grantconsumption
    FOR EACH ROW EXECUTE FUNCTION wallets_forbid_change();
