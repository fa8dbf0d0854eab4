"""SIP and EIDO routes in the configuration: a mistake stops `sosbridge serve` with one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bridge.delivery.routing import RoutingError, parse_routes
from bridge.delivery.sink_choice import sink_kind
from tests.support.paths import ROOT
from tests.support.processes import sosbridge_cmd


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"name": "cad", "url": "wss://127.0.0.1:9443/eido"},
         "route #1 (cad): route: a wss:// (EIDO notifier) url needs "
         "eido_cert_file, eido_key_file, eido_client_ca_file"),
        ({"name": "ng", "url": "sips:sos@psap.example;transport=tcp"},
         "route #1 (ng): url: a sips: URI is sent over TLS only"),
        ({"name": "esrp", "url": "urn:service:sos"},
         "route #1 (esrp): route: a urn:service: url needs sip_outbound_proxy (the bridge has no LoST client)"),
    ],
)
def test_a_bad_conveyance_route_is_one_line_and_exit_2(tmp_path: Path, route: dict[str, str], message: str) -> None:
    env = {**os.environ, "SOSBRIDGE_DATA_DIR": str(tmp_path), "SOSBRIDGE_ROUTES": json.dumps([route])}
    run = subprocess.run(sosbridge_cmd("serve"), env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"sosbridge: error: SOSBRIDGE_ROUTES: {message}"]


def test_eido_files_must_exist(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(RoutingError, match="eido_cert_file, eido_key_file: no such file"):
        parse_routes([{"name": "cad", "url": "wss://127.0.0.1:9443/eido", "eido_cert_file": "nope.pem",
                       "eido_key_file": "nope.key", "eido_client_ca_file": str(tmp_path / "ca.pem")}])


def test_each_scheme_picks_its_sink() -> None:
    assert [sink_kind(u) for u in ("https://p.example/x", "sip:sos@p", "sips:sos@p", "urn:service:sos",
                                   "wss://0.0.0.0:9443/eido")] == ["webhook", "sip", "sip", "sip", "eido_ws"]
