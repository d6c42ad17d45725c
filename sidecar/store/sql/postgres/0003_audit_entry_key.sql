-- 0003: a client-made key for audit entries, so that an entry replayed from the local
-- spool (whose first write may in fact have committed) is stored once. NULL for entries
-- written without one; a unique index allows any number of NULLs.
ALTER TABLE audit_log ADD COLUMN entry_key text;
CREATE UNIQUE INDEX audit_log_entry_key_key ON audit_log (entry_key);
