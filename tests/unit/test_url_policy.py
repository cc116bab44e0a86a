"""The target URL policy's rules with an injected resolver (DNS names that point inside, answers
that change), its bounded resolution, the before-call seam in the model client, and the bound on
target label values in /metrics."""

from __future__ import annotations

import ipaddress
import socket
import time

import httpx
import pytest

from modelreasoner.client import CallInput, ModelClient
from orchestrator.errors import ConfigError, ModelCallError
from orchestrator.metrics import OTHER_TARGET, StateCollector, TargetLabels
from orchestrator.routing.types import Target
from orchestrator.settings import load_settings
from orchestrator.url_policy import (
    VERDICT_CACHE_SECONDS,
    UnresolvableHost,
    UrlPolicy,
    UrlRefused,
    rules_from,
    system_resolver,
)

INFER_ANSWER = {"risk_level": "low", "flagged_domains": [], "rationale": "ok", "model_version": "m"}


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, timeout: float):
        if host not in table:
            raise UnresolvableHost("does not resolve")
        return [ipaddress.ip_address(a) for a in table[host]]

    return resolve


def policy(table: dict[str, list[str]], allowlist=(), development=False, **kwargs) -> UrlPolicy:
    return UrlPolicy(rules_from(allowlist, development=development), resolver(table), 1.0, **kwargs)


@pytest.mark.parametrize(
    ("addresses", "why"),
    [
        (["169.254.169.254"], "link-local"),
        (["10.0.0.5", "169.254.169.254"], "link-local"),  # one bad address is enough
        (["::ffff:169.254.169.254"], "link-local"),
        (["fd00:ec2::254"], "AWS metadata"),
        (["fe80::1"], "IPv6 link-local"),
        (["127.0.0.1"], "loopback"),
        (["10.0.0.5", "::1"], "loopback"),
    ],
)
def test_a_dns_name_that_points_inside_is_judged_by_where_it_points(addresses, why):
    reason = policy({"models.example.org": addresses}).refusal("http://models.example.org:8001/")
    assert reason is not None and why in reason


def test_an_allowlisted_domain_does_not_excuse_a_metadata_address():
    table = {"gpu.models.example.org": ["169.254.169.254"], "ok.models.example.org": ["10.2.3.4"]}
    rules = policy(table, allowlist=[".models.example.org"])
    assert "link-local" in rules.refusal("https://gpu.models.example.org")
    assert rules.refusal("https://ok.models.example.org") is None
    assert "TARGET_URL_ALLOWLIST" in rules.refusal("http://10.2.3.4")
    assert "TARGET_URL_ALLOWLIST" in policy({"evil.org": ["10.2.3.4"]}, [".models.example.org"]).refusal(
        "http://evil.org"
    )


def test_cidrs_allow_by_address_and_can_admit_loopback_in_production():
    rules = policy({"box.lan": ["10.1.0.9"], "twohomed.lan": ["10.1.0.9", "192.168.0.2"]}, ["10.1.0.0/16", "127.0.0.1"])
    assert rules.refusal("http://box.lan") is None
    assert "TARGET_URL_ALLOWLIST" in rules.refusal("http://twohomed.lan")  # every address must be inside
    assert rules.refusal("http://127.0.0.1:9000") is None
    assert "loopback" in rules.refusal("http://127.0.0.2:9000")


def test_development_allows_loopback_and_unresolvable_names_but_never_metadata():
    dev = policy({}, development=True)
    assert dev.refusal("http://127.0.0.1:8001") is None and dev.refusal("http://not-yet.internal") is None
    assert "link-local" in dev.refusal("http://169.254.169.254")
    assert "does not resolve" in policy({}).refusal("http://not-yet.internal")
    with pytest.raises(UrlRefused) as refused:
        policy({}).check("gopher://10.0.0.1")
    assert (refused.value.code, refused.value.field) == ("url_refused", "url")


def test_resolution_is_bounded_in_time(monkeypatch):
    def stuck(*args, **kwargs):
        time.sleep(1.5)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    started = time.monotonic()
    with pytest.raises(UnresolvableHost, match="within 0.2 s"):
        system_resolver("slow.example.org", 0.2)
    assert time.monotonic() - started < 1.0


def test_the_real_resolver_sees_numeric_hosts_and_localhost():
    assert ipaddress.ip_address("169.254.169.254") in system_resolver("2852039166", 2.0)
    assert all(a.is_loopback for a in system_resolver("localhost", 2.0))


def test_a_name_that_turns_bad_is_refused_before_the_call_and_nothing_is_sent():
    """DNS answers 10.0.0.5 at first, then the metadata address: once the cached verdict expires
    the client refuses the call, and the transport never sees the request."""
    table = {"gpu.example.org": ["10.0.0.5"]}
    now = [1000.0]
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(str(request.url))
        return httpx.Response(200, json=INFER_ANSWER)

    transport = httpx.Client(transport=httpx.MockTransport(handler))
    client = ModelClient(transport, url_policy=policy(table, clock=lambda: now[0]))
    target = Target(name="gpu-x", tier="gpu", url="http://gpu.example.org:8001", cost_per_call_usd=0.0)
    job = CallInput(job_id="j", sla_ms=1000, observations="x")
    assert client.call(target, job, 1.0).result["risk_level"] == "low"
    table["gpu.example.org"] = ["169.254.169.254"]
    now[0] += VERDICT_CACHE_SECONDS + 0.1
    with pytest.raises(ModelCallError) as refused:
        client.call(target, job, 1.0)
    assert refused.value.kind == "url_refused" and "link-local" in refused.value.message
    assert sent == ["http://gpu.example.org:8001/infer"]


@pytest.mark.parametrize("value", ["10.0.0.0/33", "exa mple.org", "a..b", ","])
def test_a_bad_allowlist_entry_stops_the_start_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("TARGET_URL_ALLOWLIST", value if value != "," else "10.0.0.0/8,,x..y")
    with pytest.raises(ConfigError, match="TARGET_URL_ALLOWLIST"):
        load_settings()


def test_allowlist_and_env_settings_are_read(monkeypatch):
    monkeypatch.setenv("TARGET_URL_ALLOWLIST", " gpu.internal, *.models.example.org ,10.20.0.0/16")
    monkeypatch.setenv("ENV", "production")
    settings = load_settings()
    assert settings.target_url_allowlist == ("gpu.internal", "*.models.example.org", "10.20.0.0/16")
    assert settings.env == "production"
    monkeypatch.setenv("ENV", "staging")
    with pytest.raises(ConfigError, match="ENV"):
        load_settings()


# --- bounded target labels ------------------------------------------------------------------------


def test_hostile_names_cannot_grow_the_target_label_values():
    labels = TargetLabels()
    labels.configure(["edge", "gpu"], room=4)
    seen = {labels(f"evil-{i}") for i in range(1000)}
    assert len(seen) == 5 and OTHER_TARGET in seen
    assert labels("gpu") == "gpu" and labels("none") == "none"
    assert labels("evil-0") == "evil-0"  # admitted names keep their label


def test_the_circuit_gauge_folds_names_past_the_bound_into_other(monkeypatch):
    from orchestrator import metrics

    labels = TargetLabels()
    labels.configure(["gpu"], room=2)
    monkeypatch.setattr(metrics, "TARGET_LABELS", labels)
    states = {"gpu": 0, **{f"evil-{i}": i % 3 for i in range(300)}}
    collector = StateCollector(
        queue_depth=lambda: 0,
        oldest_queued_age=lambda: 0.0,
        jobs_by_status=dict,
        workers_alive=lambda: 0,
        circuit_states=lambda: states,
        reconciler_last_pass_age=lambda: 0.0,
    )
    family = next(f for f in collector.collect() if f.name == "pedi_circuit_state")
    values = {s.labels["target"]: s.value for s in family.samples}
    assert len(values) == 4 and values["gpu"] == 0 and values[OTHER_TARGET] == 2


def test_addresses_resolves_every_time_within_the_tighter_bound_and_checks_every_answer():
    """What a connection is made to: never a cached verdict, the connect timeout bounds the lookup,
    and one forbidden address among the answers refuses them all."""
    table = {"gpu.example.org": ["10.0.0.5"]}
    bounds: list[float] = []
    inner = resolver(table)

    def resolve(host: str, timeout: float):
        bounds.append(timeout)
        return inner(host, timeout)

    checked = UrlPolicy(rules_from((), development=False), resolve, 1.0)
    assert checked.addresses("gpu.example.org", 0.25) == [ipaddress.ip_address("10.0.0.5")]
    assert checked.addresses("gpu.example.org") == [ipaddress.ip_address("10.0.0.5")]
    table["gpu.example.org"] = ["10.0.0.5", "169.254.169.254"]
    with pytest.raises(ModelCallError) as refused:
        checked.addresses("gpu.example.org", 5.0)
    assert refused.value.kind == "url_refused" and "169.254.169.254" in refused.value.message
    assert bounds == [0.25, 1.0, 1.0]
    assert checked.addresses("::ffff:10.0.0.7") == [ipaddress.ip_address("10.0.0.7")]  # no lookup
    assert len(bounds) == 3
    with pytest.raises(UnresolvableHost):
        checked.addresses("nowhere.example.org")
