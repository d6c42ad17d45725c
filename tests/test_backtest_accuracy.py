"""Does `simulate` predict what a new policy would really do? (issue 16, "Done when")

One world with known outages — billing's database refuses connections for an hour, the
rates API answers 503 for ninety minutes, rare connection resets elsewhere, 2 % of invoices
with bad input — is run twice through the real service on a virtual clock: once under
policy A (recorded: the history), once under policy B (what B really does). `simulate`,
given only A's history, must predict B's dead letters and successes within ±10 % and its
95th-percentile time to success within ±20 %. A model that gives each attempt a fixed
success probability by its number misses those bounds: under A the database retries ran
inside the outage and failed, so it believes retries fail — but B's later retries land
after the outage and succeed.

The world and the recorder live in sidecar/backtest/synthetic.py so an end-to-end version
(a real worker, a real sidecar on PostgreSQL) can reuse the same scenario.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sidecar.backtest import parse, report, simulate
from sidecar.backtest import synthetic as syn
from sidecar.policy import parse_policy

ROOT = Path(__file__).resolve().parent.parent
POLICIES = (ROOT / "policies.yaml").read_text()

# A retries the database quickly and gives up within minutes; it keeps the seed's breaker
# on the rates API (3 failures -> 30 min).
POLICY_A = syn.with_retry_policies(
    POLICIES,
    {
        "TRANSIENT_DATABASE": {
            "max_retries": 3,
            "initial_delay": "30s",
            "backoff": "exponential",
            "multiplier": 2.0,
            "max_delay": "5m",
            "jitter": "full",
        },
    },
)
# B waits minutes to an hour between database retries and makes more of them; its API
# breaker opens for 10 minutes, and it retries the API 4 times.
POLICY_B = syn.with_retry_policies(
    POLICIES,
    {
        "TRANSIENT_DATABASE": {
            "max_retries": 5,
            "initial_delay": "5m",
            "backoff": "exponential",
            "multiplier": 2.0,
            "max_delay": "1h",
            "jitter": "full",
        },
        "EXTERNAL_API_DOWN": {
            "max_retries": 4,
            "initial_delay": "10m",
            "backoff": "fibonacci",
            "max_delay": "1h",
            "jitter": "full",
            "breaker": {"failures": 3, "open_for": "10m"},
        },
    },
)
BOUNDS = {"dead_lettered": 0.10, "succeeded": 0.10, "time_to_success_p95_seconds": 0.20}


def run_for_real(tmp: Path, name: str, text: str, seed: int) -> syn.Recording:
    path = tmp / f"{name}.yaml"
    path.write_text(text)

    async def go() -> syn.Recording:
        hooks = await syn.ServiceHooks.open(str(path), seed=seed)
        try:
            return await syn.record(syn.outage_world(), hooks)
        finally:
            await hooks.close()

    return asyncio.run(go())


def error(predicted: dict, truth: dict, figure: str) -> float:
    return (predicted[figure] - truth[figure]) / truth[figure]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("worlds")
    a = run_for_real(tmp, "a", POLICY_A, seed=11)
    b = run_for_real(tmp, "b", POLICY_B, seed=12)
    history_a = parse(enumerate(a.text().splitlines(), 1))
    history_b = parse(enumerate(b.text().splitlines(), 1))
    policy_a, policy_b = parse_policy(POLICY_A, "A"), parse_policy(POLICY_B, "B")
    truth = report(simulate(history_b, policy_b, policy_b))["recorded"]
    truth["breaker_openings"] = b.breaker_openings
    return history_a, policy_a, policy_b, truth


class TestPredictingPolicyB:
    """From A's history alone, the outage model predicts B; the per-attempt model cannot."""

    def test_outage_model_within_bounds_per_attempt_model_outside(self, worlds, capsys):
        history_a, policy_a, policy_b, truth = worlds
        ours = report(simulate(history_a, policy_a, policy_b))["candidate"]
        naive = report(simulate(history_a, policy_a, policy_b, model=syn.PerAttemptModel))[
            "candidate"
        ]
        ours_err = {f: error(ours, truth, f) for f in BOUNDS}
        naive_err = {f: error(naive, truth, f) for f in BOUNDS}
        with capsys.disabled():
            print("\n[figures] policy B predicted from policy A's history (error vs B for real):")
            for figure in BOUNDS:
                print(
                    f"  {figure:28} B {truth[figure]:>9}  outage model {ours[figure]:>9}"
                    f" ({ours_err[figure]:+.1%})  per-attempt model {naive[figure]:>9}"
                    f" ({naive_err[figure]:+.1%})  bound ±{BOUNDS[figure]:.0%}"
                )
        # The scenario is worth predicting: B really does much better than A did.
        assert (
            truth["succeeded"]
            > 10 * report(simulate(history_a, policy_a, policy_a))["recorded"]["succeeded"]
        )
        for figure, bound in BOUNDS.items():
            assert abs(ours_err[figure]) <= bound, (figure, ours[figure], truth[figure])
        missed = [f for f, bound in BOUNDS.items() if abs(naive_err[f]) > bound]
        assert missed == list(BOUNDS), naive_err  # it misses every one of them

    def test_prediction_does_not_lean_on_the_draws(self, worlds):
        """Other seeds for the draws the history does not hold: still within bounds."""
        history_a, policy_a, policy_b, truth = worlds
        for seed in (1, 2, 3):
            ours = report(simulate(history_a, policy_a, policy_b, seed=seed))["candidate"]
            for figure, bound in BOUNDS.items():
                assert abs(error(ours, truth, figure)) <= bound, (seed, figure)

    def test_the_per_attempt_model_learns_what_the_history_shows(self, worlds):
        """Not a straw man: its rates are the history's. Under A the database's retries ran
        inside the outage, so it believes a retry of TRANSIENT_DATABASE rarely succeeds."""
        history_a, policy_a, _, _ = worlds
        from sidecar.backtest import Observer

        observer = Observer(policy_a)
        naive = syn.PerAttemptModel(history_a, observer)
        runs = [
            task.runs[1]
            for task in history_a.tasks
            if len(task.runs) > 1
            and task.runs[0].failure is not None
            and observer.classify(task.runs[0].failure)[0] == "TRANSIENT_DATABASE"
        ]
        share = sum(run.failure is None for run in runs) / len(runs)
        assert naive.rate("TRANSIENT_DATABASE", 1) == pytest.approx(share)
        assert share < 0.2
