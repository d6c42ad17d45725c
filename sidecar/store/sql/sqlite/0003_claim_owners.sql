-- 0003: as PostgreSQL's 0005, the owner of each claim.
ALTER TABLE idempotency_keys ADD COLUMN owner TEXT NOT NULL DEFAULT '';
