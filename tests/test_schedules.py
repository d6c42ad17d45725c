"""Schedule analysis: hotspots, conflicts, the health score, recommendations, time zones,
validation, the Celery beat conversion and `task-sidecar schedules analyse`."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.cli import main
from sidecar.integrations.beat import schedule_from_celery
from sidecar.policy import PolicyError, parse_policy
from sidecar.policy.model import Schedule
from sidecar.schedules import (
    DAY,
    QUEUE_OVERLAP,
    SELF_OVERLAP,
    WEEK,
    CronError,
    ScheduleError,
    analyse,
    apply_recommendations,
    check_cron,
    parse_schedule,
    parse_schedules,
)

from .conftest import DEFAULT_POLICIES, ROOT

MONDAY = datetime(2025, 1, 6, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def starts(report) -> list[str]:
    """Every start in the report as an ISO UTC minute, in order."""
    out = []
    for minute, count in enumerate(report.starts_per_minute):
        moment = report.start + timedelta(minutes=minute)
        out += [moment.strftime("%Y-%m-%dT%H:%MZ")] * count
    return out


def hourly(n: int, cron: str = "0 * * * *", **kw) -> list[Schedule]:
    return [Schedule(f"report-{i}", cron, **kw) for i in range(n)]


# --- hotspots and recommendations -------------------------------------------------------------


class TestHotspots:
    def test_ten_tasks_on_the_hour_are_a_hotspot_every_hour(self):
        report = analyse(hourly(10), MONDAY)
        assert report.starts == 240
        assert report.peak == 10
        assert report.peak_minute == MONDAY
        assert len(report.hotspots) == 24
        assert {h.minute.minute for h in report.hotspots} == {0}
        assert all(h.starts == 10 for h in report.hotspots)
        assert report.hotspots[0].tasks == tuple(f"report-{i}" for i in range(10))
        # H = (10 - 5) / 10 excess per hotspot minute; no conflicts: 100 × (1 - 0.5 / 2)
        assert report.hotspot_share == 0.5
        assert report.score == 75

    def test_the_advice_spreads_the_hotspot_with_concrete_minutes(self):
        report = analyse(hourly(10), MONDAY)
        moves = report.recommendations
        assert len(moves) == 9  # the first-listed task stays at :00
        assert "report-0" not in {r.task for r in moves}
        minutes = {0} | {int(r.new_cron.split()[0]) for r in moves}
        assert len(minutes) == 10  # ten different minutes
        for r in moves:
            assert r.cron == "0 * * * *"
            assert r.new_cron == f"{r.minute_offset} * * * *"
            assert 0 < r.minute_offset < 60
        # spread: no two tasks closer than 4 minutes (60 / 10 = 6 would be perfect)
        ordered = sorted(minutes)
        gaps = [b - a for a, b in zip(ordered, [*ordered[1:], ordered[0] + 60], strict=True)]
        assert min(gaps) >= 4

    def test_applying_the_recommendations_raises_the_score(self):
        schedules = hourly(10)
        report = analyse(schedules, MONDAY)
        after = analyse(apply_recommendations(schedules, report.recommendations), MONDAY)
        assert after.score > report.score
        assert (after.score, after.peak) == (report.score_after, report.peak_after) == (100, 1)
        assert after.hotspots == ()
        assert after.recommendations == ()

    @pytest.mark.parametrize(
        ("schedules", "threshold"),
        [
            pytest.param(hourly(10), 5, id="10-on-the-hour"),
            pytest.param(hourly(8, "*/15 * * * *"), 3, id="8-every-quarter"),
            pytest.param(hourly(7, "0 2 * * *"), 2, id="7-nightly-at-2"),
            pytest.param(
                hourly(6, "0 * * * *", queue="reports", expected_duration=600), 3, id="durations"
            ),
            pytest.param(
                [*hourly(6), Schedule("beat", "@every 10m"), Schedule("cleanup", "* * * * *")],
                3,
                id="with-unmovable",
            ),
            pytest.param(hourly(6, "30 2 * * *", timezone="Europe/Berlin"), 3, id="in-a-time-zone"),
        ],
    )
    def test_recommendations_lower_the_peak_and_raise_the_score(self, schedules, threshold):
        report = analyse(schedules, MONDAY, hotspot_threshold=threshold)
        assert report.hotspots
        assert report.recommendations
        after = analyse(
            apply_recommendations(schedules, report.recommendations),
            MONDAY,
            hotspot_threshold=threshold,
        )
        assert after.peak < report.peak
        assert after.score > report.score
        assert after.score == report.score_after
        moved = {r.task for r in report.recommendations}
        assert not moved & {"beat", "cleanup"}  # intervals and every-minute crons stay

    def test_step_minutes_move_as_a_whole(self):
        report = analyse(hourly(8, "*/15 * * * *"), MONDAY, hotspot_threshold=3)
        new = {r.new_cron.split()[0] for r in report.recommendations}
        assert all(field.endswith("-59/15") or field == "*/15" for field in new), new

    def test_moves_avoid_runs_in_progress_on_the_queue(self):
        schedules = [
            Schedule("long", "0 * * * *", queue="q", expected_duration=1800),
            *(
                Schedule(f"short-{i}", "0 * * * *", queue="q", expected_duration=60)
                for i in range(6)
            ),
        ]
        report = analyse(schedules, MONDAY, hotspot_threshold=3)
        assert len(report.conflicts) == 21  # all 7 start together: every pair overlaps
        assert "long" not in {r.task for r in report.recommendations}
        assert all(30 <= r.minute_offset <= 59 for r in report.recommendations)
        after = analyse(apply_recommendations(schedules, report.recommendations), MONDAY)
        assert after.conflicts == ()
        assert after.score == report.score_after == 100

    def test_no_hotspot_no_advice(self):
        report = analyse(hourly(5), MONDAY)
        assert report.hotspots == ()
        assert report.recommendations == ()
        assert report.score == 100

    def test_threshold_is_exceeded_not_reached(self):
        assert analyse(hourly(3), MONDAY, hotspot_threshold=3).hotspots == ()
        assert len(analyse(hourly(4), MONDAY, hotspot_threshold=3).hotspots) == 24

    def test_intervals_start_in_phase_at_start(self):
        report = analyse([Schedule("beat", "@every 30s")], MONDAY, hotspot_threshold=1)
        assert report.starts == 2 * 24 * 60
        assert set(report.starts_per_minute) == {2}
        assert len(report.hotspots) == 24 * 60
        assert report.recommendations == ()  # nothing to move

    def test_empty_schedule_scores_100(self):
        report = analyse([], MONDAY)
        assert (report.score, report.starts, report.peak, report.peak_minute) == (100, 0, 0, None)
        assert report.hotspots == report.conflicts == report.recommendations == ()
        assert report.starts_per_hour == (0,) * 24
        assert len(report.starts_per_minute) == 24 * 60

    def test_load_by_hour_per_queue(self):
        schedules = [
            Schedule("a", "0 * * * *", queue="reports"),
            Schedule("b", "*/15 9-17 * * *", queue="billing"),
            Schedule("c", "30 3 * * *"),
        ]
        report = analyse(schedules, MONDAY)
        assert report.load_by_hour["reports"] == (1,) * 24
        assert report.load_by_hour["billing"] == (0,) * 9 + (4,) * 9 + (0,) * 6
        assert report.load_by_hour["default"][3] == 1
        assert sum(report.load_by_hour["default"]) == 1
        assert report.starts_per_hour == tuple(
            sum(row[h] for row in report.load_by_hour.values()) for h in range(24)
        )

    def test_work_is_bounded(self):
        with pytest.raises(ValueError, match="more than 250000 runs in the horizon"):
            analyse([Schedule(f"t{i}", "@every 1s") for i in range(3)], MONDAY)

    def test_start_is_floored_to_the_minute_and_must_be_aware(self):
        report = analyse(hourly(1), MONDAY + timedelta(seconds=59, microseconds=5))
        assert report.start == MONDAY
        assert starts(report)[0] == "2025-01-06T00:00Z"
        with pytest.raises(ValueError, match="time-zone aware"):
            analyse([], datetime(2025, 1, 6))
        with pytest.raises(ValueError, match="horizon"):
            analyse([], MONDAY, timedelta(days=32))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([0, 0, 0, 5, 15, 30, 45]), min_size=1, max_size=14),
    st.integers(min_value=1, max_value=4),
)
def test_recommendations_never_make_things_worse(minutes, threshold):
    schedules = [Schedule(f"t{i}", f"{m} * * * *") for i, m in enumerate(minutes)]
    report = analyse(schedules, MONDAY, hotspot_threshold=threshold)
    if report.recommendations:
        after = analyse(
            apply_recommendations(schedules, report.recommendations),
            MONDAY,
            hotspot_threshold=threshold,
        )
        assert after.peak < report.peak
        assert after.score >= report.score
    assert 0 <= report.score <= 100


# --- conflicts -------------------------------------------------------------------------------


class TestConflicts:
    def test_a_90_minute_task_every_hour_overlaps_itself(self):
        report = analyse([Schedule("sync-ledger", "0 * * * *", expected_duration=90 * 60)], MONDAY)
        (conflict,) = report.conflicts
        assert conflict.kind == SELF_OVERLAP
        assert conflict.tasks == ("sync-ledger",)
        assert conflict.queue == "default"
        assert conflict.first == at("2025-01-06T01:00Z")  # the second run starts
        assert conflict.occurrences == 23
        assert conflict.detail == "runs for 1h30m but starts every 1h"
        assert report.conflict_share == 1.0
        assert report.score == 50

    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [
            pytest.param(
                ("0 * * * *", 30 * 60, "billing"),
                ("15 * * * *", None, "billing"),
                None,
                id="no-duration-overlaps-nothing",
            ),
            pytest.param(
                ("0 * * * *", 30 * 60, "billing"),
                ("15 * * * *", 60, "billing"),
                ("2025-01-06T00:15Z", 24),
                id="starts-while-the-other-runs",
            ),
            pytest.param(
                ("0 * * * *", 30 * 60, "billing"),
                ("15 * * * *", 60, "reports"),
                None,
                id="other-queue",
            ),
            pytest.param(
                ("0 * * * *", 10 * 60, None),
                ("10 * * * *", 10 * 60, None),
                None,
                id="back-to-back",
            ),
            pytest.param(
                ("0 * * * *", 60, None),
                ("0 * * * *", 60, None),
                ("2025-01-06T00:00Z", 24),
                id="same-start-default-queue",
            ),
            pytest.param(
                ("0 3 * * *", 2 * 3600, "etl"),
                ("30 4 * * *", 60, "etl"),
                ("2025-01-06T04:30Z", 1),
                id="nightly",
            ),
            pytest.param(
                ("55 * * * *", 10 * 60, "etl"),
                ("0 * * * *", 60, "etl"),
                ("2025-01-06T01:00Z", 23),
                id="across-the-hour",
            ),
        ],
    )
    def test_queue_overlap(self, a, b, expected):
        schedules = [
            Schedule("a", a[0], expected_duration=a[1], queue=a[2]),
            Schedule("b", b[0], expected_duration=b[1], queue=b[2]),
        ]
        conflicts = [c for c in analyse(schedules, MONDAY).conflicts if c.kind == QUEUE_OVERLAP]
        if expected is None:
            assert conflicts == []
        else:
            (conflict,) = conflicts
            assert conflict.tasks == ("a", "b")
            assert conflict.queue == (a[2] or "default")
            assert (conflict.first, conflict.occurrences) == (at(expected[0]), expected[1])

    def test_conflict_share_counts_each_run_once(self):
        schedules = [
            Schedule("long", "0 0 * * *", expected_duration=3 * 3600, queue="etl"),
            Schedule("short", "0 1,2 * * *", expected_duration=60, queue="etl"),
            Schedule("free", "0 12 * * *", expected_duration=60, queue="etl"),
        ]
        report = analyse(schedules, MONDAY)
        (conflict,) = report.conflicts
        assert conflict.occurrences == 2
        assert report.conflict_share == pytest.approx(3 / 4)  # long + 2 short of 4 runs
        assert report.score == 63  # 62.5, rounded half up

    def test_interval_overlapping_itself(self):
        report = analyse([Schedule("poll", "@every 5m", expected_duration=600)], MONDAY)
        assert [c.kind for c in report.conflicts] == [SELF_OVERLAP]
        assert report.conflicts[0].detail == "runs for 10m but starts every 5m"


# --- time zones and daylight saving ----------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "zone", "start", "hours", "expected"),
    [
        # Europe/Berlin springs forward on 2025-03-30 at 02:00 CET → 03:00 CEST.
        pytest.param(
            "30 2 * * *",
            "Europe/Berlin",
            "2025-03-28T23:00Z",
            24,
            ["2025-03-29T01:30Z"],
            id="berlin-ordinary-day",
        ),
        pytest.param(
            "30 2 * * *",
            "Europe/Berlin",
            "2025-03-29T23:00Z",
            23,
            ["2025-03-30T01:00Z"],  # 02:30 does not exist: runs at 03:00 CEST
            id="berlin-spring-forward-runs-at-03:00",
        ),
        # … and falls back on 2025-10-26 at 03:00 CEST → 02:00 CET: 02:30 happens twice.
        pytest.param(
            "30 2 * * *",
            "Europe/Berlin",
            "2025-10-25T22:00Z",
            25,
            ["2025-10-26T00:30Z"],  # once, at the first 02:30 (CEST)
            id="berlin-fall-back-runs-once",
        ),
        pytest.param(
            "*/30 2 * * *",
            "Europe/Berlin",
            "2025-10-25T22:00Z",
            25,
            [
                "2025-10-26T00:00Z",
                "2025-10-26T00:30Z",
                "2025-10-26T01:00Z",
                "2025-10-26T01:30Z",
            ],  # a wildcard-minute job follows the clock through both 02:xx hours
            id="berlin-fall-back-wildcard-minute-twice",
        ),
        pytest.param(
            "*/30 2 * * *",
            "Europe/Berlin",
            "2025-03-29T23:00Z",
            23,
            [],
            id="berlin-spring-forward-wildcard-minute-skipped",
        ),
        # America/New_York: 2025-03-09 02:00 EST → 03:00 EDT; 2025-11-02 02:00 EDT → 01:00 EST.
        pytest.param(
            "30 2 * * *",
            "America/New_York",
            "2025-03-09T05:00Z",
            23,
            ["2025-03-09T07:00Z"],  # 03:00 EDT
            id="new-york-spring-forward",
        ),
        pytest.param(
            "30 1 * * *",
            "America/New_York",
            "2025-11-02T04:00Z",
            25,
            ["2025-11-02T05:30Z"],  # 01:30 EDT only, not again at 01:30 EST (06:30Z)
            id="new-york-fall-back-runs-once",
        ),
        pytest.param(
            "0 9 * * *",
            "America/New_York",
            "2025-01-06T00:00Z",
            24,
            ["2025-01-06T14:00Z"],
            id="new-york-winter",
        ),
        pytest.param(
            "0 9 * * *",
            "America/New_York",
            "2025-07-07T00:00Z",
            24,
            ["2025-07-07T13:00Z"],
            id="new-york-summer",
        ),
        pytest.param(
            "0 9 * * *", "Asia/Kolkata", "2025-01-06T00:00Z", 24, ["2025-01-06T03:30Z"], id="+5:30"
        ),
    ],
)
def test_time_zones_and_dst(cron, zone, start, hours, expected):
    report = analyse([Schedule("job", cron, timezone=zone)], at(start), timedelta(hours=hours))
    assert starts(report) == expected


@pytest.mark.parametrize(
    ("start", "hours", "runs"),
    [
        pytest.param("2025-03-29T23:00Z", 23, 23, id="spring-forward-day-has-23"),
        pytest.param("2025-10-25T22:00Z", 25, 25, id="fall-back-day-has-25"),
    ],
)
def test_hourly_job_over_a_local_dst_day(start, hours, runs):
    schedule = Schedule("job", "30 * * * *", timezone="Europe/Berlin")
    assert analyse([schedule], at(start), timedelta(hours=hours)).starts == runs


@pytest.mark.parametrize(
    ("zone", "start", "hour"),
    [
        (None, MONDAY, 9),
        ("UTC", MONDAY, 9),
        ("America/New_York", MONDAY, 14),
        ("America/New_York", at("2025-07-07T00:00Z"), 13),
        ("Asia/Tokyo", MONDAY, 0),
    ],
)
def test_time_zone_moves_the_hotspot_hour(zone, start, hour):
    report = analyse(hourly(6, "0 9 * * *", timezone=zone), start)
    (hotspot,) = report.hotspots
    assert (hotspot.minute.hour, hotspot.minute.minute) == (hour, 0)
    assert report.starts_per_hour[hour] == 6


# --- the 7-day horizon --------------------------------------------------------------------


class TestWeek:
    def test_day_of_week_crons(self):
        schedules = [
            Schedule("weekdays", "0 9 * * mon-fri"),
            Schedule("weekend", "0 10 * * sat,sun"),
            Schedule("monday", "0 6 * * 1"),
        ]
        report = analyse(schedules, MONDAY, WEEK)
        assert len(report.starts_per_hour) == 168
        assert len(report.starts_per_minute) == 7 * 24 * 60
        assert starts(report) == [
            "2025-01-06T06:00Z",
            "2025-01-06T09:00Z",
            "2025-01-07T09:00Z",
            "2025-01-08T09:00Z",
            "2025-01-09T09:00Z",
            "2025-01-10T09:00Z",
            "2025-01-11T10:00Z",
            "2025-01-12T10:00Z",
        ]

    def test_a_monday_hotspot_is_seen_only_in_a_week(self):
        schedules = hourly(6, "0 6 * * mon")
        tuesday = MONDAY + DAY
        assert analyse(schedules, tuesday, DAY).hotspots == ()
        week = analyse(schedules, tuesday, WEEK)
        assert [h.minute for h in week.hotspots] == [at("2025-01-13T06:00Z")]
        assert week.recommendations

    def test_score_does_not_depend_on_the_horizon(self):
        schedules = [*hourly(10), Schedule("sync", "0 * * * *", expected_duration=5400)]
        assert analyse(schedules, MONDAY, DAY).score == analyse(schedules, MONDAY, WEEK).score


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 2 * * *", "minute field '61' out of range 0-59"),
        ("0-61 2 * * *", "minute field '0-61': 61 out of range 0-59"),
        ("0 24 * * *", "hour field '24' out of range 0-23"),
        ("0 0 0 * *", "day-of-month field '0' out of range 1-31"),
        ("0 0 * 13 *", "month field '13' out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8' out of range 0-7"),
        ("0 0 30 2 *", "day-of-month field '30' never occurs in the months '2'"),
        ("x 0 * * *", "minute field 'x' is not valid: expected numbers 0-59, ranges (1-5)"),
        ("*/0 * * * *", "minute field '*/0' is not valid"),
        ("0 0 * * funday", "day-of-week field 'funday' is not valid: expected numbers 0-7 or SUN"),
        ("0 0 * smarch *", "month field 'smarch' is not valid: expected numbers 1-12 or JAN-DEC"),
        ("0 0 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 0 0 * * *", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("@fortnightly", "unknown nickname '@fortnightly'"),
        ("@reboot", "not periodically"),
        ("@every soon", "@every expects a duration like 30s or 5m, got 'soon'"),
        ("@every 0.5s", "below 1s"),
    ],
)
def test_bad_cron_names_the_field(cron, message):
    with pytest.raises(CronError) as error:
        check_cron(cron)
    assert message in str(error.value)
    with pytest.raises(ScheduleError) as error:
        parse_schedule({"name": "nightly-report", "cron": cron}, 2)
    (problem,) = error.value.problems
    assert problem.path == "schedules[2] (nightly-report).cron"
    assert message in str(problem)


def test_the_error_shape_of_the_issue():
    with pytest.raises(ScheduleError) as error:
        parse_schedule({"name": "nightly-report", "cron": "61 2 * * *"}, 2)
    assert str(error.value) == (
        "schedules[2] (nightly-report).cron: minute field '61' out of range 0-59"
    )
    assert error.value.problems[0].path.endswith(".cron")


@pytest.mark.parametrize(
    "cron",
    [
        "*/5 * * * *",
        "0 9-17 * * mon-fri",
        "15 2 1 jan,jul *",
        "0 0 L * *",
        "0 3 * * 1#1",
        "@hourly",
        "@daily",
        "@every 30s",
        "@every 1h30m",
        "  0   *  * * *  ",
    ],
)
def test_good_crons(cron):
    check_cron(cron)
    assert parse_schedule({"name": "x", "cron": cron}).cron == cron


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ({"cron": "* * * * *"}, "schedules[0].name", "missing required key 'name'"),
        ({"name": "", "cron": "* * * * *"}, "schedules[0].name", "expected a non-empty string"),
        ({"name": "a"}, "schedules[0] (a).cron", "missing required key 'cron'"),
        ({"name": "a", "cron": 5}, "schedules[0] (a).cron", "expected a cron expression"),
        (
            {"name": "a", "cron": "* * * * *", "timezone": "Mars/Olympus"},
            "schedules[0] (a).timezone",
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            {"name": "a", "cron": "* * * * *", "expected_duration": "soon"},
            "schedules[0] (a).expected_duration",
            'expected a duration like 30s, got "soon"',
        ),
        (
            {"name": "a", "cron": "* * * * *", "queue": ""},
            "schedules[0] (a).queue",
            "expected a non-empty string",
        ),
        ("nightly", "schedules[0]", "expected a mapping, got 'nightly'"),
    ],
)
def test_bad_entries(entry, path, message):
    with pytest.raises(ScheduleError) as error:
        parse_schedules([entry])
    (problem,) = error.value.problems
    assert (problem.path, problem.message[: len(message)]) == (path, message)


def test_every_problem_is_listed_and_strict_mode_rejects_unknown_keys():
    entries = [
        {"name": "a", "cron": "61 * * * *", "expected_duraton": "5m"},
        {"name": "b", "cron": "* * * * *", "timezone": "Nowhere"},
        {"name": "a", "cron": "0 * * * *"},
    ]
    with pytest.raises(ScheduleError) as error:
        parse_schedules({"schedules": entries}, strict=True)
    assert [str(p) for p in error.value.problems] == [
        "schedules[0] (a).cron: minute field '61' out of range 0-59",
        "schedules[0] (a).expected_duraton: unknown key 'expected_duraton'; "
        "did you mean 'expected_duration'?",
        "schedules[1] (b).timezone: unknown time zone 'Nowhere'",
    ]
    entries[0] = {"name": "a", "cron": "1 * * * *", "task": "ignored"}  # wire: ignored
    entries[1] = {"name": "b", "cron": "2 * * * *"}
    with pytest.raises(ScheduleError, match=r"schedules\[2\] \(a\).name: duplicate name"):
        parse_schedules(entries)


def test_parsed_values():
    (schedule,) = parse_schedules(
        {
            "schedules": [
                {
                    "name": "n",
                    "cron": "0 2 * * *",
                    "queue": "reports",
                    "expected_duration": "1h30m",
                    "timezone": "Europe/Berlin",
                }
            ]
        }
    )
    assert schedule == Schedule("n", "0 2 * * *", "reports", 5400.0, "Europe/Berlin")
    assert parse_schedules({"schedules": None}) == parse_schedules([]) == ()


def test_analyse_names_a_schedule_built_without_validation():
    with pytest.raises(ScheduleError, match=r"schedules\[1\] \(bad\).cron: hour field '99'"):
        analyse([Schedule("ok", "* * * * *"), Schedule("bad", "0 99 * * *")], MONDAY)


def test_policy_check_reports_a_bad_cron_with_path_and_line():
    text = DEFAULT_POLICIES.read_text().replace(
        "schedules: []",
        "schedules:\n"
        '  - {name: fine, cron: "*/5 * * * *", timezone: Europe/Berlin}\n'
        '  - {name: nightly-report, cron: "61 2 * * *"}\n'
        '  - {name: beat, cron: "@every 30s"}\n',
    )
    line = text.splitlines().index('  - {name: nightly-report, cron: "61 2 * * *"}') + 1
    with pytest.raises(PolicyError) as error:
        parse_policy(text)
    assert [str(p) for p in error.value.problems] == [
        f"schedules[1].cron: line {line}: schedule 'nightly-report': "
        "minute field '61' out of range 0-59"
    ]
    good = parse_policy(text.replace('"61 2 * * *"', '"1 2 * * *"'))
    assert [s.cron for s in good.schedules] == ["*/5 * * * *", "1 2 * * *", "@every 30s"]


# --- Celery beat entries ------------------------------------------------------------------


def test_celery_intervals_without_celery():
    assert schedule_from_celery("a", {"task": "t", "schedule": 30}).cron == "@every 30s"
    entry = {"task": "t", "schedule": timedelta(minutes=5), "options": {"queue": "beat"}}
    schedule = schedule_from_celery("b", entry, timezone="Europe/Berlin", expected_duration=20)
    assert schedule == Schedule("b", "@every 5m", "beat", 20, "Europe/Berlin")
    with pytest.raises(ScheduleError, match=r"beat_schedule\['c'\].schedule: unsupported"):
        schedule_from_celery("c", {"task": "t", "schedule": "hourly"})
    with pytest.raises(ScheduleError, match="below 1s"):
        schedule_from_celery("d", {"task": "t", "schedule": 0.1})
    with pytest.raises(ScheduleError, match="expected a mapping with a 'schedule'"):
        schedule_from_celery("e", {"task": "t"})


@pytest.fixture
def celery():
    """celery.schedules (a dev dependency); these tests are skipped without it."""
    return pytest.importorskip("celery.schedules")


class TestCeleryCrontab:
    @pytest.mark.parametrize(
        ("kwargs", "cron"),
        [
            ({}, "* * * * *"),
            ({"minute": 0}, "0 * * * *"),
            ({"minute": "*/15", "hour": "9-17", "day_of_week": "mon-fri"}, "*/15 9-17 * * 1-5"),
            ({"minute": [0, 30], "hour": "*/3"}, "0,30 */3 * * *"),
            ({"minute": "5-59/15"}, "5-59/15 * * * *"),
            ({"minute": 0, "hour": 0, "day_of_week": "fri-mon"}, "0 0 * * 0-1,5-6"),
            ({"minute": 0, "hour": 4, "day_of_month": "1,15"}, "0 4 1,15 * *"),
            ({"minute": 0, "hour": 0, "month_of_year": "*/3"}, "0 0 * */3 *"),
            # Celery ANDs day_of_month and day_of_week: the first Monday of each month.
            ({"minute": 0, "hour": 3, "day_of_month": "1-7", "day_of_week": "mon"}, "0 3 * * 1#1"),
        ],
    )
    def test_crontab_fields(self, celery, kwargs, cron):
        entry = {"task": "app.tasks.x", "schedule": celery.crontab(**kwargs)}
        assert schedule_from_celery("x", entry).cron == cron

    def test_first_monday_runs_like_celery(self, celery):
        crontab = celery.crontab(minute=0, hour=3, day_of_month="1-7", day_of_week="mon")
        schedule = schedule_from_celery("x", {"task": "t", "schedule": crontab})
        report = analyse([schedule], at("2025-01-01T00:00Z"), timedelta(days=31))
        assert starts(report) == ["2025-01-06T03:00Z"]
        report = analyse([schedule], at("2025-02-01T00:00Z"), timedelta(days=28))
        assert starts(report) == ["2025-02-03T03:00Z"]

    def test_queue_timezone_and_interval_objects(self, celery):
        beat = {
            "nightly": {
                "task": "reports.nightly",
                "schedule": celery.crontab(minute=30, hour=2),
                "options": {"queue": "reports"},
            },
            "poll": {"task": "x.poll", "schedule": celery.schedule(timedelta(seconds=45))},
        }
        schedules = [
            schedule_from_celery(name, entry, timezone="Europe/Berlin")
            for name, entry in beat.items()
        ]
        assert schedules == [
            Schedule("nightly", "30 2 * * *", "reports", None, "Europe/Berlin"),
            Schedule("poll", "@every 45s", None, None, "Europe/Berlin"),
        ]

    def test_unsupported(self, celery):
        both = celery.crontab(minute=0, hour=0, day_of_month="2-8", day_of_week="mon")
        with pytest.raises(ScheduleError, match="whole weeks of the month") as error:
            schedule_from_celery("x", {"task": "t", "schedule": both})
        assert error.value.problems[0].path == "beat_schedule['x'].schedule"

        class solar:  # celery.schedules.solar needs `ephem`; only the type matters here
            event, lat, lon = "sunrise", 52.5, 13.4

        with pytest.raises(ScheduleError, match="unsupported schedule solar"):
            schedule_from_celery("y", {"task": "t", "schedule": solar()})


# --- the command line ----------------------------------------------------------------------


SCHEDULE_FILE = """\
schedules:
  - {name: report-0, cron: "0 * * * *", queue: reports}
  - {name: report-1, cron: "0 * * * *", queue: reports}
  - {name: report-2, cron: "0 * * * *", queue: reports}
  - {name: report-3, cron: "0 * * * *", queue: reports}
  - {name: report-4, cron: "0 * * * *", queue: reports}
  - {name: report-5, cron: "0 * * * *", queue: reports}
  - {name: sync-ledger, cron: "15 * * * *", expected_duration: 90m, queue: billing}
  - {name: nightly, cron: "30 2 * * *", timezone: Europe/Berlin}
"""


@pytest.fixture
def schedule_file(tmp_path):
    path = tmp_path / "schedules.yaml"
    path.write_text(SCHEDULE_FILE)
    return path


class TestCli:
    def run(self, capsys, *args: str) -> tuple[int, str, str]:
        code = main(["schedules", "analyse", *args])
        out, err = capsys.readouterr()
        return code, out, err

    def test_text_report(self, schedule_file, capsys):
        code, out, err = self.run(capsys, str(schedule_file), "--start", "2025-01-06")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0] == (
            f"Schedules in {schedule_file}: 8, 169 starts in 24h from 2025-01-06 00:00 UTC"
        )
        assert lines[1].startswith("Health score: ")
        assert "Peak: 6 start(s) at 2025-01-06 00:00 UTC (hotspot: more than 5)" in out
        assert "Hotspots: 24 minute(s)" in out
        hotspot = next(line for line in lines if "24x every 1h" in line).split()
        assert hotspot == ["2025-01-06", "00:00", "24x", "every", "1h", "6"] + [
            f"report-{i}," for i in range(5)
        ] + ["report-5"]
        assert "Conflicts: 1" in out
        conflict = next(line for line in lines if "self_overlap" in line).split()
        assert conflict[:6] == [
            "self_overlap",
            "billing",
            "sync-ledger",
            "2025-01-06",
            "01:15",
            "23",
        ]
        assert " ".join(conflict[6:]) == "runs for 1h30m but starts every 1h"
        assert "Recommendations: 5" in out
        assert next(line for line in lines if "report-1 " in line).split()[:3] == [
            "report-1",
            "0",
            "*",
        ]
        assert "applied: score " in out
        assert "Load by hour (UTC), starts by queue:" in out
        chart = out[out.index("Load by hour") :].splitlines()[1:]
        assert len(chart) == 24
        assert chart[0].startswith("  00:00 7 ")
        assert "#" * 40 in chart[1]  # 01:00 has the most starts (with nightly at 01:30)
        assert chart[1].endswith("billing 1, default 1, reports 6")

    def test_score_line_matches_the_report(self, schedule_file, capsys):
        _, out, _ = self.run(capsys, str(schedule_file), "--start", "2025-01-06", "--json")
        score = json.loads(out)["score"]
        _, text, _ = self.run(capsys, str(schedule_file), "--start", "2025-01-06")
        assert f"Health score: {score}/100" in text

    def test_json(self, schedule_file, capsys):
        code, out, _ = self.run(
            capsys, str(schedule_file), "--start", "2025-01-06T00:00Z", "--json"
        )
        assert code == 0
        report = json.loads(out)
        assert report["start"] == "2025-01-06T00:00:00Z"
        assert report["horizon_seconds"] == 86400
        assert report["hotspot_threshold"] == 5
        assert report["starts"] == 169
        assert len(report["starts_per_hour"]) == 24
        assert len(report["starts_per_minute"]) == 1440
        assert set(report["load_by_hour"]) == {"billing", "default", "reports"}
        assert report["hotspots"][0] == {
            "minute": "2025-01-06T00:00:00Z",
            "starts": 6,
            "tasks": [f"report-{i}" for i in range(6)],
        }
        kinds = {c["kind"] for c in report["conflicts"]}
        assert kinds == {"self_overlap"}
        assert report["recommendations"]
        assert report["after_recommendations"]["score"] > report["score"]
        assert report["peak"] == {"starts": 6, "minute": "2025-01-06T00:00:00Z"}

    def test_week_horizon_and_threshold(self, schedule_file, capsys):
        code, out, _ = self.run(
            capsys,
            str(schedule_file),
            "--start",
            "2025-01-06",
            "--horizon",
            "7d",
            "--threshold",
            "6",
        )
        assert code == 0
        assert "starts in 7d from 2025-01-06 00:00 UTC" in out
        assert "Hotspots: 0 minute(s)" in out
        assert "Load by day (UTC), starts by queue:" in out
        chart = out[out.index("Load by day") :].splitlines()[1:]
        assert [line.split()[0] for line in chart] == [
            "Mon",
            "Tue",
            "Wed",
            "Thu",
            "Fri",
            "Sat",
            "Sun",
        ]

    def test_json_file_and_stdin(self, tmp_path, capsys, monkeypatch):
        path = tmp_path / "beat.json"
        path.write_text(json.dumps([{"name": "a", "cron": "@every 5m"}]))
        code, out, _ = self.run(capsys, str(path), "--json")
        assert code == 0
        assert json.loads(out)["starts"] == 288
        result = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "schedules", "analyse", "-", "--json"],
            input='[{"name": "b", "cron": "0 * * * *"}]',
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["score"] == 100

    def test_the_policy_file_itself(self, capsys):
        code, out, _ = self.run(capsys, str(DEFAULT_POLICIES))
        assert code == 0
        assert "Health score: 100/100" in out

    def test_invalid_schedules_exit_1(self, tmp_path, capsys):
        path = tmp_path / "bad.yaml"
        path.write_text(
            '- {name: nightly-report, cron: "61 2 * * *"}\n- {name: x, cron: "* *", queue: q}\n'
        )
        code, out, err = self.run(capsys, str(path))
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            f"FAILED: {path}: 2 problem(s)",
            "  schedules[0] (nightly-report).cron: minute field '61' out of range 0-59",
            "  schedules[1] (x).cron: expected 5 fields (minute hour day-of-month month "
            "day-of-week), got 2 in '* *'",
        ]

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            ("schedules: [", "line 2: invalid YAML"),
            ("a: &x [1]\nb: *x\n", "anchors and aliases are not allowed"),
            (None, "cannot read"),
        ],
    )
    def test_unreadable_exit_2(self, tmp_path, capsys, content, message):
        path = tmp_path / "s.yaml"
        if content is not None:
            path.write_text(content)
        code, out, err = self.run(capsys, str(path))
        assert (code, out) == (2, "")
        assert message in err

    def test_bad_arguments_exit_2(self, schedule_file, capsys):
        for args in (["--horizon", "40d"], ["--horizon", "soon"], ["--threshold", "0"]):
            with pytest.raises(SystemExit) as exit_:
                main(["schedules", "analyse", str(schedule_file), *args])
            assert exit_.value.code == 2
        assert "expected 1h to 31d" in capsys.readouterr().err

    def test_fail_under(self, schedule_file, capsys):
        assert self.run(capsys, str(schedule_file), "--fail-under", "100")[0] == 3
        assert self.run(capsys, str(schedule_file), "--fail-under", "10")[0] == 0


def test_the_analysis_is_pure_and_knows_no_celery():
    """sidecar/schedules/ and sidecar/policy/ import neither Celery nor a layer above them."""
    import ast

    forbidden = ("celery", "kombu", "aiohttp", "sidecar.integrations", "sidecar.http")
    for package in ("schedules", "policy"):
        for path in (ROOT / "sidecar" / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [("." * node.level) + (node.module or "")]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    resolved = name.replace("..", "sidecar.", 1) if name.startswith("..") else name
                    assert not resolved.startswith(forbidden), f"{path.name} imports {name}"
