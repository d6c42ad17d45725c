"""Settings from flags and TASK_SIDECAR_* variables, parsed in one place."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from sidecar import settings as definition
from sidecar.settings import (
    ClientSettings,
    Settings,
    SettingsError,
    add_arguments,
    client_from_sources,
    from_sources,
    options,
)
from sidecar.store.redis_url import parse_redis_url

from .conftest import ROOT


def parse(*flags: str, **env: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_sources(parser.parse_args(list(flags)), env)


class TestSources:
    """A flag wins over its variable, which wins over the default."""

    def test_defaults(self):
        settings = parse()
        assert (settings.host, settings.port, settings.body_limit) == ("127.0.0.1", 8080, 262144)
        assert settings.redis_url is None
        assert settings.postgres_dsn is None
        assert settings.migrate is True
        assert not settings.auth_enabled

    def test_precedence(self):
        settings = parse("--port", "9000", TASK_SIDECAR_PORT="9100", TASK_SIDECAR_HOST="::1")
        assert (settings.port, settings.host) == (9000, "::1")

    def test_durations_and_switches(self):
        settings = parse(
            TASK_SIDECAR_RELOAD_INTERVAL="5s",
            TASK_SIDECAR_SHUTDOWN_GRACE="30",
            TASK_SIDECAR_MIGRATE="0",
        )
        assert (settings.reload_interval, settings.shutdown_grace) == (5, 30)
        assert settings.migrate is False

    @pytest.mark.parametrize(
        ("flags", "env", "message"),
        [
            (["--port", "http"], {}, "--port: expected a port number 1-65535, got 'http'"),
            (["--port", "99999"], {}, "--port: expected a port number 1-65535"),
            ([], {"TASK_SIDECAR_PORT": "-1"}, "TASK_SIDECAR_PORT: expected a port number"),
            ([], {"TASK_SIDECAR_LOG_LEVEL": "loud"}, "TASK_SIDECAR_LOG_LEVEL: expected one of"),
            (["--log-format", "xml"], {}, "--log-format: expected one of text, json"),
            ([], {"TASK_SIDECAR_MIGRATE": "maybe"}, "TASK_SIDECAR_MIGRATE: expected 1/0"),
            ([], {"TASK_SIDECAR_SPOOL_MAX_BYTES": "lots"}, "expected a size like"),
            (["--max-in-flight", "0"], {}, "--max-in-flight: expected a whole number"),
            (
                [],
                {"TASK_SIDECAR_RELOAD_INTERVAL": "often"},
                "TASK_SIDECAR_RELOAD_INTERVAL: expected",
            ),
        ],
    )
    def test_bad_values_name_the_setting(self, flags, env, message):
        with pytest.raises(SettingsError, match=message):
            parse(*flags, **env)


class TestRedisUrls:
    """One server, a cluster or Sentinel; a URL that is none of them stops the sidecar
    without being quoted (it may hold a password)."""

    def test_the_three_forms(self):
        assert parse_redis_url("redis://:pw@r:6379/2").kind == "server"
        assert parse_redis_url("unix:///run/redis.sock?db=1").kind == "server"
        cluster = parse_redis_url("rediss+cluster://u:p%40ss@a:7000,b,[::1]:7002/")
        assert (cluster.kind, cluster.ssl, cluster.username, cluster.password) == (
            "cluster",
            True,
            "u",
            "p@ss",
        )
        assert cluster.nodes == (("a", 7000), ("b", 6379), ("::1", 7002))
        sentinel = parse_redis_url(
            "redis+sentinel://:pw@s1:26380,s2/mymaster/3?sentinel_password=sp"
        )
        assert (sentinel.kind, sentinel.service, sentinel.db) == ("sentinel", "mymaster", 3)
        assert sentinel.nodes == (("s1", 26380), ("s2", 26379))
        assert (sentinel.password, sentinel.sentinel_password) == ("pw", "sp")
        assert parse_redis_url("redis+sentinel://s1/mymaster").db == 0

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("http://:hunter22@r:6379/0", "expected a redis://"),
            ("redis+cluster://:hunter22@a:7000/1", "database 0 only"),
            ("redis+cluster://:hunter22@a:port/", "host:port nodes"),
            ("redis+sentinel://:hunter22@s:26379/", "service"),
            ("redis+sentinel://:hunter22@s:26379/m/x", "database number"),
            ("redis+sentinel://:hunter22@s/m?socket=1", "unknown parameter 'socket'"),
        ],
    )
    def test_bad_urls_are_refused_unquoted(self, url, message):
        with pytest.raises(SettingsError, match=message) as caught:
            parse(TASK_SIDECAR_REDIS_URL=url)
        assert "hunter22" not in str(caught.value)
        assert str(caught.value).startswith("TASK_SIDECAR_REDIS_URL: ")

    def test_a_cluster_url_is_kept_as_given(self):
        url = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/"
        assert parse("--redis-url", url).redis_url == url


class TestTokens:
    """Tokens are `name:secret` pairs per role; secrets are never shown."""

    def test_named_and_bare_tokens(self):
        settings = parse(
            TASK_SIDECAR_HOOK_TOKENS="workers:0123456789abcdef, 0123456789abcdefXX",
            TASK_SIDECAR_OPERATOR_TOKENS="alice:fedcba9876543210",
        )
        assert [t.name for t in settings.tokens["hooks"]] == ["workers", "hooks-2"]
        assert [t.name for t in settings.tokens["operator"]] == ["alice"]
        assert settings.auth_enabled
        assert "0123456789abcdef" not in repr(settings)

    def test_short_secret_is_refused_without_echoing_it(self):
        with pytest.raises(SettingsError) as caught:
            parse(TASK_SIDECAR_VIEWER_TOKENS="grafana:tooshort")
        assert "TASK_SIDECAR_VIEWER_TOKENS: token 1" in str(caught.value)
        assert "tooshort" not in str(caught.value)

    def test_public_address_needs_tokens(self):
        with pytest.raises(SettingsError, match=r"refusing to listen on 0\.0\.0\.0"):
            parse("--host", "0.0.0.0").check()
        parse("--host", "0.0.0.0", TASK_SIDECAR_HOOK_TOKENS="w:0123456789abcdef").check()
        parse("--host", "::1").check()


class TestNewSettings:
    """Metrics listener, log format, access log, retention and spool size."""

    def test_defaults(self):
        settings = parse()
        assert settings.metrics_port is None
        assert settings.metrics_address is None  # /metrics on the API port
        assert (settings.log_format, settings.access_log) == ("text", False)
        assert settings.event_retention == 30 * 86400
        assert settings.spool_max_bytes == 256 * 1024 * 1024

    def test_values_and_switches(self):
        settings = parse(
            "--metrics-port",
            "9100",
            "--access-log",
            "--no-migrate",
            TASK_SIDECAR_LOG_FORMAT="json",
            TASK_SIDECAR_LOG_LEVEL="debug",
            TASK_SIDECAR_EVENT_RETENTION="90d",
            TASK_SIDECAR_SPOOL_MAX_BYTES="1GiB",
            TASK_SIDECAR_BODY_LIMIT="512KiB",
            TASK_SIDECAR_MIGRATE="1",
        )
        assert settings.metrics_address == ("127.0.0.1", 9100)
        assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
        assert settings.access_log is True
        assert settings.migrate is False  # the flag wins over the variable
        assert settings.event_retention == 90 * 86400
        assert settings.spool_max_bytes == 1024**3
        assert settings.body_limit == 512 * 1024
        assert parse(TASK_SIDECAR_ACCESS_LOG="off").access_log is False

    def test_public_metrics_without_tokens(self):
        """The loopback rule is the API's: a separate /metrics listener may be public."""
        settings = parse("--metrics-port", "9100", "--metrics-host", "0.0.0.0")
        settings.check()
        assert settings.metrics_address == ("0.0.0.0", 9100)
        with pytest.raises(SettingsError, match=r"refusing to listen on 0\.0\.0\.0"):
            parse("--host", "0.0.0.0", "--metrics-port", "9100").check()

    @pytest.mark.parametrize(
        ("flags", "message"),
        [
            (["--metrics-host", "0.0.0.0"], "metrics_host: has no effect without"),
            (["--metrics-port", "8080"], "metrics_port: 8080 is the API's port"),
        ],
    )
    def test_metrics_combinations_that_cannot_work(self, flags, message):
        with pytest.raises(SettingsError, match=message):
            parse(*flags).check()


class TestClientSettings:
    """The operator commands read TASK_SIDECAR_URL, _TOKEN and _TIMEOUT."""

    def test_sources(self):
        parser = argparse.ArgumentParser()
        add_arguments(parser, ClientSettings)
        args = parser.parse_args(["--url", "http://sidecar:8080"])
        client = client_from_sources(
            args, {"TASK_SIDECAR_URL": "http://other", "TASK_SIDECAR_TOKEN": "t" * 20}
        )
        assert (client.url, client.token, client.timeout) == ("http://sidecar:8080", "t" * 20, 30)
        assert "t" * 20 not in repr(client)


class TestDefinition:
    """Each setting is defined once; --help and the docs are generated from it."""

    def test_every_field_but_tokens_is_a_setting(self):
        names = {o.name for o in options(Settings)}
        fields = set(Settings.__dataclass_fields__)
        assert fields - names == {"tokens"}

    def test_defaults_agree_with_the_dataclass(self):
        for option in options(Settings):
            assert getattr(Settings(), option.name) == option.default

    def test_serve_help_names_every_flag_and_variable(self):
        help_text = subprocess.run(
            [sys.executable, "-m", "sidecar.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
        ).stdout
        for option in options(Settings):
            assert option.flag in help_text
            assert f"[{option.env}]" in help_text.split() or f"[{option.env}]" in help_text

    def test_the_configuration_doc_matches_the_definition(self):
        """Run `python -m sidecar.settings --update docs/configuration.md` after a change."""
        doc = (ROOT / "docs" / "configuration.md").read_text()
        assert definition.update_doc(doc) == doc
        for option in (*options(Settings), *options(ClientSettings)):
            assert f"`{option.env}`" in doc

    def test_markdown_from_the_command_line(self):
        result = subprocess.run(
            [sys.executable, "-m", "sidecar.settings", "--markdown"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        assert result.stdout == definition.markdown(Settings)
        assert "| `--requeue` | `TASK_SIDECAR_REQUEUE` | `none` |" in result.stdout
