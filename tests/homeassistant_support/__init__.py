"""A real Home Assistant for the tests: started once per session from its own venv (scripts/setup --homeassistant),
configured with the files shipped in skills/assist/homeassistant/, onboarded through its own API.

Nothing here imports Home Assistant: it runs as a separate `hass` process, as a user runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "skills" / "assist" / "homeassistant"
TOKEN = "ha-home-device-token-0123456789abcdef"
REMINDER_WEBHOOK = "sos-bridge-reminder-test-0123456789"


def ha_venv() -> Path:
    """Where scripts/setup --homeassistant puts the venv (scripts/test passes it on in SOSBRIDGE_HA_VENV)."""
    if os.environ.get("SOSBRIDGE_HA_VENV"):
        return Path(os.environ["SOSBRIDGE_HA_VENV"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sosbridge" / "ha-venv"


def hass_binary() -> Path | None:
    path = ha_venv() / "bin" / "hass"
    return path if path.exists() else None


def write_config(config_dir: Path, ha_port: int, bridge_port: int, automations: list[dict[str, Any]]) -> None:
    """A Home Assistant config dir holding the shipped package, sentences and blueprints, copied unchanged."""
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "configuration.yaml").write_text(
        "homeassistant:\n"
        "  name: SOS Bridge test home\n"
        "  latitude: 56.39\n  longitude: -3.43\n  elevation: 20\n"
        "  unit_system: metric\n  time_zone: Europe/London\n  country: GB\n  language: en\n"
        "  packages: !include_dir_named packages\n"
        "http:\n"
        f"  server_host: 127.0.0.1\n  server_port: {ha_port}\n"
        "api:\n"
        "onboarding:\n"
        "conversation:\n"
        "automation: !include automations.yaml\n"
        "logger:\n  default: warning\n"
    )
    bridge = f"http://127.0.0.1:{bridge_port}"
    (config_dir / "secrets.yaml").write_text(
        f'sos_bridge_assist_url: "{bridge}/v1/voice/assist"\n'
        f'sos_bridge_alerts_url: "{bridge}/v1/alerts"\n'
        f'sos_bridge_checkin_url: "{bridge}/v1/voice/checkin"\n'
        f'sos_bridge_token: "Bearer {TOKEN}"\n'
        f'sos_bridge_reminder_webhook: "{REMINDER_WEBHOOK}"\n'
    )
    for sub in ("packages", "custom_sentences", "blueprints"):
        shutil.copytree(SHIPPED / sub, config_dir / sub, dirs_exist_ok=True)
    # JSON is YAML: no YAML library needed here.
    (config_dir / "automations.yaml").write_text(json.dumps(automations, indent=1))


@dataclass
class HomeAssistant:
    proc: subprocess.Popen[bytes]
    url: str
    token: str
    log: Path
    config_dir: Path
    started_s: float
    log_handle: Any = None

    def converse(self, text: str, language: str = "en") -> tuple[str, dict[str, Any]]:
        """POST /api/conversation/process, as a voice satellite's pipeline does after speech-to-text."""
        resp = httpx.post(
            f"{self.url}/api/conversation/process",
            json={"text": text, "language": language},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        resp.raise_for_status()
        body = resp.json()
        return body["response"]["speech"]["plain"]["speech"], body

    async def aconverse(self, text: str, language: str = "en") -> str:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.post(
                f"{self.url}/api/conversation/process",
                json={"text": text, "language": language},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        resp.raise_for_status()
        return str(resp.json()["response"]["speech"]["plain"]["speech"])

    async def aset_state(self, entity_id: str, state: str) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(
                f"{self.url}/api/states/{entity_id}", json={"state": state},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        resp.raise_for_status()

    async def afire(self, event_type: str, data: dict[str, Any] | None = None) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(
                f"{self.url}/api/events/{event_type}", json=data or {},
                headers={"Authorization": f"Bearer {self.token}"},
            )
        resp.raise_for_status()

    async def anotifications(self) -> list[dict[str, Any]]:
        """The persistent notifications, over Home Assistant's websocket API."""
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(f"{self.url}/api/websocket") as ws:
            assert (await ws.receive_json(timeout=10))["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": self.token})
            assert (await ws.receive_json(timeout=10))["type"] == "auth_ok"
            await ws.send_json({"id": 1, "type": "persistent_notification/get"})
            reply = await ws.receive_json(timeout=10)
        assert reply["success"], reply
        return list(reply["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log_handle is not None:
            self.log_handle.close()


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hass exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{url}/api/onboarding", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"hass did not answer in {timeout} s:\n{log.read_text()[-4000:]}")


def onboard(url: str) -> str:
    """Onboarding through Home Assistant's own API, then a long-lived access token over its websocket."""
    client_id = f"{url}/"
    with httpx.Client(base_url=url, timeout=30) as client:
        user = client.post(
            "/api/onboarding/users",
            json={"client_id": client_id, "name": "Test", "username": "test", "password": "test-pass-1234",
                  "language": "en"},
        )
        user.raise_for_status()
        grant = client.post(
            "/auth/token",
            data={"grant_type": "authorization_code", "code": user.json()["auth_code"], "client_id": client_id},
        )
        grant.raise_for_status()
        access = grant.json()["access_token"]
        headers = {"Authorization": f"Bearer {access}"}
        for step, body in (
            ("core_config", {}),
            ("analytics", {}),
            ("integration", {"client_id": client_id, "redirect_uri": f"{url}/?auth_callback=1"}),
        ):
            client.post(f"/api/onboarding/{step}", json=body, headers=headers)
    return _long_lived_token(url, access)


def _long_lived_token(url: str, access: str) -> str:
    import asyncio

    import aiohttp

    async def run() -> str:
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{url}/api/websocket") as ws:
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": access})
            assert (await ws.receive_json())["type"] == "auth_ok"
            await ws.send_json(
                {"id": 1, "type": "auth/long_lived_access_token", "client_name": "sosbridge-tests", "lifespan": 1}
            )
            reply = await ws.receive_json()
            assert reply["success"], reply
            return str(reply["result"])

    return asyncio.run(run())


def start_home_assistant(
    hass: Path, config_dir: Path, ha_port: int, bridge_port: int, automations: list[dict[str, Any]],
    timeout: float = 240.0,
) -> HomeAssistant:
    write_config(config_dir, ha_port, bridge_port, automations)
    log = config_dir / "hass.out"
    t0 = time.monotonic()
    fh = open(log, "ab")  # the hass process writes to it until it exits
    proc = subprocess.Popen(
        [str(hass), "--config", str(config_dir), "--skip-pip", "--log-no-color"],
        stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(config_dir)},
    )
    url = f"http://127.0.0.1:{ha_port}"
    try:
        _wait_up(url, proc, log, timeout)
        token = onboard(url)
        _wait_loaded(url, token, proc, log, timeout)
    except BaseException:
        proc.kill()
        proc.wait(10)
        fh.close()
        raise
    return HomeAssistant(proc, url, token, log, config_dir, time.monotonic() - t0, fh)


def _wait_loaded(url: str, token: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until the integrations the tests use are loaded (Home Assistant answers HTTP before it has finished)."""
    need = {"conversation", "intent_script", "rest_command", "automation"}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hass exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        resp = httpx.get(f"{url}/api/config", headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if resp.status_code == 200:
            body = resp.json()
            if need <= set(body.get("components", [])) and body.get("state") == "RUNNING":
                return
        time.sleep(0.25)
    raise TimeoutError(f"hass did not load {need} in {timeout} s:\n{log.read_text()[-4000:]}")
