"""Routing rules: tenant, area (bbox or BNG 100 km squares), kind, minimum severity and status; the default
route from Settings; TOML and environment loading with per-route credentials and fallback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.app.config import Settings
from bridge.core.model import AlertKind, Severity
from bridge.delivery.routing import (
    BBox,
    Route,
    RoutingError,
    default_route,
    load_routes,
    parse_routes,
    routes_from_toml,
    select_routes,
)
from tests.support.formats_factory import BEN_NEVIS, EDINBURGH_CASTLE, contact, gnss, no_location_contact

LOTHIAN = Route(name="lothian", url="https://lothian.example/sos", secret="s1", format="cap", grid_squares=("NT",))
HIGHLAND = Route(
    name="highland",
    url="https://highland.example/sos",
    secret="s2",
    format="eido",
    bbox=BBox.model_validate([56.0, -8.0, 59.0, -3.5]),
)
DURESS = Route(name="duress", url="https://duress.example/", secret="s3", kinds=(AlertKind.duress, AlertKind.panic))
CRITICAL = Route(name="critical", url="https://crit.example/", secret="s4", min_severity=Severity.extreme)
CARE = Route(name="care", url="https://care.example/", secret="s5", tenants=("care-south",))
DRILLS = Route(name="drills", url="https://train.example/", secret="s6", statuses=("exercise", "test"))
DEFAULT = Route(name="default", url="https://platform.example/", secret="d")
ALL = [LOTHIAN, HIGHLAND, DURESS, CRITICAL, CARE, DRILLS]


def names(routes: list[Route]) -> list[str]:
    return [r.name for r in routes]


def test_area_by_grid_square_and_bbox() -> None:
    edinburgh = contact(kind=AlertKind.fall, location=gnss(*EDINBURGH_CASTLE))
    nevis = contact(kind=AlertKind.fall, location=gnss(*BEN_NEVIS))
    assert names(select_routes(edinburgh, ALL, DEFAULT)) == ["lothian"]
    assert names(select_routes(nevis, ALL, DEFAULT)) == ["highland"]


def test_grid_square_is_computed_when_contact_lacks_it() -> None:
    c = contact(kind=AlertKind.fall, location=gnss(*EDINBURGH_CASTLE))
    bare = c.model_copy(update={"location": c.location.model_copy(update={"grid_ref": None})})  # type: ignore[union-attr]
    assert names(select_routes(bare, [LOTHIAN])) == ["lothian"]


def test_several_routes_match_in_configuration_order() -> None:
    c = contact(kind=AlertKind.panic, location=gnss(*EDINBURGH_CASTLE))
    assert names(select_routes(c, ALL, DEFAULT)) == ["lothian", "duress"]


def test_min_severity_tenant_and_status() -> None:
    extreme = contact(kind=AlertKind.fire, severity=Severity.extreme, location=gnss(51.5, -0.12))
    assert names(select_routes(extreme, ALL, DEFAULT)) == ["critical"]
    south = contact(kind=AlertKind.fire, tenant="care-south", location=gnss(51.5, -0.12))
    assert names(select_routes(south, ALL, DEFAULT)) == ["care"]
    drill = contact(kind=AlertKind.fire, status="exercise", location=gnss(51.5, -0.12))
    assert names(select_routes(drill, ALL, DEFAULT)) == ["drills"]


def test_default_when_nothing_matches_and_none_without_default() -> None:
    london_fall = contact(kind=AlertKind.fall, location=gnss(51.5, -0.12))
    assert names(select_routes(london_fall, ALL, DEFAULT)) == ["default"]
    assert select_routes(london_fall, ALL, None) == []


def test_area_routes_skip_contacts_without_coordinates() -> None:
    c = no_location_contact().model_copy(update={"kind": AlertKind.fall})
    assert names(select_routes(c, [LOTHIAN, HIGHLAND], DEFAULT)) == ["default"]


def test_follow_ups_stick_to_the_routes_of_the_alert() -> None:
    # The person walked from Edinburgh to Ben Nevis: the cancel still goes to Lothian, which saw the alert.
    cancel = contact(msg_type="cancel", seq=2, kind=AlertKind.fall, location=gnss(*BEN_NEVIS))
    assert names(select_routes(cancel, ALL, DEFAULT, previous=["lothian"])) == ["lothian", "highland"]
    assert names(select_routes(cancel, ALL, DEFAULT, previous=["default"])) == ["highland", "default"]


def test_bbox_crossing_the_antimeridian() -> None:
    box = BBox(south=-50, west=170, north=-30, east=-170)
    assert box.contains(-40, 175) and box.contains(-40, -175) and not box.contains(-40, 0)
    with pytest.raises(ValueError):
        BBox.model_validate([10, 0, 5, 1])


TOML = """
[[routes]]
name = "scotland"
url = "https://contact.scotland.example/sos"
secret_env = "SCOT_SECRET"
format = "cap"
fallback_url = "https://standby.scotland.example/sos"
grid_squares = ["nt", "NN"]
min_severity = "severe"

[[routes]]
name = "duress"
url = "https://duress.example/sos"
secret = "plain"
format = "eido"
kinds = ["duress"]
tenants = ["care-north"]
bbox = [49.8, -8.9, 61.0, 2.0]
"""


def test_toml_routes_with_secret_from_environment() -> None:
    routes = routes_from_toml(TOML, {"SCOT_SECRET": "from-env"})
    scot, duress = routes
    assert scot.secret == "from-env" and scot.format == "cap" and scot.grid_squares == ("NT", "NN")
    assert scot.fallback_url == "https://standby.scotland.example/sos"
    assert duress.kinds == (AlertKind.duress,) and duress.bbox == BBox(south=49.8, west=-8.9, north=61.0, east=2.0)
    assert "from-env" not in repr(scot)  # secrets stay out of logs
    nested = routes_from_toml(
        "[sosbridge]\n" + TOML.replace("[[routes]]", "[[sosbridge.routes]]"), {"SCOT_SECRET": "x"}
    )
    assert names(nested) == ["scotland", "duress"]


@pytest.mark.parametrize(
    "text,env,message",
    [
        (TOML, {}, r"route #1 \(scotland\): environment variable SCOT_SECRET is not set"),
        ('[[routes]]\nname="a"\nurl="ftp://x"\nsecret="s"', {}, "http"),
        ('[[routes]]\nname="a"\nurl="https://x"\nsecret="s"\ngrid_squares=["ZZ"]', {}, "100 km"),
        ('[[routes]]\nname="a"\nurl="https://x"\nsecret="s"\nformat="xml"', {}, "format"),
        (
            '[[routes]]\nname="a"\nurl="https://x"\nsecret="s"\n[[routes]]\nname="a"\nurl="https://y"\nsecret="t"',
            {},
            "duplicate",
        ),
        ('[[routes]]\nname="a"\nurl="https://x"\nsecret="s"\nsecret_env="E"', {"E": "1"}, "not both"),
        ("routes = 3", {}, "array"),
        ("[[routes]\n", {}, "TOML"),
    ],
)
def test_bad_route_configuration_is_refused(text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        routes_from_toml(text, env)


def test_default_route_from_settings() -> None:
    settings = Settings(
        platform_url="https://platform.example/contacts",
        platform_secret="sekrit-0123456789abcdef",
        platform_format="eido",
        fallback_url="https://fallback.example/contacts",
    )
    route = default_route(settings)
    assert route is not None
    assert (route.name, route.url, route.secret, route.format, route.fallback_url) == (
        "default",
        "https://platform.example/contacts",
        "sekrit-0123456789abcdef",
        "eido",
        "https://fallback.example/contacts",
    )
    assert default_route(Settings(platform_url=None)) is None


def test_load_routes_from_file_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "sosbridge.toml"
    cfg.write_text(TOML, encoding="utf-8")
    extra = [{"name": "north", "url": "https://north.example/", "secret": "n", "grid_squares": ["HP"]}]
    env = {"SCOT_SECRET": "k", "SOSBRIDGE_ROUTES": json.dumps(extra)}
    table = load_routes(Settings(platform_url="https://platform.example/"), cfg, env)
    assert names(list(table.routes)) == ["scotland", "duress", "north"]
    assert table.default is not None and table.default.url == "https://platform.example/"
    assert names(table.all_routes()) == ["scotland", "duress", "north", "default"]
    c = contact(kind=AlertKind.fall, location=gnss(*EDINBURGH_CASTLE))
    assert names(table.select(c)) == ["scotland"]
    # SOSBRIDGE_CONFIG is honoured when no file is passed, and a configured "default" replaces Settings'.
    cfg.write_text(TOML + '\n[[routes]]\nname = "default"\nurl = "https://own-default.example/"\nsecret = "z"\n')
    table = load_routes(
        Settings(platform_url="https://platform.example/"), None, {"SOSBRIDGE_CONFIG": str(cfg), "SCOT_SECRET": "k"}
    )
    assert table.default is not None and table.default.url == "https://own-default.example/"
    assert table.get("default") == table.default
    with pytest.raises(RoutingError):
        load_routes(Settings(), None, {"SOSBRIDGE_ROUTES": "{not json"})


def test_parse_routes_rejects_unknown_keys() -> None:
    with pytest.raises(RoutingError):
        parse_routes([{"name": "a", "url": "https://x/", "secret": "s", "colour": "red"}], {})
