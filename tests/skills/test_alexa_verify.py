"""Unit tests of the Alexa request verifier (skills/alexa/verify.py) and the certificate cache.

The rules come from Amazon's "Host a Custom Skill as a Web Service" page (and its
request-verification notes); the URL table below is the one observed there against
ask-sdk-webservice-support 1.3.3. Signing uses a throwaway test CA (tests/support/alexa/ca.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from skills.alexa.certs import CachedChainSource, cache_key
from skills.alexa.location import location_from_address, location_from_geolocation
from skills.alexa.verify import (
    AlexaRequestVerifier,
    VerificationFailed,
    check_cert_url,
    parse_alexa_time,
)
from tests.support.alexa import envelopes
from tests.support.alexa.ca import CERT_URL, TestCA

LAUNCH = "launch-request.json"


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA()


@pytest.fixture(scope="module")
def leaf(ca: TestCA):
    return ca.issue()


def make_verifier(ca: TestCA, chains: dict[str, bytes], app_ids: set[str], **kw) -> AlexaRequestVerifier:
    def source(url: str) -> bytes:
        return chains[url]

    return AlexaRequestVerifier(source, [ca.cert], frozenset(app_ids), **kw)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://s3.amazonaws.com/echo.api/echo-api-cert.pem", True),
        ("https://s3.amazonaws.com:443/echo.api/echo-api-cert.pem", True),
        ("https://S3.AMAZONAWS.COM/echo.api/echo-api-cert.pem", True),
        ("HTTPS://s3.amazonaws.com/echo.api/echo-api-cert.pem", True),
        ("https://s3.amazonaws.com/echo.api/../echo.api/echo-api-cert.pem", True),
        ("http://s3.amazonaws.com/echo.api/echo-api-cert.pem", False),
        ("https://notamazon.com/echo.api/echo-api-cert.pem", False),
        ("https://s3.amazonaws.com.evil.example/echo.api/echo-api-cert.pem", False),
        ("https://s3.amazonaws.com/EcHo.aPi/echo-api-cert.pem", False),
        ("https://s3.amazonaws.com/invalid.path/echo-api-cert.pem", False),
        ("https://s3.amazonaws.com/echo.api/../x.pem", False),
        ("https://s3.amazonaws.com:563/echo.api/echo-api-cert.pem", False),
    ],
)
def test_certificate_url_rules(url: str, ok: bool) -> None:
    if ok:
        check_cert_url(url)
    else:
        with pytest.raises(VerificationFailed) as err:
            check_cert_url(url)
        assert err.value.code == "cert_url"


def _signed_launch(leaf, **kw):
    env = envelopes.current(envelopes.load(LAUNCH), **kw)
    return env, *envelopes.signed(leaf, env)


def test_genuine_sample_signed_by_test_ca_verifies(ca, leaf) -> None:
    env, body, headers = _signed_launch(leaf)
    verifier = make_verifier(ca, {CERT_URL: leaf.chain_pem}, {envelopes.app_id(env)})
    assert verifier.verify(headers, body)["request"]["requestId"] == env["request"]["requestId"]
    # Header names are case-insensitive.
    assert verifier.verify({k.lower(): v for k, v in headers.items()}, body)


@pytest.mark.parametrize(
    "case",
    ["tampered", "reserialised", "missing_sig", "legacy_sig_only", "stale", "future", "wrong_app", "no_app_config",
     "bad_base64", "not_json"],
)
def test_rejections(ca, leaf, case: str) -> None:
    now = datetime.now(UTC)
    ts = now - timedelta(seconds=151) if case == "stale" else now + timedelta(seconds=151) if case == "future" else now
    env, body, headers = _signed_launch(leaf, now=ts)
    apps = {envelopes.app_id(env)}
    if case == "wrong_app":
        apps = {"amzn1.ask.skill.someone-else"}
    if case == "no_app_config":
        apps = set()
    if case == "tampered":
        body = body.replace(b"LaunchRequest", b"LaunchRequesT")
    if case == "reserialised":
        body = json.dumps(json.loads(body), indent=1).encode()
    if case == "missing_sig":
        del headers["Signature-256"]
    if case == "legacy_sig_only":
        headers["Signature"] = headers.pop("Signature-256")
    if case == "bad_base64":
        headers["Signature-256"] = "!!!"
    if case == "not_json":
        body = b"not json"
        headers["Signature-256"] = leaf.sign(body)
    verifier = make_verifier(ca, {CERT_URL: leaf.chain_pem}, apps)
    with pytest.raises(VerificationFailed) as err:
        verifier.verify(headers, body)
    expected = {
        "tampered": "signature", "reserialised": "signature", "missing_sig": "headers",
        "legacy_sig_only": "headers", "stale": "timestamp", "future": "timestamp", "wrong_app": "application_id",
        "no_app_config": "application_id", "bad_base64": "signature", "not_json": "json",
    }[case]
    assert err.value.code == expected


def test_timestamp_within_tolerance_passes(ca, leaf) -> None:
    env, body, headers = _signed_launch(leaf, now=datetime.now(UTC) - timedelta(seconds=100))
    make_verifier(ca, {CERT_URL: leaf.chain_pem}, {envelopes.app_id(env)}).verify(headers, body)


@pytest.mark.parametrize("case", ["wrong_san", "expired", "not_yet_valid", "untrusted_root"])
def test_certificate_rejections(ca, case: str) -> None:
    now = datetime.now(UTC)
    if case == "wrong_san":
        bad, code = ca.issue("example.com"), "cert_san"
    elif case == "expired":
        bad, code = ca.issue(not_before=now - timedelta(days=10), not_after=now - timedelta(days=1)), "cert_expired"
    elif case == "not_yet_valid":
        bad, code = ca.issue(not_before=now + timedelta(days=1), not_after=now + timedelta(days=3)), "cert_expired"
    else:
        bad, code = TestCA("Impostor Root").issue(), "cert_untrusted"
    env, body, headers = _signed_launch(bad)
    verifier = make_verifier(ca, {CERT_URL: bad.chain_pem}, {envelopes.app_id(env)})
    with pytest.raises(VerificationFailed) as err:
        verifier.verify(headers, body)
    assert err.value.code == code


def test_skill_events_get_an_hour(ca, leaf) -> None:
    env = envelopes.current(envelopes.load(LAUNCH), now=datetime.now(UTC) - timedelta(minutes=30))
    env["request"]["type"] = "AlexaSkillEvent.SkillEnabled"
    body, headers = envelopes.signed(leaf, env)
    make_verifier(ca, {CERT_URL: leaf.chain_pem}, {envelopes.app_id(env)}).verify(headers, body)


def test_session_ended_without_context_uses_session_application(ca, leaf) -> None:
    # alexa-js/alexa-app fixture: a SessionEndedRequest with no context at all.
    env = envelopes.current(envelopes.load("session-ended-request.json"))
    assert "context" not in env
    body, headers = envelopes.signed(leaf, env)
    make_verifier(ca, {CERT_URL: leaf.chain_pem}, {env["session"]["application"]["applicationId"]}).verify(
        headers, body
    )


def test_request_only_sample_without_timestamp_is_rejected(ca, leaf) -> None:
    # alexa-skills-kit-sdk-for-java SessionEndedRequest.withError.json has no timestamp (samples/README.md).
    env = envelopes.load("session-ended-request.json")
    env["request"] = envelopes.load("session-ended-request-error.request-only.json")
    body, headers = envelopes.signed(leaf, env)
    verifier = make_verifier(ca, {CERT_URL: leaf.chain_pem}, {env["session"]["application"]["applicationId"]})
    with pytest.raises(VerificationFailed) as err:
        verifier.verify(headers, body)
    assert err.value.code == "timestamp"


def test_cache_directory_serves_chains_offline(tmp_path, ca, leaf) -> None:
    fetched: list[str] = []

    def fetcher(url: str) -> bytes:
        fetched.append(url)
        return leaf.chain_pem

    first = CachedChainSource(tmp_path, fetcher)
    assert first(CERT_URL) == leaf.chain_pem
    assert fetched == [CERT_URL]
    assert (tmp_path / cache_key(CERT_URL)).read_bytes() == leaf.chain_pem
    # A new process (new instance) with fetching off still verifies from the directory.
    offline = CachedChainSource(tmp_path, None)
    env, body, headers = _signed_launch(leaf)
    AlexaRequestVerifier(offline, [ca.cert], frozenset({envelopes.app_id(env)})).verify(headers, body)
    assert fetched == [CERT_URL]
    with pytest.raises(VerificationFailed) as err:
        offline("https://s3.amazonaws.com/echo.api/other.pem")
    assert err.value.code == "cert_fetch"


def test_geolocation_fragment_as_documented_by_amazon() -> None:
    # context-geolocation-fragment.json: Amazon's documented example (via jovo docs); its timestamp
    # "2018-03-25T00:00:00Z+00:00" is not ISO-8601, so the fix time is left out rather than guessed.
    geo = envelopes.load("context-geolocation-fragment.json")["Geolocation"]
    loc = location_from_geolocation(geo)
    assert loc is not None
    assert (loc.lat, loc.lon, loc.accuracy_m, loc.altitude_m) == (38.2, 28.3, 12.1, 120.1)
    assert (loc.heading_deg, loc.speed_mps) == (180.0, 10.0)
    assert loc.fix_time is None
    assert parse_alexa_time("2018-12-18T09:47:40+00:00") == datetime(2018, 12, 18, 9, 47, 40, tzinfo=UTC)
    geo_off = dict(geo, locationServices={"access": "DISABLED", "status": "STOPPED"})
    assert location_from_geolocation(geo_off) is None


def test_device_address_maps_to_civic() -> None:
    loc = location_from_address(
        {"addressLine1": "10 Downing Street", "city": "London", "postalCode": "SW1A 2AA", "countryCode": "GB"}
    )
    assert loc is not None and loc.civic is not None
    assert (loc.civic.a6, loc.civic.a3, loc.civic.pc, loc.civic.country) == (
        "10 Downing Street", "London", "SW1A 2AA", "GB",
    )
    assert location_from_address({"countryCode": "GB"}) is None
