"""Schedule health over HTTP and as gauges, fed by a real Celery app's beat_schedule."""

from __future__ import annotations

import urllib.request

from aiohttp.test_utils import TestClient, TestServer
from celery import Celery
from celery.schedules import crontab
from prometheus_client import CollectorRegistry

from sidecar.http import create_app
from sidecar.integrations.celery import send_beat_schedule
from sidecar.settings import Settings

from .conftest import DEFAULT_POLICIES
from .processes import SidecarProcess

TOKEN = "schedules-token-0123456789"


def celery_app() -> Celery:
    """Ten reports at the top of every hour and a 90-minute job every hour."""
    app = Celery("reports")
    app.conf.timezone = "UTC"
    app.conf.beat_schedule = {
        **{
            f"report-{i}": {"task": f"reports.build_{i}", "schedule": crontab(minute=0)}
            for i in range(10)
        },
        "slow-sync": {"task": "sync.all", "schedule": crontab(minute=30)},
    }
    return app


def test_a_celery_beat_schedule_through_the_integration(tmp_path):
    with SidecarProcess(
        tmp_path, TOKEN, policies=str(DEFAULT_POLICIES), viewer_tokens=f"viewer:{TOKEN}"
    ) as sidecar:
        url = f"http://127.0.0.1:{sidecar.port}"
        taken = send_beat_schedule(celery_app(), url, TOKEN, durations={"slow-sync": 5400})
        assert taken == 11
        status, report = sidecar.call("/v1/schedules/health")
        assert status == 200
        assert report["schedules"] == 11
        assert report["hotspots"]
        assert report["score"] < 100
        assert "self_overlap" in {c["kind"] for c in report["conflicts"]}
        assert report["after_recommendations"]["score"] > report["score"]
        with urllib.request.urlopen(f"{url}/metrics") as response:
            metrics = response.read().decode()
        assert f"task_sidecar_schedule_health_score {float(report['score'])}" in metrics
        assert f"task_sidecar_schedule_hotspots {float(len(report['hotspots']))}" in metrics
        assert 'task_sidecar_schedule_starts{hour="00",queue="default"} 11.0' in metrics


async def test_bad_schedule_names_the_field(tmp_path):
    settings = Settings(policies=str(DEFAULT_POLICIES), data_dir=tmp_path, reload_interval=0)
    app = create_app(settings, registry=CollectorRegistry())
    async with TestClient(TestServer(app)) as client:
        response = await client.put("/v1/schedules", json=[{"name": "x", "cron": "61 * * * *"}])
        assert response.status == 400
        problem = await response.json()
        assert problem["errors"][0]["path"] == "schedules[0] (x).cron"
        assert "minute field '61'" in problem["errors"][0]["message"]
        empty = await (await client.get("/v1/schedules/health")).json()
        assert empty["score"] == 100
        response = await client.get("/v1/schedules/health?horizon=soon")
        assert response.status == 400
