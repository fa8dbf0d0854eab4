"""The operator console of the reference platform (issue 16 part 2): its routes over real HTTP, and the page
itself in a real browser (Playwright driving the system Chromium; scripts/setup --services installs it).

The browser tests skip locally without Chromium and fail in CI (tests/support/paths.py `need_binary`)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.core.model import Person
from simulator.platform.console import CSP
from simulator.platform.receiver import EmbeddedReceiver
from tests.alerts.test_messages import platform, raise_alert
from tests.device_adapters.test_http_api import wait_state
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.paths import need_binary

EDINBURGH = {"lat": 55.95325, "lon": -3.18826, "accuracy_m": 12, "source": "gnss"}


# -- the routes, without a browser ------------------------------------------------------------------------
async def test_page_and_assets_are_served_with_a_strict_policy() -> None:
    async with EmbeddedReceiver(secret=secrets.token_hex(16), control_token="ctl-" + secrets.token_hex(8)) as rx:
        async with httpx.AsyncClient(base_url=rx.base_url) as c:
            page = await c.get("/")
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert page.headers["content-security-policy"] == CSP and "Control token" in page.text
            assert "http" not in page.text.replace("http-equiv", "")  # nothing loaded from elsewhere
            for name, kind in (("console.js", "text/javascript"), ("console.css", "text/css")):
                r = await c.get(f"/console/{name}")
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
            assert (await c.get("/console/receiver.py")).status_code == 404
            assert (await c.get("/console/../receiver.py")).status_code == 404


async def test_console_api_needs_the_control_token() -> None:
    control = "ctl-" + secrets.token_hex(8)
    async with EmbeddedReceiver(secret=secrets.token_hex(16), control_token=control) as rx:
        async with httpx.AsyncClient(base_url=rx.base_url) as c:
            assert (await c.get("/console/api/changes")).status_code == 401
            r = await c.post("/console/api/alerts/x/messages", json={"text": "hello"})
            assert r.status_code == 401 and rx.receiver.activity == []
            ok = await c.get("/console/api/changes", headers={"Authorization": f"Bearer {control}"})
            assert ok.status_code == 200
            assert ok.json() == {"reset": False, "records": [], "next": 0, "activity": [], "activity_next": 0}


async def test_long_poll_returns_new_contacts_and_operator_actions(tmp_path: Path) -> None:
    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        token = await env.add_device("console-1")
        rx = env.receiver
        async with (
            httpx.AsyncClient(base_url=rx.base_url) as console,
            httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as device,
        ):
            # A poll waiting for news is answered when the contact arrives.
            waiting = asyncio.create_task(console.get("/console/api/changes", params={"wait": 10}))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            alert_id = await raise_alert(device)
            first = (await asyncio.wait_for(waiting, 10)).json()
            assert [r["contact"]["alert_id"] for r in first["records"]] == [alert_id]
            assert first["records"][0]["index"] == 0 and first["next"] == 1
            # The JSON API is unchanged.
            assert (await console.get("/contacts")).json()[0]["contact"]["alert_id"] == alert_id

            ack = await console.post(f"/control/ack/{alert_id}")
            assert ack.json()["bridge_status"] == 200
            await wait_state(device, alert_id, "acknowledged")
            sent = await console.post(f"/console/api/alerts/{alert_id}/messages", json={"text": " On our way. "})
            assert sent.status_code == 201, sent.text
            assert sent.json()["text"] == "On our way." and sent.json()["audible"] is False
            news = (await console.get("/console/api/changes", params={"since": 1, "activity_since": 0})).json()
            assert news["records"] == [] and news["activity_next"] == 2
            assert [(a["type"], a["alert_id"], a["bridge_status"]) for a in news["activity"]] == [
                ("ack", alert_id, 200), ("message", alert_id, 201)]
            assert news["activity"][1]["text"] == "On our way."
            # The bridge's refusals come back as they are, and nothing is recorded.
            empty = await console.post(f"/console/api/alerts/{alert_id}/messages", json={"text": "\x07 "})
            assert empty.status_code == 422 and len(rx.receiver.activity) == 2
            unknown = await console.post("/console/api/alerts/nope/messages", json={"text": "hello"})
            assert unknown.status_code == 404 and len(rx.receiver.activity) == 2
            # After a reset, a console's old positions start again from the beginning.
            rx.receiver.reset()
            again = (await console.get("/console/api/changes", params={"since": 1, "activity_since": 2})).json()
            assert again["reset"] is True and again["next"] == 0


async def test_message_without_a_bridge_is_a_clear_error() -> None:
    async with EmbeddedReceiver(secret=secrets.token_hex(16), platform_token="p") as rx:
        async with httpx.AsyncClient(base_url=rx.base_url) as c:
            r = await c.post("/console/api/alerts/a1/messages", json={"text": "hello"})
            assert (r.status_code, r.json()["error"]) == (502, "bridge_unreachable")


# -- in a real browser ------------------------------------------------------------------------------------
@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = need_binary("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def signed_in_page(browser: Any, env: BridgeEnv) -> Any:
    from playwright.async_api import expect

    control = "ctl-" + secrets.token_hex(8)
    env.receiver.receiver.control_token = control
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and "401" not in msg.text else None)
    page.errors = errors
    await page.goto(env.receiver.base_url + "/")
    await expect(page.get_by_label("Control token")).to_be_visible()
    await page.get_by_label("Control token").fill("wrong")
    await page.get_by_label("Control token").press("Enter")
    await expect(page.locator("#login-error")).to_have_text("That control token was refused.")
    await page.get_by_label("Control token").fill(control)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#connection")).to_have_text("Live")
    await expect(page.get_by_text("No contacts received yet.")).to_be_visible()
    return page


async def test_console_in_a_browser(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        token = await env.add_device(
            "watch-console",
            person=Person(name="Morag MacLeod", language="gd", communication_needs=["deaf: text only"],
                          vulnerability_notes="Lives alone; key safe 1234"),
        )
        page = await signed_in_page(browser, env)
        async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as device:
            # A contact appears live, without a reload.
            fix_time = (datetime.now(UTC) - timedelta(seconds=40)).isoformat()
            alert_id = await raise_alert(device, kind="fall", location={**EDINBURGH, "fix_time": fix_time})
            item = page.locator(f'[data-alert-id="{alert_id}"]')
            await expect(item).to_be_visible(timeout=10_000)
            await expect(item).to_contain_text("fall · Morag MacLeod")
            await expect(item).not_to_contain_text("EXERCISE")
            # The detail view, reached with the keyboard.
            await item.focus()
            await page.keyboard.press("Enter")
            await expect(page.locator("#detail-h")).to_have_text("fall · Morag MacLeod")
            await expect(page.locator("#f-kind")).to_have_text("fall")
            await expect(page.locator("#f-silent")).to_have_text("No")
            await expect(page.locator("#f-language")).to_have_text("Scottish Gaelic (gd)")
            await expect(page.locator("#f-needs")).to_have_text("deaf: text only")
            await expect(page.locator("#f-notes")).to_have_text("Lives alone; key safe 1234")
            await expect(page.locator("#f-location")).to_have_text("55.95325, -3.18826 ± 12 m")
            await expect(page.locator("#f-source")).to_have_text("gnss")
            await expect(page.locator("#f-grid")).to_have_text(re.compile(r"^NT \d{5} \d{5}$"))
            await expect(page.locator("#f-fix-age")).to_have_text(re.compile(r"^(39|40|41|42) s when received$"))
            href = await page.locator("#map-link").get_attribute("href")
            assert href is not None and href.startswith("https://www.openstreetmap.org/?mlat=55.953250&mlon=-3.188260")
            await expect(page.locator("#silent-banner")).to_be_hidden()

            # Acknowledge (keyboard): the device is told help is on the way.
            await page.get_by_role("button", name="Acknowledge (help is on the way)").focus()
            await page.keyboard.press("Enter")
            status = await wait_state(device, alert_id, "acknowledged")
            assert status["message"] == "Help is on the way."
            await expect(page.locator("#f-state")).to_have_text("acknowledged")
            await expect(page.get_by_role("button", name="Acknowledge (help is on the way)")).to_be_disabled()

            # The operator types a message: the device receives it.
            await page.get_by_label("Message to the person").fill("Officers are 5 minutes away.")
            await page.get_by_role("button", name="Send message").click()
            await expect(page.locator("#message-status")).to_have_text("Sent.")
            body = (await device.get(f"/v1/alerts/{alert_id}")).json()
            assert [(m["from"], m["text"], m["discreet"]) for m in body["messages"]] == [
                ("platform", "Officers are 5 minutes away.", False)]
            await expect(page.locator("#thread li.from-operator")).to_contain_text("Officers are 5 minutes away.")

            # The person replies: it appears in the conversation.
            r = await device.post(f"/v1/alerts/{alert_id}/messages", json={"text": "I am upstairs, door open"})
            assert r.status_code in (200, 201, 202), r.text
            await expect(page.locator("#thread li.from-person")).to_contain_text(
                "I am upstairs, door open", timeout=10_000)
            await expect(page.locator("#thread li.from-person, #thread li.from-operator")).to_have_count(2)
            await expect(page.locator("#thread li.from-event")).to_have_text(re.compile("Acknowledged by console"))

            # Resolve asks why first; the alert is then closed and the console says so.
            await page.get_by_role("button", name="Resolve…").click()
            await expect(page.get_by_label("Why is this alert resolved?")).to_be_focused()
            await page.get_by_label("Why is this alert resolved?").fill("Officers with her; ambulance called")
            await page.get_by_role("button", name="Resolve the alert").click()
            await wait_state(device, alert_id, "resolved")
            await expect(page.locator("#f-state")).to_have_text("resolved")
            await expect(page.get_by_role("button", name="Send message")).to_be_disabled()
        assert page.errors == []
        await page.close()  # ends its long poll before the receiver stops


async def test_silent_and_exercise_alerts_in_a_browser(tmp_path: Path, browser: Any) -> None:
    from playwright.async_api import expect

    async with running_bridge(tmp_path, auto_ack_s=None) as env:
        quiet = await env.add_device("quiet-console", sms_replies=True, identifiers={"msisdn": "+447700900123"})
        drill = await env.add_device("drill-console", status="exercise")
        page = await signed_in_page(browser, env)
        async with (
            httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {quiet}"}) as device,
            httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {drill}"}) as exercise,
        ):
            exercise_id = await raise_alert(exercise)
            await expect(page.locator(f'[data-alert-id="{exercise_id}"]')).to_contain_text("EXERCISE")
            alert_id = await raise_alert(device, kind="duress", silent=True)
            item = page.locator(f'[data-alert-id="{alert_id}"]')
            await expect(item).to_contain_text("SILENT")
            await item.click()
            await expect(page.locator("#silent-banner")).to_be_visible()
            await expect(page.locator("#f-silent")).to_have_text("Yes: do not call or sound anything")
            await expect(page.locator("#exercise-banner")).to_be_hidden()
            await page.get_by_label("Message to the person").fill("Stay where you are. Officers are coming.")
            await page.get_by_role("button", name="Send message").click()
            await expect(page.locator("#message-status")).to_have_text(
                "Sent discreetly (no sound at the person's end).")
            await expect(page.locator("#thread li.from-operator")).to_contain_text("discreet (no sound)")
            body = (await device.get(f"/v1/alerts/{alert_id}")).json()
            assert [(m["text"], m["discreet"]) for m in body["messages"]] == [
                ("Stay where you are. Officers are coming.", True)]
            # Nothing audible: neither spoken on the satellite nor sent by SMS, only the silent HTTP channel.
            view = (await device.get(f"/v1/platform/alerts/{alert_id}", headers=platform(env))).json()
            channels = {d["channel"] for ds in view["message_deliveries"].values() for d in ds}
            assert channels <= {"http", "sse", "mqtt", "coap", "app"}, channels
            # The exercise alert is marked in its detail view too; the arrow keys move through the list.
            # Both are open and critical: the one raised first comes first.
            await item.focus()
            await page.keyboard.press("ArrowUp")
            await expect(page.locator(f'[data-alert-id="{exercise_id}"]')).to_be_focused()
            await expect(page.locator("#exercise-banner")).to_have_text(
                "EXERCISE: not a real emergency. Do not dispatch.")
            await expect(page.locator("#silent-banner")).to_be_hidden()
        assert page.errors == []
        await page.close()
