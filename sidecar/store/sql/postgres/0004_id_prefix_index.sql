-- 0004: operators name records by a prefix of their id (the CLI prints 8 characters).
-- The primary key's index follows the database's collation, which LIKE 'abc%' cannot use;
-- text_pattern_ops compares bytewise and can.
CREATE INDEX dlq_records_id_pattern_idx ON dlq_records (id text_pattern_ops);
