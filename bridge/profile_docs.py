"""Generated documentation: one Markdown page per device profile (hardware/profiles/*.yaml).

`python -m bridge.profile_docs [DIR]` (default docs/devices) writes `<profile id>.md` for every built-in
profile: what the device is, how it connects, what it can raise, how its frames map to kinds, and its
sample frames with their sources and expected results. tests/test_profile_docs.py fails when a committed
page is out of date, so a profile change comes with its page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bridge.profiles import BUILTIN_PROFILE_DIR, Condition, DeviceProfile, KindMapping, ProfileRegistry

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "docs" / "devices"


def _condition(conditions: list[Condition]) -> str:
    parts = []
    for c in conditions:
        if c.in_ is not None:
            parts.append(f"`{c.field}` in {', '.join(f'`{v}`' for v in c.in_)}")
        elif c.matches is not None:
            parts.append(f"`{c.field}` matches `{c.matches}`")
        elif c.exists is not None:
            parts.append(f"`{c.field}` {'present' if c.exists else 'absent'}")
        else:
            parts.append(f"`{c.field}` = `{c.equals}`")
    return " and ".join(parts).replace("|", "\\|")


def _outcome(mapping: KindMapping) -> str:
    if mapping.action == "alert":
        kind = mapping.kind.value if mapping.kind else f"from `{mapping.kind_from}`"
        return f"alert `{kind}`" + (" (silent)" if mapping.silent else "")
    return mapping.action


def render(profile: DeviceProfile, source: str = "") -> str:
    """The page of one profile. Pure."""
    lines = [f"# {profile.vendor}: {profile.model}", ""]
    if profile.description:
        lines += [profile.description.strip(), ""]
    match = ", ".join(f"`{k}: {v}`" for k, v in profile.match.items()) or "any frame"
    lines += [
        "| | |",
        "| --- | --- |",
        f"| Profile | `{profile.id}`{f' ({source})' if source else ''} |",
        f"| Transport | `{profile.transport}` |",
        f"| Decoder | `{profile.decoder}` |",
        f"| Frames | {match}{' (fallback for devices that name no profile)' if profile.fallback else ''} |",
        f"| Kinds it may raise | {', '.join(f'`{k.value}`' for k in profile.kinds)} |",
        f"| Acknowledgement | `{profile.ack}` |",
    ]
    if profile.white_labels:
        lines.append(f"| Also sold as | {', '.join(profile.white_labels)} |")
    if profile.check_in_interval_s:
        lines.append(f"| Check-in interval | {profile.check_in_interval_s} s |")
    lines.append("")
    if profile.mappings:
        lines += ["## Mappings", "", "| When | Then |", "| --- | --- |"]
        lines += [f"| {_condition(m.when)} | {_outcome(m)} |" for m in profile.mappings]
        lines.append("")
    if profile.ignore:
        lines += ["Not events: " + "; ".join(_condition(rule) for rule in profile.ignore) + ".", ""]
    if profile.location is not None:
        loc = profile.location
        accuracy = f"`{loc.accuracy}`" if loc.accuracy else f"{loc.default_accuracy_m} m (assumed)"
        lines += [f"Location: `{loc.lat}`, `{loc.lon}`, radius {accuracy}, source `{loc.source}`"
                  + (f" (or `{loc.source_from}`)" if loc.source_from else "")
                  + (", only when " + _condition(loc.valid_if) if loc.valid_if else "")
                  + ".", ""]
    if profile.samples:
        lines += ["## Samples", "", "Each runs as a test (`sosbridge profiles check`).", ""]
        for sample in profile.samples:
            expected = "refused" if sample.expect_error else (
                ", ".join(e.action + (f" {e.kind.value}" if e.kind else "") for e in sample.expect) or "not an event")
            lines += [f"- **{sample.name}**: {expected}. Source: {sample.source}"]
        lines.append("")
    return "\n".join(lines)


def write_all(directory: Path = DEFAULT_DIR, registry: ProfileRegistry | None = None) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for profile_id, text in pages(registry).items():
        path = directory / f"{profile_id}.md"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def pages(registry: ProfileRegistry | None = None) -> dict[str, str]:
    """The page of every built-in profile (plug-ins' and site profiles document themselves)."""
    registry = registry or ProfileRegistry.load(builtin_dir=BUILTIN_PROFILE_DIR)
    out = {}
    for profile_id in sorted(registry.profiles):
        origin = registry.origins.get(profile_id)
        if origin is None or origin.parent != BUILTIN_PROFILE_DIR:
            continue
        out[profile_id] = render(registry.profiles[profile_id], f"hardware/profiles/{origin.name}")
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    for written_path in write_all(target):
        print(written_path)
