"""Every code sample in docs/platform/ runs against real contacts from a running bridge (issue 24 item 4).

The pages are the contract platform builders copy, so each fenced block is executed, not read:
`python` and `javascript` signature verifiers check every real webhook request (and refuse a tampered
body, another Idempotency-Key, a stale timestamp, another secret); `http` requests are sent to the bridge
with the placeholders filled in; `toml` routes are parsed and must match a real contact; `json` documents
must fit a real contact or answer of this run (same keys, same types; strings equal unless they hold `…`
or are times). A block of any other kind fails, and a page that disagrees with the code fails
(`test_a_page_that_disagrees_with_the_code_fails` mutates the pages to prove it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import secrets
import subprocess
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.app.embedded import EmbeddedBridge
from bridge.core.contact import Contact
from bridge.core.model import Device, Location, Person
from bridge.delivery.routing import routes_from_toml
from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER
from bridge.devices.profiles import ProfileRegistry
from simulator.devices.mqtt import MqttPublisher, VirtualMqttDevice
from simulator.platform.receiver import EmbeddedReceiver
from tests.support.bridges import bridge_settings
from tests.support.paths import ROOT, need_binary

PAGES = sorted((ROOT / "docs" / "platform").glob("*.md"))
KINDS = {"python", "javascript", "http", "json", "toml", "sip"}
FENCE = re.compile(r"^```([\w-]*)[ \t]*([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
PUBLISH_TITLE = re.compile(r'title="published on sosbridge/<tenant>/<device>/(\w+)"')
EDINBURGH = Location(lat=55.9533, lon=-3.1883, accuracy_m=30, source="registered_address")


@dataclass
class Sample:
    page: str
    line: int
    kind: str
    info: str
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line} ({self.kind})"


def samples(page: str, text: str) -> list[Sample]:
    return [Sample(page, text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2).strip(), m.group(3))
            for m in FENCE.finditer(text)]


def test_every_block_on_the_platform_pages_is_a_kind_the_tests_run() -> None:
    found = [s for p in PAGES for s in samples(p.name, p.read_text())]
    assert {"webhook.md", "messages.md", "standards.md"} <= {p.name for p in PAGES}
    assert [str(s) for s in found if s.kind not in KINDS] == []
    kinds = {s.kind for s in found}
    assert {"python", "javascript", "http", "json"} <= kinds


# -- what a sample must fit -------------------------------------------------------------------------------
def _is_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def fits(sample: Any, real: Any) -> bool:
    """`sample` (a documented JSON document) describes `real`: the same keys with the same types, strings
    equal unless the sample's holds `…` (any string) or both are times, lists item by item against any."""
    if isinstance(sample, dict):
        return isinstance(real, dict) and all(k in real and fits(v, real[k]) for k, v in sample.items())
    if isinstance(sample, list):
        return isinstance(real, list) and all(any(fits(s, r) for r in real) for s in sample)
    if isinstance(sample, str):
        if not isinstance(real, str):
            return False
        return "…" in sample or sample == real or (_is_time(sample) and _is_time(real))
    if isinstance(sample, bool) or sample is None:
        return sample is real
    if isinstance(sample, int | float):
        return isinstance(real, int | float) and not isinstance(real, bool)
    return False


def documents(value: Any) -> Iterator[Any]:
    """Every dict nested in `value`, itself included: a sample may show a part of a larger document."""
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from documents(v)
    elif isinstance(value, list):
        for v in value:
            yield from documents(v)


# -- the running bridge ------------------------------------------------------------------------------------
@dataclass
class Live:
    base: str
    secret: str
    platform_token: str
    rx: EmbeddedReceiver
    broker: str
    store: Any
    tmp: Path
    tokens: dict[str, str] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    answers: list[Any] = field(default_factory=list)

    @property
    def requests(self) -> list[tuple[dict[str, str], bytes]]:
        assert self.rx.receiver.raw_requests is not None
        return self.rx.receiver.raw_requests

    def real_documents(self) -> list[Any]:
        return [*self.rx.contacts, *self.answers]

    async def page_alert(self, page: str) -> str:
        """A fresh, acknowledged fall of a wearable of its own for each page (no page closes another's)."""
        if page in self.alerts:
            return self.alerts[page]
        device_id = f"doc-{Path(page).stem}"
        token = secrets.token_urlsafe(24)
        device = Device(device_id=device_id, tenant_id="care-north", person=Person(name="Doc Sample", language="en-GB"),
                        registered_address=EDINBURGH)
        await self.store.put_device(device)
        await self.store.set_credential(device_id, "token", token)
        self.tokens[page] = token
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as c:
            r = await c.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"}, json={
                "kind": "fall", "message_id": uuid.uuid4().hex,
                "location": {"lat": EDINBURGH.lat, "lon": EDINBURGH.lon, "accuracy_m": 12}})
            assert r.status_code == 202, r.text
            alert_id = str(r.json()["alert_id"])
        await self.rx.first(lambda c: c["alert_id"] == alert_id and c["msg_type"] == "alert")
        platform = {"Authorization": f"Bearer {self.platform_token}"}
        async with httpx.AsyncClient(base_url=self.base, timeout=10, headers=platform) as c:
            for _ in range(100):  # the receiver acknowledges 50 ms after the contact: wait for its callback
                r = await c.get(f"/v1/platform/alerts/{alert_id}")
                if r.json()["alert"]["state"] == "acknowledged":
                    break
                await self.rx.receiver.wait_for(lambda cs: True, 0.05)
        self.alerts[page] = alert_id
        return alert_id

    def first_json_body(self, alert_id: str) -> bytes:
        return next(body for headers, body in self.requests
                    if headers.get(IDEMPOTENCY_HEADER.lower()) == f"{alert_id}:1")


# -- the runners, one per kind: each returns what is wrong ------------------------------------------------
def signature_cases(live: Live) -> list[tuple[dict[str, Any], bool]]:
    """(verify arguments, expected answer) for every real request and four ways of getting it wrong."""
    cases: list[tuple[dict[str, Any], bool]] = []
    for headers, body in live.requests:
        header = headers.get(SIGNATURE_HEADER.lower())
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        t = int(str(header).split(",")[0].removeprefix("t="))
        good = {"body": body, "secret": live.secret, "header": header, "key": key}
        cases.append((good, True))
        cases.append(({**good, "body": body + b" "}, False))
        cases.append(({**good, "key": key + "0"}, False))
        cases.append(({**good, "secret": live.secret + "x"}, False))
        cases.append(({**good, "now": t + 3600}, False))
    return cases


async def run_python(sample: Sample, live: Live) -> list[str]:
    alert_id = await live.page_alert(sample.page)
    contact = Contact.model_validate_json(live.first_json_body(alert_id))
    ns: dict[str, Any] = {"contact": contact, "__name__": "doc_sample"}
    try:
        exec(compile(sample.code, str(sample), "exec"), ns)  # the documented sample, run as written
    except Exception as exc:
        return [f"{sample}: raised {type(exc).__name__}: {exc}"]
    problems: list[str] = []
    proved = False
    if callable(ns.get("verify")):
        proved = True
        for args, want in signature_cases(live):
            extra = {"now": args["now"]} if "now" in args else {}
            got = ns["verify"](args["body"], args["secret"], args["header"], args["key"], **extra)
            if got is not want:
                problems.append(f"{sample}: verify() said {got} for a request that is {'good' if want else 'bad'}")
                break
    if "errors" in ns:
        proved = True
        if ns["errors"]:
            problems.append(f"{sample}: a real contact did not validate: {ns['errors']}")
    if "summary" in ns:
        proved = True
        if not ns["summary"] or ns["summary"].get("alert_id") != alert_id:
            problems.append(f"{sample}: parse_incoming did not give the contact's alert_id")
    if not proved:
        problems.append(f"{sample}: defines none of verify/errors/summary: the test cannot tell what it shows")
    return problems


HARNESS = """
const fs = require("node:fs");
const mod = require(process.argv[2]);
if (typeof mod.verify !== "function") { console.log(JSON.stringify("no verify export")); process.exit(0); }
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(cases.map((c) => c.now === undefined
  ? mod.verify(Buffer.from(c.body, "base64"), c.secret, c.header, c.key)
  : mod.verify(Buffer.from(c.body, "base64"), c.secret, c.header, c.key, 300, c.now))));
"""


async def run_javascript(sample: Sample, live: Live) -> list[str]:
    node = need_binary("node")
    await live.page_alert(sample.page)
    module = live.tmp / f"sample-{sample.line}.js"
    module.write_text(sample.code)
    harness = live.tmp / "harness.js"
    harness.write_text(HARNESS)
    cases = signature_cases(live)
    stdin = json.dumps([{**a, "body": base64.b64encode(a["body"]).decode()} for a, _ in cases])
    done = await asyncio.to_thread(subprocess.run, [node, str(harness), str(module)], input=stdin,
                                   capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        return [f"{sample}: node failed: {done.stderr.strip()[-500:]}"]
    got = json.loads(done.stdout)
    if got != [want for _, want in cases]:
        return [f"{sample}: verify() disagrees with the bridge's signatures: {got}"]
    return []


def fill(text: str, live: Live, page: str) -> str:
    return (text.replace("{alert_id}", live.alerts[page])
            .replace("<SOSBRIDGE_PLATFORM_TOKEN>", live.platform_token)
            .replace("<device token>", live.tokens[page]))


async def run_http(sample: Sample, live: Live) -> list[str]:
    await live.page_alert(sample.page)
    head, _, body = fill(sample.code, live, sample.page).partition("\n\n")
    request_line, *header_lines = head.strip().splitlines()
    method, path = request_line.split()[:2]
    headers = dict(line.split(": ", 1) for line in header_lines)
    async with httpx.AsyncClient(base_url=live.base, timeout=10) as c:
        r = await c.request(method, path, headers=headers, content=body.strip().encode() or None)
    if not 200 <= r.status_code < 300:
        return [f"{sample}: {method} {path} answered {r.status_code}: {r.text[:300]}"]
    live.answers.append(r.json())
    return []


async def run_toml(sample: Sample, live: Live) -> list[str]:
    await live.page_alert(sample.page)
    names = [r["secret_env"] for r in tomllib.loads(sample.code).get("routes", []) if "secret_env" in r]
    code = sample.code
    # Files a route names (an EIDO endpoint's certificate and key) must exist to load: stand-ins here.
    for key, path in re.findall(r'^(\w+_file)\s*=\s*"([^"]+)"', code, flags=re.M):
        stand_in = live.tmp / f"{key}-{secrets.token_hex(4)}"
        stand_in.write_text("stand-in for the docs test\n")
        code = code.replace(f'"{path}"', f'"{stand_in}"', 1)
    routes = routes_from_toml(code, environ={n: secrets.token_hex(16) for n in names})
    contacts = [Contact.model_validate(c) for c in live.rx.contacts]
    return [f"{sample}: route {r.name} matches no real contact" for r in routes
            if not any(r.matches(c) for c in contacts)]


async def run_sip(sample: Sample, live: Live) -> list[str]:
    """A captured SIP MESSAGE: its headers, in order, are the ones the bridge builds, and its parts carry the
    CAP and PIDF-LO media types the bridge sends (bridge/delivery/sip/message.py)."""
    from bridge.delivery.sinks.signing import IDEMPOTENCY_HEADER as SIP_IDEMPOTENCY_HEADER
    from bridge.delivery.sip.message import CAP_TYPE, PIDF_TYPE, MessageRequest, Part, build_message

    head = sample.code.split("\n\n", 1)[0].splitlines()
    shown = [line.split(":", 1)[0] for line in head[1:] if ":" in line]
    real = build_message(MessageRequest(
        request_uri="sip:sos@psap.example", from_uri="sip:sosbridge@bridge.example", from_tag="t",
        to_uri="sip:sos@psap.example", call_id="c", branch="z9hG4bKx", via_transport="TCP", via_host="192.0.2.1",
        via_port=5060, cap=Part(CAP_TYPE, "cap@b", b"<alert/>"), pidf=Part(PIDF_TYPE, "pidf@b", b"<presence/>"),
        boundary="b", geolocation_routing=True, idempotency_header=SIP_IDEMPOTENCY_HEADER, idempotency_key="k",
    )).decode().split("\r\n\r\n", 1)[0].split("\r\n")
    built = [line.split(":", 1)[0] for line in real[1:]]
    problems = []
    if not head or not head[0].startswith("MESSAGE "):
        problems.append(f"{sample}: not a SIP MESSAGE request line: {head[:1]}")
    if shown != built:
        problems.append(f"{sample}: headers {shown} are not the ones the bridge sends: {built}")
    for media_type in (CAP_TYPE, PIDF_TYPE):
        if f"Content-Type: {media_type}" not in sample.code:
            problems.append(f"{sample}: no part of type {media_type}")
    return problems


async def run_publish(sample: Sample, live: Live, suffix: str) -> list[str]:
    """A document the page says a device publishes: publish it as written (its alert id filled in)."""
    device = live.devices.get("mqtt")
    if device is None:
        device = Device(device_id="doc-mqtt-button", tenant_id="care-north", profile_id="sosbridge-mqtt-button",
                        registered_address=EDINBURGH)
        await live.store.put_device(device)
        live.devices["mqtt"] = device
        profile = ProfileRegistry.load().get("sosbridge-mqtt-button")
        assert profile is not None
        await VirtualMqttDevice(live.broker, device, profile).alert("sos")
        first = await live.rx.first(lambda c: c["device"]["id"] == device.device_id)
        live.alerts["mqtt"] = first["alert_id"]
    doc = json.loads(sample.code)
    if "alert_id" in doc:
        doc["alert_id"] = live.alerts["mqtt"]
    await MqttPublisher(live.broker).apublish(f"sosbridge/{device.tenant_id}/{device.device_id}/{suffix}",
                                              json.dumps(doc))
    try:
        await live.rx.first(lambda c: c["device"]["id"] == device.device_id and c["msg_type"] == "message"
                            and c["message"]["text"] == doc["text"])
    except TimeoutError:
        return [f"{sample}: the published document never reached the platform"]
    return []


async def sse_backlog(c: httpx.AsyncClient, alert_id: str, headers: dict[str, str]) -> list[Any]:
    """The documents of the device's event stream up to its first `message` event (the backlog of the
    platform's texts, which the caller knows the alert has)."""
    got: list[Any] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(3), c.stream("GET", f"/v1/alerts/{alert_id}/events", headers=headers) as r:
            event = ""
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line.startswith("data:"):
                    got.append(json.loads(line.partition(":")[2]))
                    if event == "message":
                        break
    return got


def check_json(sample: Sample, live: Live) -> list[str]:
    try:
        doc = json.loads(sample.code)
    except json.JSONDecodeError as exc:
        return [f"{sample}: not JSON: {exc}"]
    if any(fits(doc, real) for top in live.real_documents() for real in documents(top)):
        return []
    if isinstance(doc, dict) and len(doc) == 1 and sample.page == "eido-websocket.md":
        # A NENA-STA-024 WebSocket message: valid against the schemas the notifier itself answers with
        # (bridge/delivery/eido_ws/messages.schema.json), its EIDO notification included.
        from bridge.delivery.eido_ws.messages import schema_errors

        ((name, _body),) = doc.items()
        try:
            errors = schema_errors(name, doc)
        except KeyError:
            return [f"{sample}: {name!r} is no NENA-STA-024 message the notifier knows"]
        return [f"{sample}: {e}" for e in errors]
    return [f"{sample}: fits no real contact or answer of this run: {sample.code.strip()[:200]}"]


async def check_pages(pages: dict[str, str], live: Live) -> list[str]:
    """Run every sample of `pages` (name -> markdown); JSON documents are checked last, against everything."""
    problems: list[str] = []
    found = [s for name, text in pages.items() for s in samples(name, text)]
    runners: dict[str, Callable[[Sample, Live], Any]] = {
        "python": run_python, "javascript": run_javascript, "http": run_http, "toml": run_toml, "sip": run_sip}
    for sample in found:
        if sample.kind == "json" and (m := PUBLISH_TITLE.search(sample.info)):
            problems += await run_publish(sample, live, m.group(1))
        elif sample.kind in runners:
            problems += await runners[sample.kind](sample, live)
        elif sample.kind != "json":
            problems.append(f"{sample}: a kind of block no test runs")
    platform = {"Authorization": f"Bearer {live.platform_token}"}
    async with httpx.AsyncClient(base_url=live.base, timeout=10, headers=platform) as c:
        for page, alert_id in live.alerts.items():
            live.answers.append((await c.get(f"/v1/platform/alerts/{alert_id}")).json())
            if page in live.tokens:  # the device's own view: its messages in both directions
                mine = {"Authorization": f"Bearer {live.tokens[page]}"}
                view = (await c.get(f"/v1/alerts/{alert_id}", headers=mine)).json()
                live.answers.append(view)
                if any(m["from"] == "platform" for m in view["messages"]):
                    live.answers += await sse_backlog(c, alert_id, mine)
    for sample in found:
        if sample.kind == "json" and not PUBLISH_TITLE.search(sample.info):
            problems += check_json(sample, live)
    return problems


# Ways a page can drift from the code; each must make check_pages fail.
DRIFTS = [
    ("webhook.md", 'signed = f"{t}.{idempotency_key}.".encode() + body', "signed = body"),
    ("webhook.md", 'Buffer.from(`${t}.${idempotencyKey}.`), body', "body"),
    ("webhook.md", '"state": "acknowledged", "message": "Help is on the way."}',
     '"status": "acknowledged", "message": "Help is on the way."}'),
    ("messages.md", "POST /v1/platform/alerts/{alert_id}/messages", "POST /v1/platform/alerts/{alert_id}/message"),
    ("messages.md", '"message": {"message_id": "r-1"', '"message": {"id": "r-1"'),
]


@pytest.mark.timeout(90)
async def test_platform_page_samples_run_against_a_running_bridge(
    tmp_path: Path, mosquitto_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOSBRIDGE_MQTT_Z2M_BASES", f"z2m-{uuid.uuid4().hex[:8]}")
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    async with EmbeddedReceiver(secret=secret, platform_token=token, auto_ack_s=0.05, keep_raw=True) as rx:
        settings = bridge_settings(tmp_path, rx.url, secret, token, mqtt_url=mosquitto_url,
                                   mqtt_client_id=f"sosbridge-docs-{uuid.uuid4().hex[:8]}")
        async with EmbeddedBridge(settings) as eb:
            rx.receiver.bridge_url = eb.url
            pages = {p.name: p.read_text() for p in PAGES}
            live = Live(eb.url, secret, token, rx, mosquitto_url, eb.runtime.store, tmp_path)
            assert await check_pages(pages, live) == []
            assert len(live.requests) >= 4  # alerts and messages of several devices were verified

            # The same checks fail as soon as a page says something the code does not do.
            for page, old, new in DRIFTS:
                assert old in pages[page], (page, old)
                drifted = Live(eb.url, secret, token, rx, mosquitto_url, eb.runtime.store, tmp_path / page,
                               tokens=live.tokens, alerts=dict(live.alerts), devices=live.devices)
                drifted.tmp.mkdir(exist_ok=True)
                problems = await check_pages({page: pages[page].replace(old, new)}, drifted)
                assert problems, f"{page} still passes with {new!r} instead of {old!r}"
