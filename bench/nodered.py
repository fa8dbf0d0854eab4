"""Node-RED 4.1 as a contender: installed with npm into a temporary directory at bench time (never
committed), bound to 127.0.0.1 with telemetry and diagnostics off, and given one flow through the
admin API (`POST /flows`): mqtt in → json → function (sign like our webhook) → http request.

The function node signs the body with HMAC-SHA256 because the reference receiver refuses unsigned
contacts; `crypto` reaches it through `functionGlobalContext`, the documented way to expose a module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx

from bench.common import Proc, free_port, spawn, wait_http

VERSION_SPEC = "node-red@^4.1"

SETTINGS_JS = """module.exports = {
  uiHost: "127.0.0.1",
  uiPort: %(port)d,
  userDir: %(user_dir)s,
  flowFile: "flows.json",
  credentialSecret: false,
  diagnostics: { enabled: false, ui: false },
  telemetry: { enabled: false, updateNotification: false },
  externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
  logging: { console: { level: "warn", metrics: false, audit: false } },
  editorTheme: { projects: { enabled: false } },
  functionGlobalContext: { crypto: require("crypto") },
};
"""

SIGN_FUNCTION = """const body = JSON.stringify(msg.payload);
const crypto = global.get('crypto');
const sig = 'sha256=' + crypto.createHmac('sha256', env.get('BENCH_SECRET')).update(body).digest('hex');
msg.headers = { 'content-type': 'application/json', 'x-sosbridge-signature': sig };
msg.payload = body;
return msg;"""


def npm_available() -> str | None:
    if shutil.which("npm") is None or shutil.which("node") is None:
        return "npm/node not installed"
    return None


def install(workdir: Path, timeout_s: float = 180.0) -> tuple[Path, str]:
    """npm install into workdir/nodered with its cache in workdir too; returns (red.js, version)."""
    prefix = workdir / "nodered"
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [
        "npm", "install", VERSION_SPEC, "--prefix", str(prefix), "--cache", str(workdir / "npm-cache"),
        "--no-audit", "--no-fund", "--no-save", "--loglevel=error", "--omit=optional",
    ]
    env = {**os.environ, "HOME": str(workdir), "npm_config_update_notifier": "false"}
    subprocess.run(cmd, check=True, timeout=timeout_s, env=env, capture_output=True)
    pkg = prefix / "node_modules" / "node-red"
    version = json.loads((pkg / "package.json").read_text())["version"]
    return pkg / "red.js", version


def start(red_js: Path, workdir: Path, secret: str) -> tuple[Proc, str]:
    port = free_port()
    user_dir = workdir / "nodered-user"
    user_dir.mkdir(exist_ok=True)
    settings = workdir / "nodered-settings.js"
    settings.write_text(SETTINGS_JS % {"port": port, "user_dir": json.dumps(str(user_dir))})
    env = {**os.environ, "HOME": str(workdir), "BENCH_SECRET": secret, "NODE_RED_ENABLE_PROJECTS": "false"}
    proc = spawn("nodered", ["node", str(red_js), "--settings", str(settings)], workdir, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/settings", timeout=60, proc=proc.proc)
    return proc, url


def deploy(admin_url: str, broker_port: int, topic: str, receiver_url: str) -> None:
    flows = [
        {"id": "tab1", "type": "tab", "label": "bench"},
        {
            "id": "broker1", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1",
            "port": str(broker_port), "clientid": "bench-nodered", "autoConnect": True, "usetls": False,
            "protocolVersion": "4", "keepalive": "30", "cleansession": True, "autoUnsubscribe": True,
        },
        {
            "id": "in1", "type": "mqtt in", "z": "tab1", "name": "", "topic": topic, "qos": "1",
            "datatype": "utf8", "broker": "broker1", "nl": False, "rap": True, "rh": 0, "inputs": 0,
            "x": 100, "y": 100, "wires": [["json1"]],
        },
        {"id": "json1", "type": "json", "z": "tab1", "name": "", "property": "payload", "action": "obj",
         "pretty": False, "x": 250, "y": 100, "wires": [["fn1"]]},
        {"id": "fn1", "type": "function", "z": "tab1", "name": "sign", "func": SIGN_FUNCTION, "outputs": 1,
         "timeout": 0, "noerr": 0, "initialize": "", "finalize": "", "libs": [], "x": 400, "y": 100,
         "wires": [["http1"]]},
        {"id": "http1", "type": "http request", "z": "tab1", "name": "", "method": "POST", "ret": "txt",
         "paytoqs": "ignore", "url": receiver_url, "tls": "", "persist": True, "proxy": "", "insecureHTTPParser":
         False, "authType": "", "senderr": False, "headers": [], "x": 550, "y": 100, "wires": [[]]},
    ]
    r = httpx.post(f"{admin_url}/flows", json=flows, headers={"Node-RED-Deployment-Type": "full"}, timeout=30)
    r.raise_for_status()
