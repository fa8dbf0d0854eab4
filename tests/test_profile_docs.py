"""The generated device pages (docs/devices/, `python -m bridge.profile_docs`) match the profiles."""

from __future__ import annotations

from bridge.profile_docs import DEFAULT_DIR, pages


def test_committed_device_pages_are_up_to_date() -> None:
    expected = pages()
    assert expected, "no built-in profiles"
    stale = [pid for pid, text in expected.items()
             if not (DEFAULT_DIR / f"{pid}.md").exists() or (DEFAULT_DIR / f"{pid}.md").read_text() != text]
    assert not stale, f"regenerate with `python -m bridge.profile_docs`: {stale}"
    assert "| `code` = `HA` | alert `duress` (silent) |" in expected["dc09-alarm-panel"]
