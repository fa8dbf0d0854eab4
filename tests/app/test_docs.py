"""The documentation: generated pages current, README a landing page, examples that paste and work."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import httpx
import pytest
from sosdocgen import generate, stale

from bridge.app.config import Settings, load_settings
from tests.support.bridges import running_bridge
from tests.support.paths import ROOT

DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", *DOCS.rglob("*.md")])
FENCE = re.compile(r"^(<!-- request: (?P<request>[^>]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)^```", re.M | re.S)


def blocks(lang: str) -> list[tuple[Path, str | None, str]]:
    found = []
    for page in PAGES:
        for m in FENCE.finditer(page.read_text()):
            if m["lang"] == lang:
                found.append((page, m["request"], m["body"]))
    return found


def test_generated_pages_are_current() -> None:
    assert stale(ROOT) == [], "run scripts/docgen and commit the result"


def test_every_setting_and_profile_is_documented() -> None:
    generated = generate()
    reference = generated["docs/reference/configuration.md"]
    for name in Settings.model_fields:
        assert f"`SOSBRIDGE_{name.upper()}`" in reference
    for profile in (ROOT / "hardware" / "profiles").glob("*.yaml"):
        assert f"docs/devices/{profile.stem}.md" in generated
        assert f"({profile.stem}.md)" in generated["docs/devices/list.md"]


def test_readme_is_a_landing_page_and_its_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 10 * 1024
    assert "scripts/demo" in readme and "scripts/test" in readme
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target


def test_no_reference_to_documents_that_do_not_exist() -> None:
    skip = ("tests/app/test_docs.py", "CHANGELOG.md")
    files = [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in (".py", ".md", ".yaml", ".toml", ".yml")]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", "site/", "build/")) or ".egg-info" in rel or rel.startswith(skip):
            continue
        text = path.read_text(errors="replace")
        assert "DESIGN.md" not in text, rel
        assert "docs/readme/" not in text, rel


def test_every_json_example_parses() -> None:
    examples = blocks("json")
    assert len(examples) > 10
    for page, _request, body in examples:
        try:
            json.loads(body)
        except json.JSONDecodeError:
            # Some blocks hold one JSON document per line (JSON Lines).
            for line in body.strip().splitlines():
                try:
                    json.loads(line)
                except json.JSONDecodeError as exc:
                    raise AssertionError(f"{page}: {exc}: {line}") from None


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    example = (ROOT / "sosbridge.example.toml").read_text()
    assert load_settings(ROOT / "sosbridge.example.toml", environ={}).http_port == 8080
    # Uncommenting every setting that has a default gives a valid file with the same values.
    settings_part = example.split("# -- Routes")[0]
    uncommented = "\n".join(
        line[2:] if re.match(r"^# [a-z_]+ = .+", line) else line for line in settings_part.splitlines()
    )
    path = tmp_path / "all.toml"
    path.write_text(uncommented)
    assert tomllib.loads(uncommented)["sosbridge"]["retention_days"] == 90
    settings = load_settings(path, environ={})
    assert settings.platform_format == "json" and settings.data_dir.endswith("sosbridge")
    assert settings.redis_url is None and settings.platform_url is None and settings.db.endswith("sosbridge.db")


def request_examples() -> list[tuple[str, str, str]]:
    """(page, route, body) for every example marked `<!-- request: METHOD /path -->`."""
    out = []
    for lang in ("json", "bash"):
        for page, request, body in blocks(lang):
            if request is None:
                continue
            if lang == "bash":
                words = shlex.split(body.replace("\\\n", " "))
                body = words[words.index("-d") + 1]
            out.append((page.relative_to(ROOT).as_posix(), request, body))
    return out


def test_there_are_request_examples() -> None:
    routes = {request for _page, request, _body in request_examples()}
    assert {"POST /v1/alerts", "POST /v1/alerts/{alert_id}/location", "POST /v1/alerts/{alert_id}/cancel"} <= routes


@pytest.mark.parametrize(("page", "request_line", "body"), request_examples())
async def test_request_examples_are_accepted(tmp_path: Path, page: str, request_line: str, body: str) -> None:
    """Pasted as they are, the documented bodies are accepted by a real bridge."""
    async with running_bridge(tmp_path) as env:
        token = await env.add_device("watch-42")
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=env.url, headers=auth) as client:
            method, path = request_line.split()
            if "{alert_id}" in path:
                opened = await client.post("/v1/alerts", json={"kind": "sos", "message_id": "setup"})
                path = path.replace("{alert_id}", opened.json()["alert_id"])
            r = await client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert 200 <= r.status_code < 300, (page, request_line, r.status_code, r.text)
