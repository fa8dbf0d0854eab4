"""`sosbridge devices`: unknown profiles refused, check-in and gateway options, import and export."""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path

from bridge.store.sqlite import SqliteStore
from tests.app.test_cli_config import assert_one_line_error, run


def registry(tmp_path: Path) -> dict[str, object]:
    async def read() -> dict[str, object]:
        store = SqliteStore(tmp_path / "xdg" / "sosbridge" / "sosbridge.db")
        await store.open()
        try:
            devices = await store.list_devices()
            token_of_0 = await store.device_for_token("imported-token-000000")
            return {"devices": devices, "token0": token_of_0}
        finally:
            await store.close()

    return asyncio.run(read())


def test_add_refuses_an_unknown_profile_and_takes_supervision_options(tmp_path: Path) -> None:
    refused = run(tmp_path, "devices", "add", "w1", "--profile", "no-such-profile")
    assert_one_line_error(refused, "unknown profile 'no-such-profile'", "sosbridge-http-wearable")
    assert "w1" not in run(tmp_path, "devices", "list").stdout
    added = run(
        tmp_path,
        "devices",
        "add",
        "w1",
        "--profile",
        "sosbridge-http-wearable",
        "--check-in-interval",
        "3600",
        "--gateway",
        "hub-7",
    )
    assert added.returncode == 0, added.stderr
    exported = json.loads(run(tmp_path, "devices", "export").stdout)
    assert exported["check_in_interval_s"] == 3600 and exported["gateway_id"] == "hub-7"
    assert exported["profile_id"] == "sosbridge-http-wearable"


def write_jsonl(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            doc: dict[str, object] = {
                "device_id": f"care-{i:06d}",
                "tenant_id": "care-north",
                "profile_id": "sosbridge-http-wearable",
                "person": {"name": f"Person {i}", "language": "en-GB"},
                "identifiers": {"msisdn": f"+44770{i:07d}"},
                "check_in_interval_s": 86400,
            }
            if i % 2 == 0:
                doc["token"] = f"imported-token-{i:06d}"
            fh.write(json.dumps(doc) + "\n")


def test_import_10000_devices_in_seconds_idempotently(tmp_path: Path) -> None:
    source = tmp_path / "devices.jsonl"
    write_jsonl(source, 10_000)
    started = time.monotonic()
    first = run(tmp_path, "devices", "import", str(source))
    elapsed = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert "10000 devices created, 0 updated" in first.stderr
    assert elapsed < 30, f"import of 10,000 devices took {elapsed:.1f} s"
    tokens_file = tmp_path / "devices.jsonl.tokens.csv"
    generated = list(csv.DictReader(tokens_file.open()))
    assert len(generated) == 5000 and tokens_file.stat().st_mode & 0o077 == 0
    again = run(tmp_path, "devices", "import", str(source))
    # Rows with a token replace it (updated); the rest are registered exactly so already (not written again).
    assert again.returncode == 0 and "0 devices created, 5000 updated, 5000 unchanged" in again.stderr
    assert "had no token" not in again.stderr  # existing devices keep their tokens
    state = registry(tmp_path)
    assert len(state["devices"]) == 10_000  # type: ignore[arg-type]
    assert state["token0"].device_id == "care-000000"  # type: ignore[attr-defined]


def test_import_refuses_bad_rows_before_writing_anything(tmp_path: Path) -> None:
    source = tmp_path / "devices.jsonl"
    source.write_text('{"device_id": "a1"}\n{"device_id": "a2", "profile_id": "nope"}\n')
    assert_one_line_error(run(tmp_path, "devices", "import", str(source)), "devices.jsonl:2", "unknown profile 'nope'")
    source.write_text('{"device_id": "a1"}\n{"device_id": "bad id!"}\n')
    assert_one_line_error(run(tmp_path, "devices", "import", str(source)), "devices.jsonl:2", "device_id")
    source.write_text('{"device_id": "a1", "colour": "red"}\n')
    assert_one_line_error(run(tmp_path, "devices", "import", str(source)), "devices.jsonl:1", "colour")
    assert run(tmp_path, "devices", "export").stdout == ""


def test_csv_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "devices.csv"
    source.write_text(
        "device_id,tenant_id,profile_id,name,language,communication_needs,lat,lon,postcode,identifiers,"
        "sms_replies,audible_on_silent,token\n"
        'w1,care,sosbridge-mqtt-button,Ann,gd,"deaf: text only;uses a wheelchair",57.48,-4.22,IV1 1AA,'
        "msisdn=+447700900001;z2m=0x00124b0001,yes,true,csv-token-for-w1\n"
    )
    imported = run(tmp_path, "devices", "import", str(source))
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "export.csv"
    assert run(tmp_path, "devices", "export", str(out)).returncode == 0
    row = next(csv.DictReader(out.open()))
    assert row["identifiers"] == "msisdn=+447700900001;z2m=0x00124b0001"
    assert row["communication_needs"] == "deaf: text only;uses a wheelchair"
    assert (row["lat"], row["postcode"], row["token"]) == ("57.48", "IV1 1AA", "")
    assert (row["sms_replies"], row["audible_on_silent"]) == ("true", "true")
    # The export imports again unchanged (tokens are kept: the export has none).
    again = run(tmp_path, "devices", "import", str(out))
    assert again.returncode == 0 and "0 devices created, 0 updated, 1 unchanged" in again.stderr
    assert run(tmp_path, "devices", "export", "--format", "csv").stdout == out.read_text()
    # One field changed: that device is updated, and the change is stored.
    out.write_text(out.read_text().replace("deaf: text only", "deaf: BSL or text"))
    changed = run(tmp_path, "devices", "import", str(out))
    assert changed.returncode == 0 and "0 devices created, 1 updated, 0 unchanged" in changed.stderr
    assert "deaf: BSL or text" in run(tmp_path, "devices", "export").stdout


def test_csv_flag_that_is_not_yes_or_no_is_refused_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "devices.csv"
    source.write_text("device_id,audible_on_silent\nw1,sometimes\n")
    imported = run(tmp_path, "devices", "import", str(source))
    assert imported.returncode != 0
    assert "devices.csv:2: audible_on_silent: 'sometimes' is not true or false" in imported.stderr


def test_devices_add_audible_on_silent_is_kept(tmp_path: Path) -> None:
    added = run(tmp_path, "devices", "add", "w9", "--audible-on-silent", "--sms-replies")
    assert added.returncode == 0, added.stderr
    exported = json.loads(run(tmp_path, "devices", "export").stdout)
    assert exported["audible_on_silent"] is True and exported["sms_replies"] is True
