-- 0004: as PostgreSQL's 0006, the lease of a record being requeued.
ALTER TABLE dlq_records ADD COLUMN lease_until REAL;
CREATE INDEX dlq_records_lease_until_idx ON dlq_records (lease_until)
    WHERE lease_until IS NOT NULL;
