"""Issue 23 item 8: platform, admin and ops tokens have a minimum length, share the failed-credential
limiter with device tokens (429 past it) and are audited; each tenant may have its own platform token that
acts on its alerts only; a CR/LF in a person's name is cleaned at registration (it failed every e-mail
about them for 6 h); the reference receiver refuses cross-origin and DNS-rebound control requests and
will not start beyond loopback without its control token.

Real embedded bridge and receiver over HTTP on loopback; `sosbridge` subprocesses for start-up errors.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
import pytest

from bridge.app.refusal_audit import flush_refusals
from bridge.core.model import Person
from simulator.platform.receiver import EmbeddedReceiver
from tests.app.test_cli_config import assert_one_line_error, run
from tests.security.test_hostile import audit_rows
from tests.support.bridges import running_bridge
from tests.support.ports import free_port


@pytest.mark.parametrize("setting", ["SOSBRIDGE_ADMIN_TOKEN", "SOSBRIDGE_PLATFORM_TOKEN", "SOSBRIDGE_OPS_TOKEN"])
def test_short_tokens_are_a_start_up_error(tmp_path: Path, setting: str) -> None:
    done = run(tmp_path, "serve", **{setting: "short-token", "SOSBRIDGE_DB": str(tmp_path / "b.db")})
    assert_one_line_error(done, setting, "must be at least 16 characters")
    assert "short-token" not in done.stderr  # a credential is never echoed


@pytest.mark.parametrize("what", ["admin", "platform", "ops"])
async def test_failed_tokens_are_limited_and_audited(tmp_path: Path, what: str) -> None:
    async with running_bridge(tmp_path, ops_token="ops-" + secrets.token_hex(12)) as env:
        path = {"admin": ("GET", "/v1/devices"), "platform": ("POST", "/v1/platform/alerts/x/ack"),
                "ops": ("GET", "/readyz")}[what]
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
            statuses = [(await c.request(*path, headers={"Authorization": f"Bearer guess-{i}"})).status_code
                        for i in range(25)]
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        assert env.bridge.runtime.metrics.rejected_count("http", f"{what}_bad_credentials") >= 1
        await flush_refusals(env.bridge.runtime, float("inf"))
        assert any(f"{what}_bad_credentials" in row["detail"] for row in audit_rows(env)), \
            [dict(r) for r in audit_rows(env)]


async def test_a_tenant_token_acts_only_on_its_tenants_alerts(tmp_path: Path) -> None:
    acme, other = "acme-" + secrets.token_hex(12), "other-" + secrets.token_hex(12)
    async with running_bridge(tmp_path, auto_ack_s=None,
                              platform_tenant_tokens=f"acme={acme},other={other}") as env:
        token = await env.add_device("d-acme", tenant_id="acme")
        async with httpx.AsyncClient(base_url=env.url, timeout=10) as c:
            r = await c.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                             json={"kind": "sos", "message_id": "m"})
            alert_id = r.json()["alert_id"]
            ack = f"/v1/platform/alerts/{alert_id}/ack"
            assert (await c.post(ack, headers={"Authorization": f"Bearer {other}"})).status_code == 404
            # The global token no longer acts on a tenant that has its own.
            glob = await c.post(ack, headers={"Authorization": f"Bearer {env.platform_token}"})
            assert glob.status_code == 404
            assert (await c.post(ack, headers={"Authorization": f"Bearer {acme}"})).status_code == 200


def test_line_breaks_in_names_are_cleaned_at_registration(tmp_path: Path) -> None:
    db = str(tmp_path / "b.db")
    carer = '{"name": "Ann\\r\\nBcc: x@example.org", "relation": "daughter\\n", "email": "ann@example.org"}'
    done = run(tmp_path, "devices", "add", "d-1", "--name", "Iain\r\nBcc: all@example.org",
               "--emergency-contact", carer, SOSBRIDGE_DB=db, SOSBRIDGE_DATA_DIR=str(tmp_path))
    assert done.returncode == 0, done.stderr
    shown = run(tmp_path, "devices", "export", SOSBRIDGE_DB=db, SOSBRIDGE_DATA_DIR=str(tmp_path))
    device = json.loads(shown.stdout.splitlines()[0])
    assert device["person"]["name"] == "Iain Bcc: all@example.org"
    assert device["person"]["emergency_contacts"][0]["name"] == "Ann Bcc: x@example.org"
    person = Person(name="A\nB", emergency_contacts=[{"name": "C\r\nD", "email": "c@example.org"}])
    assert person.name == "A B" and person.emergency_contacts[0].name == "C D"


async def test_receiver_control_routes_refuse_cross_origin_and_rebound_hosts() -> None:
    async with EmbeddedReceiver(secret=secrets.token_hex(16)) as rx:
        async with httpx.AsyncClient(base_url=rx.base_url, timeout=5) as c:
            csrf = await c.post("/control/mode/down", headers={"Origin": "https://evil.example"})
            assert csrf.status_code == 403
            rebound = await c.post("/control/mode/down", headers={"Host": f"rebind.example:{rx.port}"})
            assert rebound.status_code == 403
            assert rx.receiver.mode == "normal"
            same = await c.post("/control/mode/slow", headers={"Origin": rx.base_url})
            assert same.status_code == 200 and rx.receiver.mode == "slow"


def test_receiver_beyond_loopback_needs_its_control_token(tmp_path: Path) -> None:
    done = run(tmp_path, "receiver", "--host", "0.0.0.0", "--port", str(free_port()),
               "--secret", secrets.token_hex(16))
    assert_one_line_error(done, "--control-token")
