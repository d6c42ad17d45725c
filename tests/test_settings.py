"""Settings from flags and TASK_SIDECAR_* variables, parsed in one place."""

from __future__ import annotations

import argparse

import pytest

from sidecar.settings import SettingsError, add_arguments, from_sources


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
            (["--port", "http"], {}, "--port: invalid literal"),
            ([], {"TASK_SIDECAR_PORT": "-1"}, "port: expected a positive number"),
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
