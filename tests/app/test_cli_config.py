"""A newcomer's configuration mistakes, run as they would be: `sosbridge` as a subprocess.

Every bad setting is one line on stderr naming the setting, exit code 2, no traceback; `--config FILE`
and SOSBRIDGE_CONFIG behave the same (routes and coap_enabled included); serve prints a start-up summary;
Ctrl-C ends it without a traceback; the default data location does not depend on the working directory.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from simulator.platform.receiver import EmbeddedReceiver
from tests.support.paths import ROOT
from tests.support.ports import free_port


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOSBRIDGE_") or k.startswith("SOSBRIDGE_TEST_")}
    env.update({"HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path / "xdg")})
    env.update(extra)
    return env


def run(tmp_path: Path, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge.app.cli", *args],
        env=clean_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd or ROOT,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    # `devices` commands first say which store they use; the error itself is one line.
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("store: ")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("SOSBRIDGE_HTTP_PORT", "eighty", "valid integer"),
        ("SOSBRIDGE_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("SOSBRIDGE_PLATFORM_URL", "platform.example/contacts", "http:// or https://"),
        ("SOSBRIDGE_FALLBACK_URL", "ftp://standby", "http:// or https://"),
        ("SOSBRIDGE_PUBLIC_URL", "sos.example.org", "http:// or https://"),
        ("SOSBRIDGE_REDIS_URL", "localhost:6379", "redis://"),
        ("SOSBRIDGE_MQTT_URL", "http://broker", "mqtt://"),
        ("SOSBRIDGE_MQTT_KEEPALIVE", "1", "greater than or equal to 2"),
        ("SOSBRIDGE_PLATFORM_FORMAT", "xml", "'json', 'cap' or 'eido'"),
        ("SOSBRIDGE_LOG_LEVEL", "LOUD", "DEBUG"),
        ("SOSBRIDGE_SERIAL_PORTS", "/dev/ttyUSB0", "protocol=path"),
        ("SOSBRIDGE_COAP_ENABLED", "perhaps", "valid boolean"),
        ("SOSBRIDGE_WATCH_PORT", "tcp", "valid integer"),
        ("SOSBRIDGE_DC09_PORT", "70000", "less than or equal to 65535"),
        ("SOSBRIDGE_WATCH_ALLOW", "10.0.0.0/33", "10.0.0.0/33"),
        ("SOSBRIDGE_DC09_PLAIN_ALLOW", "10.0.0.0/33", "10.0.0.0/33"),
        ("SOSBRIDGE_RETRY_BASE_S", "-1", "greater than 0"),
        ("SOSBRIDGE_ROUTES", "{not json", "not JSON"),
        ("SOSBRIDGE_PROFILE_DIRS", "/nonexistent-profiles", "no such directory"),
        ("SOSBRIDGE_CONFIG", "missing.toml", "no such file"),
    ],
)
def test_each_bad_setting_is_one_line_naming_it(tmp_path: Path, variable: str, value: str, says: str) -> None:
    result = run(tmp_path, "serve", **{variable: value})
    assert_one_line_error(result, variable, says)


def test_secrets_are_not_echoed_in_errors(tmp_path: Path) -> None:
    result = run(tmp_path, "serve", SOSBRIDGE_PLATFORM_SECRET="", SOSBRIDGE_PLATFORM_URL="nope")
    assert_one_line_error(result, "SOSBRIDGE_PLATFORM_SECRET", "SOSBRIDGE_PLATFORM_URL")


def test_unknown_and_bad_keys_in_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "sosbridge.toml"
    cfg.write_text("http_port = 8081\ncoap_enabeld = false\n")
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "unknown key 'coap_enabeld'", "coap_enabled")
    cfg.write_text("[sosbridge]\nhttp_port = 'x'\n")
    assert_one_line_error(run(tmp_path, "devices", "list", "--config", str(cfg)), "SOSBRIDGE_HTTP_PORT", "http_port in")
    cfg.write_text("[sosbridge]\nwatch_port = 'x'\n")  # a transport's own key (its settings class)
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "SOSBRIDGE_WATCH_PORT", "watch_port in")
    cfg.write_text("[sosbridge]\nmqtt_ulr = 'mqtt://x'\n")
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "unknown key 'mqtt_ulr'", "'mqtt_url'")
    cfg.write_text("[sosbridge]\nhttp_port = 8081\n[mqtt]\nurl = 'mqtt://x'\n")
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "'mqtt'")
    cfg.write_text("http_port = \n")
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "not valid TOML")
    cfg.write_text('[[routes]]\nname = "north"\nurl = "contact.example/sos"\nsecret = "k"\n')
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "[[routes]]", "north", "url")
    cfg.write_text('[[routes]]\nname = "north"\nurl = "https://contact.example/sos"\nsecret_env = "NORTH_KEY"\n')
    assert_one_line_error(run(tmp_path, "serve", "--config", str(cfg)), "NORTH_KEY is not set")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(run(tmp_path, "serve", "--port", str(port)), "SOSBRIDGE_HTTP_PORT", "in use")
        assert_one_line_error(run(tmp_path, "receiver", "--port", str(port), "--secret", "0123456789abcdef0123"),
                              "--port", "in use")


def test_unreachable_redis_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    result = run(tmp_path, "serve", "--port", str(free_port()), SOSBRIDGE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert_one_line_error(result, "SOSBRIDGE_REDIS_URL", "cannot open the store")


def start_serve(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], str]:
    """`sosbridge serve` until its start-up summary is complete; returns the process and the summary."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.app.cli", "serve", *args],
        env=clean_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.strip().startswith("logs "):
            break
    summary = "".join(lines)
    if "logs " not in summary:
        proc.kill()
        raise AssertionError(f"no start-up summary: {summary!r} {proc.stderr.read() if proc.stderr else ''}")
    return proc, summary


def stop_with_ctrl_c(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return err


async def test_config_routes_and_coap_are_honoured_both_ways(tmp_path: Path) -> None:
    """The same file through --config and SOSBRIDGE_CONFIG: its route receives the contact, CoAP stays off."""
    secret = secrets.token_hex(8)
    async with EmbeddedReceiver(secret, auto_ack_s=None) as rx:
        cfg = tmp_path / "sosbridge.toml"
        cfg.write_text(
            "[sosbridge]\n"
            f'data_dir = "{tmp_path / "data"}"\n'
            "coap_enabled = false\n"
            'admin_token = "admin-token-for-the-test"\n'
            "retry_base_s = 0.1\n"
            "[[routes]]\n"
            'name = "north"\n'
            f'url = "{rx.url}"\n'
            'secret_env = "NORTH_SECRET"\n'
        )
        for how, (args, env) in {
            "--config": ((f"--config={cfg}",), {}),
            "SOSBRIDGE_CONFIG": ((), {"SOSBRIDGE_CONFIG": str(cfg)}),
        }.items():
            port = free_port()
            proc, summary = start_serve(tmp_path, "--port", str(port), *args, NORTH_SECRET=secret, **env)
            try:
                assert f"http://127.0.0.1:{port}" in summary, summary
                assert "CoAP       off" in summary, (how, summary)
                assert f"route      north: {rx.url} (json)" in summary, (how, summary)
                assert "SOSBRIDGE_ADMIN_TOKEN" not in summary and "SOSBRIDGE_PLATFORM_TOKEN" in summary
                assert f"sqlite {tmp_path / 'data' / 'sosbridge.db'}" in summary
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    admin = {"Authorization": "Bearer admin-token-for-the-test"}
                    r = await client.post("/v1/devices", json={"device_id": f"w-{how[-6:]}"}, headers=admin)
                    assert r.status_code == 201, r.text
                    auth = {"Authorization": f"Bearer {r.json()['token']}"}
                    r = await client.post("/v1/alerts", json={"kind": "panic", "message_id": how}, headers=auth)
                    assert r.status_code == 202, r.text
                    alert_id = r.json()["alert_id"]
                await rx.first(lambda c, a=alert_id: c["alert_id"] == a, timeout=20)  # type: ignore[misc]
            finally:
                err = stop_with_ctrl_c(proc)
            assert "Traceback" not in err, err
            assert proc.returncode in (0, 1, 130), proc.returncode


def test_serve_defaults_coap_on_and_lists_unset_credentials(tmp_path: Path) -> None:
    port = free_port()
    proc, summary = start_serve(
        tmp_path, "--port", str(port), SOSBRIDGE_COAP_PORT=str(free_port()), SOSBRIDGE_MQTT_URL="mqtt://127.0.0.1:1"
    )
    try:
        assert "CoAP       coap://127.0.0.1:" in summary
        assert "MQTT       mqtt://127.0.0.1:1: NOT connected" in summary
        assert "route      NONE" in summary
        for name in ("SOSBRIDGE_ADMIN_TOKEN", "SOSBRIDGE_PLATFORM_SECRET", "SOSBRIDGE_PLATFORM_TOKEN"):
            assert f"unset      {name}" in summary
        assert f"store      sqlite {tmp_path / 'xdg' / 'sosbridge' / 'sosbridge.db'}" in summary
    finally:
        err = stop_with_ctrl_c(proc)
    assert "Traceback" not in err


def test_default_store_is_the_same_from_any_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    added = run(tmp_path, "devices", "add", "watch-1")
    assert added.returncode == 0, added.stderr
    listed = run(tmp_path, "devices", "list", cwd=elsewhere)
    assert "watch-1" in listed.stdout
    db = tmp_path / "xdg" / "sosbridge" / "sosbridge.db"
    assert f"store: sqlite {db}" in added.stderr and f"store: sqlite {db}" in listed.stderr


def test_ctrl_c_during_the_demo_prints_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.app.cli", "demo"],
        env=clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # the demo has started printing: its servers are up
    time.sleep(1.0)
    err = stop_with_ctrl_c(proc)
    assert "Traceback" not in err, err
    assert proc.returncode != 0


def test_summary_says_the_broker_is_connected_and_lists_serial_ports(tmp_path: Path, mosquitto_url: str) -> None:
    port = free_port()
    proc, summary = start_serve(
        tmp_path,
        "--port",
        str(port),
        SOSBRIDGE_MQTT_URL=mosquitto_url,
        SOSBRIDGE_MQTT_CLIENT_ID=f"summary-{port}",
        SOSBRIDGE_COAP_ENABLED="false",
        SOSBRIDGE_SERIAL_PORTS="nmea=/dev/null-no-such-port?device=gps-1",
    )
    try:
        assert f"MQTT       {mosquitto_url}: connected" in summary, summary
        assert "serial     nmea=/dev/null-no-such-port?device=gps-1" in summary, summary
        assert "nmea /dev/null-no-such-port: not present: waiting for it to appear" in summary
        assert "CoAP       off" in summary
    finally:
        err = stop_with_ctrl_c(proc)
    assert "Traceback" not in err


def test_an_unusable_store_is_one_line_for_devices_commands(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    result = run(tmp_path, "devices", "list", SOSBRIDGE_DB=str(blocker / "sosbridge.db"))
    assert_one_line_error(result, "SOSBRIDGE_DB", "cannot open the store")
    port = free_port()
    result = run(tmp_path, "devices", "add", "w1", SOSBRIDGE_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    assert_one_line_error(result, "SOSBRIDGE_REDIS_URL", "cannot open the store")


def test_the_embedded_broker_url_reaches_the_mqtt_settings(tmp_path: Path) -> None:
    """`serve --embedded-broker` fills the key its entry point names (mqtt_url) in the MQTT settings class."""
    port, broker_port = free_port(), free_port()
    proc, summary = start_serve(tmp_path, "--port", str(port), "--embedded-broker", "--broker-port", str(broker_port),
                                SOSBRIDGE_DEFAULT_STATUS="exercise", SOSBRIDGE_COAP_ENABLED="false")
    try:
        assert f"MQTT       mqtt://127.0.0.1:{broker_port}?version=3.1.1: connected" in summary, summary
    finally:
        err = stop_with_ctrl_c(proc)
    assert "Traceback" not in err
