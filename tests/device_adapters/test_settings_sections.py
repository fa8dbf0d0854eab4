"""Each transport's settings class (registered under `sosbridge.settings`) carries its `SOSBRIDGE_<NAME>_*`
variables and TOML keys to its adapter: a real bridge is started with only the environment (or only the
file) naming the transport, and the running adapter listens, connects and behaves as those values say.
The start-up summary's lines and the listener checks come from the same classes."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

import aiocoap
import pytest

from bridge.app.config import Settings, load_settings
from bridge.app.embedded import EmbeddedBridge
from bridge.app.known_settings import unknown_variables
from bridge.app.listeners import listeners
from bridge.app.sections import PluginSettings, registered
from bridge.app.startup import summary_lines
from device_adapters.coap.settings import CoapSettings
from device_adapters.dc09.settings import Dc09Settings
from device_adapters.mqtt.settings import MqttSettings
from device_adapters.serial.settings import SerialSettings
from device_adapters.watch.settings import WatchSettings
from tests.support.bridges import running_bridge
from tests.support.ports import free_port


def adapter(env: Any, name: str) -> Any:
    found = [a for a in env.bridge.runtime.adapters if a.name == name]
    assert found and name in env.bridge.runtime.started_adapters, env.bridge.runtime.started_adapters
    return found[0]


def test_every_builtin_transport_registers_its_class() -> None:
    sections = dict(registered())
    assert sections["coap"] is CoapSettings and sections["dc09"] is Dc09Settings
    assert sections["mqtt"] is MqttSettings and sections["serial"] is SerialSettings
    assert sections["watch"] is WatchSettings
    assert all(issubclass(cls, PluginSettings) for cls in sections.values())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def accepts_tcp(port: int) -> None:
    """Raises (ConnectionRefusedError, TimeoutError) unless something accepts on 127.0.0.1:port."""
    _reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    writer.close()
    await asyncio.wait_for(writer.wait_closed(), 5)


async def test_watch_variables_reach_the_watch_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("SOSBRIDGE_WATCH_PORT", str(port))
    monkeypatch.setenv("SOSBRIDGE_WATCH_IDLE_S", "123")
    monkeypatch.setenv("SOSBRIDGE_WATCH_KEEPALIVE_S", "45")
    monkeypatch.setenv("SOSBRIDGE_WATCH_ALLOW", "127.0.0.0/8")
    async with running_bridge(tmp_path) as env:
        watch = adapter(env, "watch")
        assert (watch.port, watch.idle_s, watch.keepalive_s) == (port, 123, 45)
        await accepts_tcp(port)
        lines = await asyncio.wait_for(summary_lines(env.bridge.runtime), 10)
        assert f"watch      127.0.0.1:{port} TCP" in lines, lines


async def test_dc09_variables_reach_the_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("SOSBRIDGE_DC09_PORT", str(port))
    monkeypatch.setenv("SOSBRIDGE_DC09_PLAIN_ALLOW", "10.20.0.0/16")
    async with running_bridge(tmp_path) as env:
        dc09 = adapter(env, "dc09")
        assert dc09.port == port and [str(n) for n in dc09.plain_allow] == ["10.20.0.0/16"]
        await accepts_tcp(port)
        lines = await asyncio.wait_for(summary_lines(env.bridge.runtime), 10)
        assert any(line.startswith(f"DC-09      127.0.0.1:{port} TCP+UDP") for line in lines), lines


async def test_coap_variables_reach_the_coap_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_udp_port()
    monkeypatch.setenv("SOSBRIDGE_COAP_ENABLED", "true")
    monkeypatch.setenv("SOSBRIDGE_COAP_PORT", str(port))
    async with running_bridge(tmp_path) as env:
        adapter(env, "coap")
        client = await aiocoap.Context.create_client_context()
        try:
            request = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/.well-known/core")
            response = await asyncio.wait_for(client.request(request).response, 10)
        finally:
            await asyncio.wait_for(client.shutdown(), 10)
        assert response.code.is_successful() and b"</alert>" in response.payload
        lines = await asyncio.wait_for(summary_lines(env.bridge.runtime), 10)
        assert f"CoAP       coap://127.0.0.1:{port}" in lines, lines


async def test_mqtt_variables_reach_the_mqtt_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mosquitto_url: str
) -> None:
    group = "g" + secrets.token_hex(3)
    monkeypatch.setenv("SOSBRIDGE_MQTT_URL", mosquitto_url)
    monkeypatch.setenv("SOSBRIDGE_MQTT_CLIENT_ID", "sections-" + secrets.token_hex(4))
    monkeypatch.setenv("SOSBRIDGE_MQTT_SHARED_GROUP", group)
    monkeypatch.setenv("SOSBRIDGE_MQTT_Z2M_BASES", "house-a, house-b/")
    async with running_bridge(tmp_path) as env:
        mqtt = adapter(env, "mqtt")
        await mqtt.wait_ready(10)
        assert mqtt.options.z2m_bases == ("house-a", "house-b")
        assert any(f.startswith(f"$share/{group}/house-b/") for f in mqtt.conn.filters), mqtt.conn.filters
        lines = await asyncio.wait_for(summary_lines(env.bridge.runtime), 10)
        assert f"MQTT       {mosquitto_url}: connected" in lines, lines


async def test_serial_variable_reaches_the_serial_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "ttyNOTHERE"
    monkeypatch.setenv("SOSBRIDGE_SERIAL_PORTS", f"nmea={missing}?device=gps-1")
    async with running_bridge(tmp_path) as env:
        serial = adapter(env, "serial")
        assert list(serial.links) == [str(missing)]
        lines = await asyncio.wait_for(summary_lines(env.bridge.runtime), 10)
        assert f"           nmea {missing}: not present: waiting for it to appear" in lines, lines


async def test_the_file_reaches_the_adapter_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "sosbridge.toml"
    config.write_text(f'[sosbridge]\ndata_dir = "{tmp_path}"\nhttp_port = {free_port()}\n'
                      f"watch_port = {file_port}\nwatch_idle_s = 77\ndc09_port = {file_port}\n")
    monkeypatch.setenv("SOSBRIDGE_DC09_PORT", str(env_port))
    settings = load_settings(config, environ={"SOSBRIDGE_DC09_PORT": str(env_port)})
    async with EmbeddedBridge(settings) as bridge:
        started = {a.name: a for a in bridge.runtime.adapters if a.name in bridge.runtime.started_adapters}
        assert started["watch"].port == file_port and started["watch"].idle_s == 77
        assert started["dc09"].port == env_port
        await accepts_tcp(file_port)
        await accepts_tcp(env_port)


def test_a_copy_updates_a_section_by_its_key() -> None:
    settings = Settings(mqtt_url="mqtt://127.0.0.1:1", mqtt_client_id="one")
    copy = settings.model_copy(update={"mqtt_client_id": "two", "http_port": 9999})
    assert copy.section(MqttSettings).client_id == "two" and copy.section(MqttSettings).url == "mqtt://127.0.0.1:1"
    assert settings.section(MqttSettings).client_id == "one" and copy.http_port == 9999


def test_listeners_come_from_the_sections() -> None:
    settings = Settings(watch_port=7001, dc09_port=7002, coap_enabled=True, coap_port=7003)
    got = {(item.setting, item.port, item.protocol) for item in listeners(settings)}
    assert {("SOSBRIDGE_WATCH_PORT", 7001, "tcp"), ("SOSBRIDGE_DC09_PORT", 7002, "tcp"),
            ("SOSBRIDGE_DC09_PORT", 7002, "udp"), ("SOSBRIDGE_COAP_PORT", 7003, "udp")} <= got


def test_a_misspelt_transport_variable_is_named_with_the_closest() -> None:
    env = {"SOSBRIDGE_WATCH_PROT": "7001", "SOSBRIDGE_MQTT_Z2M_BASES": "a", "SOSBRIDGE_COAP_ENABLED": "true"}
    assert unknown_variables(env) == [("SOSBRIDGE_WATCH_PROT", "SOSBRIDGE_WATCH_PORT")]
