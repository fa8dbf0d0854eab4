"""Run a real Mosquitto on a free loopback port (tests, `sosbridge sim`, local development).

Optionally with a password file and an ACL (hardware/mosquitto/), and `persistence false`: sessions
still live in the broker's memory for as long as the process runs, which is what the tests need.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bridge.infra.serving import free_port


class MosquittoProcess:
    def __init__(self, passwords: dict[str, str] | None = None, acl_file: str | Path | None = None,
                 options: dict[str, str] | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise RuntimeError("mosquitto is not installed")
        self.binary = binary
        self.port = free_port()
        self.passwords = passwords
        self.acl_file = acl_file
        # Broker settings over the defaults below, e.g. {"max_inflight_messages": "0"} (no limit).
        self.options = {"max_queued_messages": "10000", "max_inflight_messages": "1000", **(options or {})}
        self.dir = Path(tempfile.mkdtemp(prefix="sosbridge-mosquitto-"))
        # Started as root, mosquitto drops to its own user, which must be able to read these files.
        self.dir.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false"]
        lines += [f"{key} {value}" for key, value in self.options.items()]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user, which cannot read files under a private (0700)
            # directory such as a clone in root's home; a throwaway loopback test broker may keep root.
            lines.append("user root")
        if self.passwords:
            pw = self.dir / "passwd"
            pw.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
            subprocess.run([shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-U", str(pw)], check=True)
            pw.chmod(0o644)  # hashed by now; readable by the unprivileged broker user
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            acl = self.dir / "acl"
            shutil.copyfile(self.acl_file, acl)
            acl.chmod(0o644)
            lines.append(f"acl_file {acl}")
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> MosquittoProcess:
        conf = self._write_config()
        self.log = (self.dir / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {(self.dir / 'mosquitto.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MosquittoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
