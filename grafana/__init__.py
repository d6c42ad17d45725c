"""task-sidecar's Grafana dashboards as code (see grafana/README.md)."""
