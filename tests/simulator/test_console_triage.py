"""The operator console fit for a control room (issue 24 item 1), in Debian's Chromium driven by
Playwright against a real bridge and reference receiver: 200 alerts with the detail pane in view (also at
200 % zoom), one Tab stop for the list, triage order, filters, severity, an assertive announcement for
every new life-safety alert and person message (queued, none lost), the platform's real state and the
whole conversation from the bridge's history whoever acted, duress shown as duress, languages by name,
the home address beside the fix, focus back on the alert after an action, and axe-core (vendored in
tests/fixtures/axe/, see SOURCES.md) finding no serious or critical violation."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.core.model import Device, Location, Person
from device_adapters.checkin import timers
from tests.alerts.test_messages import platform, raise_alert
from tests.simulator.test_console import EDINBURGH, browser  # noqa: F401 - `browser` is the fixture
from tests.support.bridges import BridgeEnv, running_bridge
from tests.support.paths import FIXTURES

AXE = FIXTURES / "axe" / "axe.min.js"
HOME = Location(lat=55.9412, lon=-3.2055, accuracy_m=10, source="registered_address", grid_ref="NT 24661 72490")
# Records every text the assertive region is given, before the console's script runs.
RECORD_ANNOUNCEMENTS = """
window.SOSBRIDGE_ANNOUNCE_GAP_MS = 60;
window.__announced = [];
document.addEventListener("DOMContentLoaded", () => {
  const region = document.getElementById("announce");
  new MutationObserver(() => { if (region.textContent) window.__announced.push(region.textContent); })
    .observe(region, { childList: true, characterData: true, subtree: true });
});
"""


async def open_console(browser: Any, env: BridgeEnv, **context: Any) -> Any:  # noqa: F811
    from playwright.async_api import expect

    control = "ctl-" + secrets.token_hex(8)
    env.receiver.receiver.control_token = control
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.add_init_script(RECORD_ANNOUNCEMENTS)
    await page.goto(env.receiver.base_url + "/")
    await page.get_by_label("Control token").fill(control)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#connection")).to_have_text("Live")
    return page


async def in_viewport(page: Any, selector: str) -> bool:
    return bool(await page.evaluate("""(sel) => {
        const r = document.querySelector(sel).getBoundingClientRect();
        return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0
               && r.right <= window.innerWidth;
    }""", selector))


async def axe_violations(page: Any) -> list[dict[str, Any]]:
    # Evaluated through the DevTools protocol: the page's own policy (script-src 'self') stays in force.
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;true")
    result = await page.evaluate("""async () => {
        const r = await axe.run(document, { resultTypes: ["violations"] });
        return r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length,
                                         target: v.nodes[0] && v.nodes[0].target }));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


async def many_devices(env: BridgeEnv, n: int) -> list[str]:
    tokens = {f"crowd-{i:03d}": f"crowd-token-{i:03d}-{secrets.token_hex(8)}" for i in range(n)}
    devices = [Device(device_id=d, person=Person(name=f"Caller {d[-3:]}", language="en-GB")) for d in tokens]
    await env.store.put_devices(devices, tokens=tokens)
    return list(tokens.values())


async def raise_many(env: BridgeEnv, tokens: list[str], bodies: list[dict[str, Any]]) -> list[str]:
    """One alert per device, all at once, over one keep-alive client."""
    async with httpx.AsyncClient(base_url=env.url, timeout=20) as c:
        async def one(token: str, body: dict[str, Any]) -> str:
            r = await c.post("/v1/alerts", headers={"Authorization": f"Bearer {token}"},
                             json={"message_id": secrets.token_hex(8), **body})
            assert r.status_code == 202, r.text
            return str(r.json()["alert_id"])

        return list(await asyncio.gather(*(one(t, b) for t, b in zip(tokens, bodies, strict=True))))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[BridgeEnv]:
    async with running_bridge(tmp_path, auto_ack_s=None) as e:
        yield e


@pytest.mark.timeout(120)
async def test_200_alerts_detail_in_view_one_tab_stop_and_axe(env: BridgeEnv, browser: Any) -> None:  # noqa: F811
    from playwright.async_api import expect

    page = await open_console(browser, env, viewport={"width": 1280, "height": 800})
    tokens = await many_devices(env, 200)
    ids = await raise_many(env, tokens, [{"kind": "fall", "location": EDINBURGH}] * 200)
    await expect(page.locator("#alert-list [role=option]")).to_have_count(200, timeout=30_000)
    # The list is one Tab stop: exactly one alert is tabbable, and Tab leaves the list at once.
    assert await page.locator('#alert-list [tabindex="0"]').count() == 1
    await page.locator('#alert-list [tabindex="0"]').focus()
    await page.keyboard.press("End")
    last = page.locator("#alert-list [role=option]").last
    await expect(last).to_be_focused()
    await expect(last).to_have_attribute("aria-selected", "true")
    for _ in range(50):
        await page.keyboard.press("ArrowUp")
    chosen = page.locator("#alert-list [role=option]").nth(149)
    await expect(chosen).to_be_focused()
    chosen_id = await chosen.get_attribute("data-alert-id")
    assert chosen_id in ids
    await expect(page.locator("#f-alert-id")).to_have_text(chosen_id)
    # The detail, its actions and the connection state are in view, although #150 is far down the list.
    for selector in ("#detail-h", "#ack", "#connection"):
        assert await in_viewport(page, selector), selector
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.getAttribute('role')") != "option"
    # 200 % zoom is the same layout as half the window: the detail is still in view, not after the list.
    await page.set_viewport_size({"width": 640, "height": 400})
    await chosen.focus()
    for selector in ("#detail-h", "#connection"):
        assert await in_viewport(page, selector), f"{selector} at 200 %"
    assert await page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight + 1")
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 1280, "height": 800})
    assert await axe_violations(page) == []
    assert page.errors == []
    await page.close()


async def test_triage_order_severity_filters_and_announcements(env: BridgeEnv, browser: Any) -> None:  # noqa: F811
    from playwright.async_api import expect

    page = await open_console(browser, env)
    tokens = await many_devices(env, 30)
    # 30 together, 5 of them silent duress: every one announced, in order, none lost.
    bodies = [{"kind": "duress", "silent": True} if i % 6 == 5 else {"kind": "sos"} for i in range(30)]
    await raise_many(env, tokens, bodies)
    await expect(page.locator("#alert-list [role=option]")).to_have_count(30, timeout=20_000)
    await page.wait_for_function("() => window.__announced.length >= 30", timeout=20_000)
    announced = await page.evaluate("window.__announced")
    assert len(announced) == 30
    assert sum(text.startswith("New DURESS alert from Caller") for text in announced) == 5

    # A person's message on an alert that is not selected is announced too.
    person = await env.add_device("talker", person=Person(name="Iona Grant", language="en-GB"))
    async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {person}"}) as device:
        talk_id = await raise_alert(device, kind="medical")
        r = await device.post(f"/v1/alerts/{talk_id}/messages", json={"text": "Chest pain, door is open"})
        assert r.status_code == 202
    await page.wait_for_function(
        "() => window.__announced.includes('Message from Iona Grant: Chest pain, door is open')", timeout=10_000)

    # Triage: a low battery raised first still comes after the open life-safety ones; resolved ones last.
    battery = await env.add_device("old-pendant", person=Person(name="Low Batt"))
    async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {battery}"}) as device:
        battery_id = await raise_alert(device, kind="low_battery")
    first_sos = page.locator("#alert-list [role=option]").first
    await expect(page.locator(f'[data-alert-id="{battery_id}"]')).to_be_visible(timeout=10_000)
    order = await page.locator("#alert-list [role=option]").evaluate_all("(xs) => xs.map((x) => x.dataset.alertId)")
    assert order.index(battery_id) == len(order) - 1
    await expect(first_sos).to_contain_text("CRITICAL")
    await expect(page.locator(f'[data-alert-id="{battery_id}"]')).to_contain_text("ROUTINE")
    await expect(page.locator(f'[data-alert-id="{talk_id}"]')).to_contain_text("HIGH")

    # Filters: silent and duress only; a kind; closed ones.
    await page.get_by_label("Silent and duress only").check()
    await expect(page.locator("#alert-list [role=option]")).to_have_count(5)
    await expect(page.locator("#alert-list [role=option]").first).to_contain_text("DURESS")
    await page.get_by_label("Silent and duress only").uncheck()
    await page.get_by_label("Kind").select_option("low_battery")
    await expect(page.locator("#alert-list [role=option]")).to_have_count(1)
    await page.get_by_label("Kind").select_option("")
    await page.get_by_label("State").select_option("closed")
    await expect(page.get_by_text("No alert matches these filters.")).to_be_visible()
    await page.get_by_label("State").select_option("all")
    assert page.errors == []
    await page.close()


async def test_real_state_conversation_duress_language_home_and_focus(env: BridgeEnv, browser: Any) -> None:  # noqa: F811
    from playwright.async_api import expect

    page = await open_console(browser, env)
    token = await env.add_device("croft", registered_address=HOME,
                                 person=Person(name="Morag MacLeod", language="gd"))
    auth = platform(env)
    async with (
        httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {token}"}) as device,
        httpx.AsyncClient(base_url=env.url, headers=auth) as other_desk,
    ):
        alert_id = await raise_alert(device, kind="fall", location=EDINBURGH)
        item = page.locator(f'[data-alert-id="{alert_id}"]')
        await item.click()
        await expect(page.locator("#f-language")).to_have_text("Scottish Gaelic (gd)")
        await expect(page.locator("#f-location")).to_have_text("55.95325, -3.18826 ± 12 m")
        await expect(page.locator("#f-home")).to_contain_text("NT 24661 72490")
        # Delivered to this platform: the bridge's own state, as the device shows it.
        await expect(page.locator("#told")).to_have_text(
            'What the person is told: "Your alert has been sent to the police."', timeout=10_000)

        # Another desk acknowledges and texts through the platform API; the person answers.
        assert (await other_desk.post(f"/v1/platform/alerts/{alert_id}/ack",
                                      json={"operator": "PC 1234", "note": "unit 12"})).status_code == 200
        r = await other_desk.post(f"/v1/platform/alerts/{alert_id}/messages",
                                  json={"text": "Can you open the door?", "operator": "PC 1234"})
        assert r.status_code == 201
        r = await device.post(f"/v1/alerts/{alert_id}/messages", json={"text": "Yes, it is open"})
        assert r.status_code == 202
        await expect(page.locator("#f-state")).to_have_text("acknowledged", timeout=10_000)
        await expect(page.locator("#ack")).to_be_disabled()
        thread = page.locator("#thread li")
        await expect(thread).to_have_count(3, timeout=10_000)
        await expect(thread.nth(0)).to_contain_text("Acknowledged by PC 1234: unit 12")
        await expect(thread.nth(1)).to_contain_text("Can you open the door?")
        await expect(thread.nth(2)).to_contain_text("Yes, it is open")
        await expect(page.locator("#told")).to_have_text('What the person is told: "Help is on the way."')

        # Resolve asks why; Escape keeps it open; focus returns to the alert after the action.
        await page.get_by_role("button", name="Resolve…").click()
        await page.keyboard.press("Escape")
        await expect(page.locator("#action-status")).to_have_text("Not resolved: the alert stays open.")
        await expect(item).to_be_focused()
        await page.get_by_role("button", name="Resolve…").click()
        await page.get_by_role("button", name="Resolve the alert").click()
        await expect(page.locator("#action-status")).to_have_text("Say why the alert is resolved first.")
        await page.get_by_label("Why is this alert resolved?").fill("Taken to hospital")
        await page.get_by_role("button", name="Resolve the alert").click()
        await expect(page.locator("#f-state")).to_have_text("resolved")
        await expect(page.locator(f'[data-alert-id="{alert_id}"]')).to_be_focused()
        view = (await other_desk.get(f"/v1/platform/alerts/{alert_id}")).json()
        assert view["alert"]["state"] == "resolved"
        assert [h["detail"].get("note") for h in view["history"] if h["event"] == "resolve"] == ["Taken to hospital"]

        # Resolved elsewhere: the console follows without anyone touching it.
        second = await raise_alert(device, kind="sos")
        await page.locator(f'[data-alert-id="{second}"]').click()
        await other_desk.post(f"/v1/platform/alerts/{second}/resolve", json={"note": "duplicate call"})
        await expect(page.locator("#f-state")).to_have_text("resolved", timeout=10_000)
        await expect(page.locator("#resolve")).to_be_disabled()

    duress_token = await env.add_device("flat-3", person=Person(name="Jo Reid", language="en-GB"))
    async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {duress_token}"}) as device:
        duress_id = await raise_alert(device, kind="duress", silent=True)
        await page.locator(f'[data-alert-id="{duress_id}"]').click()
        await expect(page.locator("#detail-h")).to_have_text("DURESS duress · Jo Reid")
        await expect(page.locator("#duress-banner")).to_be_visible()
        await expect(page.locator("#told")).to_have_text(
            "What the person was told: nothing. Their device shows no sign of this alert (silent).")
        # A cancel under coercion is held: a warning that the alert is ongoing, not an ordinary reason.
        r = await device.post(f"/v1/alerts/{duress_id}/cancel", json={})
        assert r.status_code == 202, r.text
        await expect(page.locator("#held-banner")).to_contain_text("ONGOING", timeout=10_000)
        await expect(page.locator("#thread")).to_contain_text("held, the alert stays open")

    folded_token = await env.add_device("pendant-9", person=Person(name="Ali Khan", language="ur"))
    async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {folded_token}"}) as device:
        folded_id = await raise_alert(device, kind="fall")
        await raise_alert(device, kind="duress", silent=True)
        item = page.locator(f'[data-alert-id="{folded_id}"]')
        await expect(item).to_contain_text("DURESS", timeout=10_000)
        await item.click()
        await expect(page.locator("#f-folded")).to_contain_text("duress \u00d71")
        await expect(page.locator("#duress-banner")).to_contain_text("DURESS folded in")
        await expect(page.locator("#f-language")).to_have_text("Urdu (ur)")

    # A check-in timer that ran out, with its note.
    walker = await env.add_device("walker-c", person=Person(name="Sam Lee"))
    async with httpx.AsyncClient(base_url=env.url, headers={"Authorization": f"Bearer {walker}"}) as device:
        assert (await device.post("/v1/checkin", json={"minutes": 5, "note": "viewing flat 2B"})).status_code == 201
    svc = timers(env.bridge.runtime)
    assert svc is not None
    svc.clock = lambda: time.time() + 600
    svc.poke()
    missed = page.locator("#alert-list [role=option]", has_text="Sam Lee")
    await expect(missed).to_be_visible(timeout=10_000)
    await missed.click()
    await expect(page.locator("#f-checkin-note")).to_have_text("viewing flat 2B")
    assert await axe_violations(page) == []
    assert page.errors == []
    await page.close()
