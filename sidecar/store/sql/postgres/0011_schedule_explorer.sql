-- 0011: the last schedule analysis, for the schedule panels of the DLQ explorer dashboard
-- (issue 18: the seed's conflicts list, recommendations and schedules table). A sidecar
-- writes one JSON document after each analysis (sidecar/service/explorer.py); the views
-- turn it into rows for Grafana's PostgreSQL datasource, read as task_sidecar_reader.
-- Sidecars sharing a database should analyse the same schedules: the last write wins.
CREATE TABLE schedule_explorer_analysis (
    singleton    boolean PRIMARY KEY DEFAULT true CONSTRAINT schedule_explorer_analysis_singleton
        CHECK (singleton),
    analysed_at  timestamptz NOT NULL,
    -- {"schedules": [{name, cron, queue, expected_duration_seconds, timezone, source}],
    --  "report": the body of GET /v1/schedules/health}
    document     jsonb NOT NULL
);

-- Every schedule analysed, with the cron the analysis recommends instead (if any).
CREATE VIEW schedule_explorer_schedules AS
SELECT s ->> 'name' AS name,
       s ->> 'cron' AS cron,
       coalesce(s ->> 'queue', 'default') AS queue,
       (s ->> 'expected_duration_seconds')::double precision AS expected_duration_seconds,
       coalesce(s ->> 'timezone', 'UTC') AS timezone,
       s ->> 'source' AS source,
       advice ->> 'new_cron' AS recommended_cron,
       a.analysed_at
FROM schedule_explorer_analysis a
CROSS JOIN LATERAL jsonb_array_elements(a.document -> 'schedules') AS s
LEFT JOIN LATERAL (
    SELECT r FROM jsonb_array_elements(a.document -> 'report' -> 'recommendations') AS r
    WHERE r ->> 'task' = s ->> 'name'
    LIMIT 1
) AS advised(advice) ON true;

-- Pairs of schedules whose runs overlap on one queue, and schedules that overlap
-- themselves (a run longer than the gap to the next).
CREATE VIEW schedule_explorer_conflicts AS
SELECT c ->> 'kind' AS kind,
       array_to_string(ARRAY(SELECT jsonb_array_elements_text(c -> 'tasks')), ', ') AS tasks,
       c ->> 'queue' AS queue,
       (c ->> 'first')::timestamptz AS first_overlap,
       (c ->> 'occurrences')::integer AS occurrences,
       c ->> 'detail' AS detail,
       a.analysed_at
FROM schedule_explorer_analysis a
CROSS JOIN LATERAL jsonb_array_elements(a.document -> 'report' -> 'conflicts') AS c;

-- The analysis' advice: move a schedule by some minutes; the score and peak if all of it
-- were taken.
CREATE VIEW schedule_explorer_recommendations AS
SELECT r ->> 'task' AS task,
       r ->> 'cron' AS cron,
       r ->> 'new_cron' AS new_cron,
       (r ->> 'minute_offset')::integer AS minute_offset,
       r ->> 'reason' AS reason,
       (a.document -> 'report' ->> 'score')::integer AS score,
       (a.document -> 'report' -> 'after_recommendations' ->> 'score')::integer AS score_after,
       a.analysed_at
FROM schedule_explorer_analysis a
CROSS JOIN LATERAL jsonb_array_elements(a.document -> 'report' -> 'recommendations') AS r;

GRANT SELECT ON schedule_explorer_schedules, schedule_explorer_conflicts,
    schedule_explorer_recommendations TO task_sidecar_reader;
