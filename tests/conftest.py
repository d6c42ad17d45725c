from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.policy import Policy, load_policy

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POLICIES = ROOT / "policies.yaml"


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The default policy shipped in the repository."""
    return load_policy(DEFAULT_POLICIES)
