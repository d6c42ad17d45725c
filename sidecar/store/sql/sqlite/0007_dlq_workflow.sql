-- 0007: as PostgreSQL's 0009, what a workflow needs to go on after a DLQ retry.
ALTER TABLE dlq_records ADD COLUMN workflow TEXT;
