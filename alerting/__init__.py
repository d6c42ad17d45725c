"""task-sidecar's Prometheus rules, generated from one config (alerting/config.yaml).

    python -m alerting            regenerate alerting/task-sidecar.rules.yaml
    python -m alerting --check    exit 1 if the committed file differs from the generator

The Alertmanager configuration (alerting/alertmanager.yml) is written by hand; promtool
unit tests are in alerting/rules.test.yaml. docs/observability.md explains how to load them.
"""
