"""Settings are read once, validated, and every error names the variable."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator.errors import ConfigError
from orchestrator.principals import DEFAULT_TENANT, Scope, key_id_for_digest
from orchestrator.settings import get_settings, load_settings


def test_defaults_give_an_embedded_dev_setup():
    settings = load_settings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.routing_timeout_seconds == 10
    assert settings.log_level == "INFO"
    assert settings.api_key is None and settings.principals == {}


def test_settings_are_read_once_and_cached(monkeypatch):
    monkeypatch.setenv("DEFAULT_SLA_MS", "900")
    first = get_settings()
    monkeypatch.setenv("DEFAULT_SLA_MS", "1200")
    assert get_settings() is first and first.default_sla_ms == 900


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ROUTING_TIMEOUT_SECONDS", "-1", "ROUTING_TIMEOUT_SECONDS: Input should be greater than 0"),
        ("ROUTING_TIMEOUT_SECONDS", "soon", "ROUTING_TIMEOUT_SECONDS: Input should be a valid number"),
        ("GPU_MODEL_URL", "gpu-box:8000", "GPU_MODEL_URL: must be an http:// or https:// URL"),
        ("LOG_LEVEL", "chatty", "LOG_LEVEL: Input should be"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL: must be a postgresql:// or sqlite:// URL"),
        ("WORKER_CONCURRENCY", "0", "WORKER_CONCURRENCY: Input should be greater than or equal to 1"),
    ],
)
def test_a_malformed_value_is_refused_naming_the_variable(monkeypatch, variable, value, expected):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert expected in excinfo.value.message


def test_a_typo_in_one_of_our_variables_is_refused_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("ROUTING_TIMEOUT_SECOND", "3")
    with pytest.raises(
        ConfigError, match="ROUTING_TIMEOUT_SECOND is not a known setting; did you mean ROUTING_TIMEOUT_SECONDS"
    ):
        load_settings()


def test_unrelated_variables_are_ignored(monkeypatch):
    monkeypatch.setenv("HOME_DIR_THING", "x")
    monkeypatch.setenv("REDIS_PORT", "tcp://10.0.0.1:6379")  # what a k8s service link looks like
    load_settings()


def test_secrets_are_never_echoed_in_errors(monkeypatch):
    monkeypatch.setenv("API_KEY", "short")
    monkeypatch.setenv("DATABASE_URL", "mysql://admin:hunter2@db/x")
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert "API_KEY" in excinfo.value.message and "DATABASE_URL" in excinfo.value.message
    assert "short" not in excinfo.value.message and "hunter2" not in excinfo.value.message


def test_api_keys_are_kept_as_digests_with_printable_ids(monkeypatch):
    monkeypatch.setenv("API_KEY", "first-key-123, second-key-456")
    principals = load_settings().principals
    digest = hashlib.sha256(b"second-key-456").hexdigest()
    assert digest in principals and principals[digest].key_id == key_id_for_digest(digest)
    assert len(principals) == 2
    assert all("key-123" not in p.key_id and "key-456" not in p.key_id for p in principals.values())
    # API_KEY keeps its meaning: each key is an intake principal of the default tenant
    assert {(p.tenant, p.scopes) for p in principals.values()} == {
        (DEFAULT_TENANT, frozenset({Scope.SUBMIT, Scope.READ}))
    }


def test_empty_key_between_commas_is_refused(monkeypatch):
    monkeypatch.setenv("API_KEY", "first-key-123,,second-key-456")
    with pytest.raises(ConfigError, match="API_KEY: contains an empty key"):
        load_settings()


def test_plain_postgres_urls_use_the_pinned_psycopg2_driver(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db:5432/pedi")
    assert load_settings().database_url == "postgresql+psycopg2://u@db:5432/pedi"
