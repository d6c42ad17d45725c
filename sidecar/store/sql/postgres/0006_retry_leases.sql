-- 0006: a record moved to `retrying` for a requeue carries a lease until the requeue is
-- known to be sent. A sidecar that dies in between leaves the lease to run out, and any
-- sidecar's poller puts such records back to `pending` (a requeue is at least once).
ALTER TABLE dlq_records ADD COLUMN lease_until timestamptz;
CREATE INDEX dlq_records_lease_until_idx ON dlq_records (lease_until)
    WHERE lease_until IS NOT NULL;
