"""task-sidecar's Prometheus rules for the default mixin config, as committed files.

    python -m alerting            regenerate alerting/task-sidecar.rules.yaml
    python -m alerting --check    exit 1 if the committed file differs from the mixin

The rules are made by sidecar.mixin (in the wheel: `task-sidecar mixin render`); this is
the project's copy for the defaults, which alerting/rules.test.yaml unit-tests with
promtool. The Alertmanager configuration (alerting/alertmanager.yml) is written by hand.
docs/observability.md explains how to load them.
"""
