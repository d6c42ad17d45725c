-- 0013: DLQ depth per status without counting the records (issue 20): at 10 million
-- records `count(*) GROUP BY status` reads the whole status index on every poll.
--
-- Statement-level triggers append one signed row per status a statement changed (a bulk
-- retry of 500 records adds two rows, not a thousand); the depth poll folds the rows into
-- one per status (`dlq_counts_fold`) and sums them (`dlq_counts`). Appending, rather than
-- updating one row per status, means writers never wait for each other's count.
CREATE TABLE dlq_status_counts (
    status  text NOT NULL,
    n       bigint NOT NULL
);

CREATE FUNCTION dlq_count_statuses() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO dlq_status_counts (status, n)
        SELECT status, count(*) FROM new_rows GROUP BY status;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO dlq_status_counts (status, n)
        SELECT status, -count(*) FROM old_rows GROUP BY status;
    ELSE  -- UPDATE: only what moved (most updates keep the status: leases, errors)
        INSERT INTO dlq_status_counts (status, n)
        SELECT status, sum(n)
        FROM (SELECT status, 1 AS n FROM new_rows
              UNION ALL
              SELECT status, -1 FROM old_rows) AS moved
        GROUP BY status
        HAVING sum(n) <> 0;
    END IF;
    RETURN NULL;
END
$$;

-- CREATE TRIGGER locks out writers until this migration commits, so the count below
-- misses no record and counts none twice.
CREATE TRIGGER dlq_records_count_inserts AFTER INSERT ON dlq_records
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dlq_count_statuses();
CREATE TRIGGER dlq_records_count_updates AFTER UPDATE ON dlq_records
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dlq_count_statuses();
CREATE TRIGGER dlq_records_count_deletes AFTER DELETE ON dlq_records
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dlq_count_statuses();

-- TRUNCATE fires no DELETE trigger: an emptied table counts nothing.
CREATE FUNCTION dlq_count_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM dlq_status_counts;
    RETURN NULL;
END
$$;
CREATE TRIGGER dlq_records_count_truncate AFTER TRUNCATE ON dlq_records
    FOR EACH STATEMENT EXECUTE FUNCTION dlq_count_truncate();

INSERT INTO dlq_status_counts (status, n)
SELECT status, count(*) FROM dlq_records GROUP BY status;
