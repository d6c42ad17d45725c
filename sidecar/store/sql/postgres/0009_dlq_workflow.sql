-- 0009: what a workflow needs to go on after a DLQ retry (Celery: the rest of the chain,
-- callbacks, errbacks, parent/root/group ids). `json`, as args: handed back verbatim.
ALTER TABLE dlq_records ADD COLUMN workflow json;
