-- A stack may apply tracked and destroy runs without waiting for
-- `gantry run confirm` (off by default: both wait in UNCONFIRMED).
ALTER TABLE stacks ADD COLUMN auto_apply INTEGER NOT NULL DEFAULT 0;

-- A proposed (plan-only) run's state credential may read the state only:
-- GET, never POST, LOCK or UNLOCK.
ALTER TABLE run_credentials ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0;
