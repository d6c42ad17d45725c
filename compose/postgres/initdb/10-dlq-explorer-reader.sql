-- compose.yaml's PostgreSQL, on its first start: a login for Grafana's DLQ explorer
-- datasource (compose/grafana/provisioning/datasources/postgres-dlq-explorer.yaml). The
-- sidecar's migration 0010 finds the role made here and grants it SELECT on the explorer's
-- views, and nothing else (grafana/README.md). A demo password, as the stack's others.
CREATE ROLE task_sidecar_reader NOLOGIN;
CREATE ROLE grafana_dlq LOGIN PASSWORD 'compose-dlq-reader' IN ROLE task_sidecar_reader;
