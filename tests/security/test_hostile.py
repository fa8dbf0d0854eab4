"""Issue 14, tried as an attacker or a careless operator would, against running bridges and receivers.

One test (or one table row) per item; every refusal is asserted over real HTTP on loopback. The slow-client
test lives in test_slow_clients.py (it runs `sosbridge serve` as a process with a small descriptor limit).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.factories import until
from tests.support.paths import ROOT
from tests.support.ports import free_port


def audit_rows(env: BridgeEnv) -> list[sqlite3.Row]:
    with sqlite3.connect(env.settings.db) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM audit WHERE action = 'credential_refused' ORDER BY id").fetchall()


async def sos(env: BridgeEnv, token: str) -> str:
    async with httpx.AsyncClient(base_url=env.url) as c:
        r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 202, r.text
        return str(r.json()["alert_id"])


# -- item 1: nobody can fake "help is on the way" ----------------------------------------------------------
@pytest.mark.parametrize(
    ("platform_token", "presented", "status"),
    [
        (None, "change-me", 403),  # the default webhook secret: the exact attack of the issue
        (None, "SECRET", 403),  # the real webhook secret, while no platform token is set
        ("TOKEN", "SECRET", 401),  # the webhook secret is never a platform credential
        ("TOKEN", "change-me", 401),
        ("TOKEN", None, 401),
        ("TOKEN", "TOKEN", 200),  # only the platform's own token acknowledges
    ],
)
async def test_platform_callbacks_take_only_the_platform_token(
    tmp_path: Path, platform_token: str | None, presented: str | None, status: int
) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        real_token = env.platform_token
        env.bridge.runtime.settings.platform_token = real_token if platform_token else None
        alert_id = await sos(env, await env.add_device("pendant-1"))
        credential = {"SECRET": env.secret, "TOKEN": real_token}.get(presented or "", presented)
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        async with httpx.AsyncClient(base_url=env.url) as c:
            r = await c.post(f"/v1/platform/alerts/{alert_id}/ack", headers=headers)
            assert r.status_code == status, r.text
            details = await c.get(f"/v1/platform/alerts/{alert_id}", headers=headers)
            assert details.status_code == status
        state = (await env.store.get_alert(alert_id)).state.value
        if status == 200:
            assert state == "acknowledged"
        else:
            assert state in ("received", "forwarded")  # the device is never told "help is on the way"


async def test_receiver_never_sends_the_webhook_secret_as_a_bearer_token(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=0.01) as env:
        env.receiver.receiver.platform_token = None  # a platform configured with only the webhook secret
        alert_id = await sos(env, await env.add_device("pendant-2"))
        await env.receiver.wait_for(lambda cs: len(cs) == 1)
        assert await env.receiver.receiver.callback(alert_id, "ack") == 0
        await asyncio.sleep(0.2)
        assert (await env.store.get_alert(alert_id)).state.value in ("received", "forwarded")


async def test_readyz_shows_reasons_not_alert_ids_and_details_need_the_ops_token(tmp_path: Path) -> None:
    ops = secrets.token_hex(16)
    async with running_bridge(tmp_path, fallback_after_attempts=1, ops_token=ops) as env:
        env.receiver.receiver.mode = "down"  # a platform outage
        alert_id = await sos(env, await env.add_device("pendant-3"))
        async with httpx.AsyncClient(base_url=env.url) as c:

            async def degraded() -> bool:
                return (await c.get("/readyz")).status_code == 503

            await until(degraded)
            public = await c.get("/readyz")
            assert alert_id not in public.text
            assert {a["reason"] for a in public.json()["alarms"]} >= {"critical_contact_overdue"}
            assert all(set(a) == {"reason"} for a in public.json()["alarms"])
            detailed = await c.get("/readyz", headers={"Authorization": f"Bearer {ops}"})
            assert alert_id in detailed.text
            for wrong in (env.secret, env.platform_token, "change-me"):
                assert (await c.get("/readyz", headers={"Authorization": f"Bearer {wrong}"})).status_code == 401
        env.receiver.receiver.mode = "normal"


def serve_process(env: dict[str, str], *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "serve", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "extra",
    [
        {},  # no secret at all: the default change-me
        {"SOSBRIDGE_PLATFORM_SECRET": "change-me"},
        {"SOSBRIDGE_PLATFORM_SECRET": ""},
        {"SOSBRIDGE_PLATFORM_SECRET": "s3cret-s3cret-s3cret", "SOSBRIDGE_PLATFORM_TOKEN": "s3cret-s3cret-s3cret"},
        {  # Alexa without signature checks, on real alerts
            "SOSBRIDGE_PLATFORM_SECRET": secrets.token_hex(16),
            "SOSBRIDGE_ALEXA_APPLICATION_IDS": "amzn1.ask.skill.test",
            "SOSBRIDGE_ALEXA_VERIFY_SIGNATURE": "false",
        },
    ],
)
def test_serve_refuses_to_start_with_a_default_secret(tmp_path: Path, extra: dict[str, str]) -> None:
    assert_refused(tmp_path, extra)


def test_serve_refuses_the_anonymous_embedded_broker_for_real_alerts(tmp_path: Path) -> None:
    secret = {"SOSBRIDGE_PLATFORM_SECRET": secrets.token_hex(16)}
    assert_refused(tmp_path, secret, "--embedded-broker", "--broker-port", str(free_port()))


def assert_refused(tmp_path: Path, extra: dict[str, str], *args: str) -> None:
    env = {
        "SOSBRIDGE_PLATFORM_URL": "http://127.0.0.1:9/contacts",
        "SOSBRIDGE_DB": str(tmp_path / "b.db"),
        "SOSBRIDGE_DATA_DIR": str(tmp_path),
        "SOSBRIDGE_HTTP_PORT": str(free_port()),
        "SOSBRIDGE_COAP_ENABLED": "false",
        **extra,
    }
    try:
        done = serve_process(env, *args)
    except subprocess.TimeoutExpired:
        pytest.fail("serve started (and kept running) with an unsafe configuration")
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    # One line, exit 2: the security check's refusal, or the configuration loader's (an empty secret is
    # already invalid configuration).
    assert len(lines) == 1 and lines[0].startswith(("refusing to start:", "sosbridge: error:")), done.stderr


def test_receiver_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "receiver",
         "--port", str(free_port()), "--jsonl", str(tmp_path / "c")],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2 and "refusing to start" in done.stderr


async def test_the_demo_generates_its_own_secrets(tmp_path: Path) -> None:
    from bridge.app.security import serve_refusal
    from simulator.harness import embedded_stack  # what `sosbridge demo` runs on

    async with embedded_stack(tmp_path, embedded_mqtt=False, coap_enabled=False) as stack:
        s = stack.bridge.runtime.settings
        assert s.platform_secret != "change-me" and len(s.platform_secret) >= 16
        assert s.platform_token and s.platform_token != s.platform_secret
        assert serve_refusal(s) is None


# -- item 3 (readyz part): a dead or unreachable transport is not ready --------------------------------------
async def test_broker_unreachable_at_start_is_not_ready(tmp_path: Path) -> None:
    ops = secrets.token_hex(16)
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    async with running_bridge(tmp_path, mqtt_url=dead_broker, ops_token=ops) as env:
        assert "mqtt" in env.bridge.runtime.started_adapters
        async with httpx.AsyncClient(base_url=env.url) as c:

            async def not_ready() -> bool:
                return (await c.get("/readyz")).status_code == 503

            await until(not_ready, timeout=15)
            body = (await c.get("/readyz")).json()
            assert body["status"] == "degraded"
            assert body["transports"] == [{"adapter": "mqtt", "reason": "unreachable"}]
            detailed = (await c.get("/readyz", headers={"Authorization": f"Bearer {ops}"})).json()
            assert "127.0.0.1" in detailed["transports"][0]["detail"]


class CrashingReader:
    """A transport whose reader task ends on a store error (what issue 14 saw on a GSM port)."""

    name = "crashing-reader"

    def __init__(self) -> None:
        self._reader: asyncio.Task[None] | None = None

    def enabled(self, settings: Any) -> bool:
        return True

    def routers(self, ctx: Any) -> list[Any]:
        return []

    async def start(self, ctx: Any) -> None:
        async def read() -> None:
            await asyncio.sleep(0.2)
            raise ConnectionError("store unavailable while reading")

        self._reader = asyncio.create_task(read(), name="reader-ttyUSB0")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()


@pytest.fixture
async def bridge_with_crashing_reader(tmp_path: Path) -> AsyncIterator[BridgeEnv]:
    from bridge.app.embedded import EmbeddedBridge
    from tests.support.bridges import bridge_settings

    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, platform_token=token) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token, ops_token="ops-" + token)
        eb = EmbeddedBridge(settings)
        eb.runtime.adapters.append(CrashingReader())
        async with eb:
            yield BridgeEnv(eb, rx, settings, secret, token)


async def test_dead_transport_task_is_not_ready(bridge_with_crashing_reader: BridgeEnv) -> None:
    env = bridge_with_crashing_reader
    async with httpx.AsyncClient(base_url=env.url) as c:

        async def not_ready() -> bool:
            return (await c.get("/readyz")).status_code == 503

        await until(not_ready)
        body = (await c.get("/readyz")).json()
        assert body["transports"] == [{"adapter": "crashing-reader", "reason": "task_dead"}]
        ops = {"Authorization": f"Bearer ops-{env.platform_token}"}
        detailed = (await c.get("/readyz", headers=ops)).json()
        assert "store unavailable while reading" in detailed["transports"][0]["detail"]


# -- item 5: refused credentials cannot turn into disk writes ----------------------------------------------
async def test_refused_credentials_write_one_summary_row_per_source_and_interval(tmp_path: Path) -> None:
    """Each interval of a source writes at most two rows (its first refusal, then "N more refused"), however
    many refusals it holds: 200 refused credentials cannot become 200 disk writes. How many intervals the
    200 requests span depends on the machine's speed, so the test counts them instead of assuming one."""
    interval_s = 1.0
    async with running_bridge(tmp_path, auth_audit_interval_s=interval_s) as env:
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=env.url) as c:
            statuses = []
            for i in range(200):
                r = await c.post("/v1/alerts", json={"kind": "sos"}, headers={"Authorization": f"Bearer x{i}"})
                statuses.append(r.status_code)
        elapsed = time.monotonic() - started
        assert statuses.count(401) == 20 and statuses.count(429) == 180

        def accounted() -> int:
            rows = audit_rows(env)
            more = [re.search(r"; (\d+) more refused in", r["detail"]) for r in rows]
            return sum(1 for m in more if m is None) + sum(int(m.group(1)) for m in more if m is not None)

        async def all_summarised() -> bool:
            return accounted() == 200

        await until(all_summarised, timeout=5 + elapsed)  # the health loop closes the last interval
        rows = audit_rows(env)
        assert {r["actor"] for r in rows} == {"source:127.0.0.1"}
        intervals = int(elapsed / interval_s) + 2
        assert len(rows) <= 2 * intervals, (len(rows), elapsed)
        assert any("more refused" in r["detail"] for r in rows)


async def test_redis_audit_stream_is_bounded(redis_url: str) -> None:
    from bridge.core.model import utcnow
    from bridge.store.redis import RedisStore

    store = RedisStore(redis_url, namespace="audit-" + secrets.token_hex(4), audit_maxlen=200)
    await store.open()
    try:
        for i in range(2000):
            await store.audit(utcnow(), "source:10.0.0.1", "credential_refused", "device_token", str(i))
        length = int(await store.r.xlen(store._k("audit")))
        assert length < 400  # MAXLEN ~200: Redis trims whole stream nodes, so a little over is normal
        assert (await store.audit_log(1))[0]["detail"] == "1999"
    finally:
        await store.r.delete(store._k("audit"))
        await store.close()


# -- item 6: signatures cover a timestamp and the idempotency key -----------------------------------------
BODY = json.dumps({"schema": "sosbridge.contact/1"}).encode()


def _headers(signature: str | None, key: str = "01JALERT:1") -> dict[str, str]:
    h = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key}
    if signature is not None:
        h[SIGNATURE_HEADER] = signature
    return h


@pytest.mark.parametrize(
    ("name", "make", "status", "error"),
    [
        ("fresh", lambda s: (BODY, _headers(sign(BODY, s, "01JALERT:1"))), None, None),
        ("old body-only scheme", lambda s: (BODY, _headers("sha256=" + "0" * 64)), 401, "bad_signature"),
        ("missing", lambda s: (BODY, _headers(None)), 401, "bad_signature"),
        (
            "replayed under a new Idempotency-Key",
            lambda s: (BODY, _headers(sign(BODY, s, "01JALERT:1"), key="01JALERT:2")),
            401,
            "bad_signature",
        ),
        (
            "replayed hours later",
            lambda s: (BODY, _headers(sign(BODY, s, "01JALERT:1", int(time.time()) - 3 * 3600))),
            401,
            "stale_signature",
        ),
        (
            "timestamp in the future",
            lambda s: (BODY, _headers(sign(BODY, s, "01JALERT:1", int(time.time()) + 3600))),
            401,
            "stale_signature",
        ),
        (
            "timestamp edited",
            lambda s: (BODY, _headers(sign(BODY, s, "01JALERT:1").replace("t=", "t=1", 1))),
            401,
            "bad_signature",
        ),
        ("tampered body", lambda s: (BODY + b" ", _headers(sign(BODY, s, "01JALERT:1"))), 401, "bad_signature"),
        ("wrong secret", lambda s: (BODY, _headers(sign(BODY, "guess", "01JALERT:1"))), 401, "bad_signature"),
    ],
)
async def test_receiver_refuses_forged_and_replayed_webhooks(
    name: str, make: Any, status: int | None, error: str | None
) -> None:
    secret = secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, auto_ack_s=None) as rx:
        body, headers = make(secret)
        async with httpx.AsyncClient() as c:
            r = await c.post(rx.url, content=body, headers=headers)
        if status is None:
            assert r.status_code in (200, 422) and rx.receiver.rejected == 0, name  # signature accepted
        else:
            assert r.status_code == status and r.json()["error"] == error, name
            assert rx.receiver.records == []


async def test_bridge_signs_timestamp_key_and_body(bridge_env: BridgeEnv) -> None:
    alert_id = await sos(bridge_env, await bridge_env.add_device("pendant-6"))
    records = await bridge_env.receiver.wait_for(lambda cs: len(cs) == 1)
    assert records[0]["alert_id"] == alert_id and bridge_env.receiver.receiver.rejected == 0


# -- item 13: the reference receiver's personal data and controls can be closed -------------------------------
async def test_receiver_control_token() -> None:
    secret, control = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, control_token=control) as rx:
        async with httpx.AsyncClient(base_url=rx.base_url) as c:
            for method, path in (("GET", "/contacts"), ("POST", "/control/mode/down"), ("POST", "/control/ack/x")):
                assert (await c.request(method, path)).status_code == 401
                bad = await c.request(method, path, headers={"Authorization": f"Bearer {secret}"})
                assert bad.status_code == 401
            ok = await c.get("/contacts", headers={"Authorization": f"Bearer {control}"})
            assert ok.status_code == 200
            assert rx.receiver.mode == "normal"


# -- item 14: a local client cannot pick its own source address ---------------------------------------------
async def test_forwarded_for_is_ignored_by_default(bridge_env: BridgeEnv) -> None:
    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        statuses = []
        for i in range(25):
            headers = {"Authorization": "Bearer nope", "X-Forwarded-For": f"198.51.100.{i}"}
            statuses.append((await c.post("/v1/alerts", json={"kind": "sos"}, headers=headers)).status_code)
    assert statuses[20:] == [429] * 5  # one source (127.0.0.1), not 25 fresh ones
    assert {r["actor"] for r in audit_rows(bridge_env)} == {"source:127.0.0.1"}


# -- item 16: an oversized chunked body is 413, like an oversized Content-Length ------------------------------
async def test_oversized_chunked_body_is_413(bridge_env: BridgeEnv) -> None:
    token = await bridge_env.add_device("pendant-16")
    limit = bridge_env.settings.max_body_bytes

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"kind": "sos", "attributes": {"pad": "'
        for _ in range(limit // 1024 + 2):
            yield b"x" * 1024
        yield b'"}}'

    async with httpx.AsyncClient(base_url=bridge_env.url) as c:
        r = await c.post(
            "/v1/alerts",
            content=chunks(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert r.status_code == 413, r.text
    assert r.json()["error"] == "too_large"


# -- item 8: secrets and personal data at rest are private, whatever the umask -------------------------------
async def test_data_dir_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "bridge.db").touch(mode=0o644)  # an installation from before: narrowed on start
    data.chmod(0o755)
    old_umask = os.umask(0o022)
    try:
        async with running_bridge(
            tmp_path, db=str(data / "bridge.db"), data_dir=str(data), fallback_after_attempts=1
        ) as env:
            env.receiver.receiver.mode = "down"
            await sos(env, await env.add_device("pendant-8"))
            spool = env.settings.effective_fallback_file

            async def spooled() -> bool:
                return spool.exists() and spool.stat().st_size > 0

            await until(spooled)
            env.receiver.receiver.mode = "normal"
            modes = {
                p.name: p.stat().st_mode & 0o777
                for p in data.iterdir()
                if p.is_file() and (p.suffix in (".db", ".jsonl") or p.name.endswith(("-wal", "-shm")))
            }
            assert data.stat().st_mode & 0o777 == 0o700
            assert {"bridge.db", "bridge.db-wal", "supervision.db", spool.name} <= set(modes)
            assert modes == dict.fromkeys(modes, 0o600), modes
    finally:
        os.umask(old_umask)


# -- items 10, 11, 12: weak device tokens, unsigned Alexa, the anonymous embedded broker ---------------------
def test_devices_add_refuses_a_short_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    env["SOSBRIDGE_DB"] = str(tmp_path / "b.db")
    done = subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", "devices", "add", "pendant-10", "--token", "42"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "16 to 200 characters" in done.stdout + done.stderr


def test_serve_says_what_is_unsafe_when_it_may_start(tmp_path: Path) -> None:
    """Unsigned Alexa on exercise traffic starts, with an error; the embedded broker starts, with a warning."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_")}
    env.update(
        {
            "SOSBRIDGE_DB": str(tmp_path / "b.db"),
            "SOSBRIDGE_DATA_DIR": str(tmp_path),
            "SOSBRIDGE_HTTP_PORT": str(port),
            "SOSBRIDGE_COAP_ENABLED": "false",
            "SOSBRIDGE_DEFAULT_STATUS": "exercise",
            "SOSBRIDGE_ALEXA_APPLICATION_IDS": "amzn1.ask.skill.test",
            "SOSBRIDGE_ALEXA_VERIFY_SIGNATURE": "false",
        }
    )
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.app.cli", "serve", "--embedded-broker", "--broker-port", str(free_port())],
            env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        from bridge.infra.serving import wait_http

        wait_http(f"http://127.0.0.1:{port}/healthz", proc=proc, timeout=30)
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        alexa = [x for x in lines if "NOT verified" in x.get("msg", "")]
        broker = [x for x in lines if "embedded MQTT broker is anonymous" in x.get("msg", "")]
        assert alexa and alexa[0]["level"] == "error"
        assert broker and broker[0]["level"] == "warning"
    finally:
        proc.terminate()
        proc.wait(15)
