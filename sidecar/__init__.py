"""task-sidecar: classifies background-task failures and tells workers what to do next."""

__version__ = "0.1.0"
