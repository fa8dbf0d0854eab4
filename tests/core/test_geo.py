"""British National Grid references (EPSG:27700) on contacts: known points, squares, GB boundary, units.

Reference points (independent of our code):
* Edinburgh Castle: OS grid reference NT 251 734 (6-figure, as published in the Wikipedia infobox);
  WGS 84 55.948611, -3.200833 from the same infobox.
* Ben Nevis summit: OS grid NN 166 712 (Wikipedia/Infogalactic infobox "OS grid NN166712");
  WGS 84 56.796891, -5.003675.
* 100 km square origins from the OS "Guide to coordinate systems in Great Britain" lettering scheme:
  SV is the false origin (0, 0), NT starts at (300000, 600000), NN at (200000, 700000), TQ at (500000, 100000),
  HP at (400000, 1200000).
"""

from __future__ import annotations

import math

import pytest
from pyproj import Transformer

from bridge.core.geo import (
    _to_bng,
    enrich_location,
    grid_letters,
    grid_reference,
    in_great_britain,
    to_easting_northing,
)
from bridge.core.model import Location
from bridge.delivery.formats import render
from tests.support.formats_factory import BEN_NEVIS, EDINBURGH_CASTLE


def _parse(ref: str) -> tuple[str, int, int]:
    letters, e, n = ref.split()
    scale = 10 ** (5 - len(e))
    return letters, int(e) * scale, int(n) * scale


def _six_figure(ref: str) -> str:
    letters, e, n = ref.split()
    return f"{letters}{e[:3]}{n[:3]}"


@pytest.mark.parametrize(
    "point,published,brief",
    [(EDINBURGH_CASTLE, "NT251734", "NT 2514 7349"), (BEN_NEVIS, "NN166712", "NN 1666 7125")],
)
def test_known_points_match_published_os_references(point, published, brief) -> None:  # type: ignore[no-untyped-def]
    ref = grid_reference(*point)
    assert ref is not None
    assert _six_figure(ref) == published
    # The 8-figure figures are "area" references: within 100 m of ours.
    l1, e1, n1 = _parse(ref)
    l2, e2, n2 = _parse(brief)
    assert l1 == l2 and math.hypot(e1 - e2, n1 - n2) < 100


def test_round_trip_of_the_ben_nevis_trig_pillar() -> None:
    # Inverse with a separately built pyproj transformer, then forward through bridge.geo.
    inverse = Transformer.from_crs("EPSG:27700", "EPSG:4326", always_xy=True, allow_ballpark=False)
    lon, lat = inverse.transform(216683, 771269)
    assert grid_reference(lat, lon) in ("NN 16683 71269", "NN 16682 71268", "NN 16683 71268", "NN 16682 71269")


@pytest.mark.parametrize(
    "e,n,letters",
    [(0, 0, "SV"), (325000, 673000, "NT"), (216000, 771000, "NN"), (530000, 180000, "TQ"), (465000, 1213000, "HP")],
)
def test_square_letters(e: int, n: int, letters: str) -> None:
    assert grid_letters(e, n) == letters


def test_precision_digits() -> None:
    assert grid_reference(*EDINBURGH_CASTLE, digits=6) == "NT 251 734"
    assert grid_reference(*EDINBURGH_CASTLE, digits=8) == "NT 2510 7349"


@pytest.mark.parametrize(
    "name,lat,lon,inside",
    [
        ("Scilly", 49.91, -6.31, True),
        ("Shetland", 60.8, -0.85, True),
        ("Dover", 51.13, 1.31, True),
        ("Dungeness", 50.91, 0.98, True),
        ("Mull of Kintyre", 55.29, -5.8, True),
        ("Rhins of Galloway", 54.85, -5.12, True),
        ("St Kilda", 57.81, -8.57, True),
        ("Belfast", 54.6, -5.93, False),
        ("Dublin", 53.35, -6.26, False),
        ("Rathlin Island", 55.3, -6.2, False),
        ("Calais", 50.95, 1.85, False),
        ("Dieppe", 49.92, 1.08, False),
        ("Jersey", 49.21, -2.13, False),
        ("New York", 40.71, -74.0, False),
    ],
)
def test_great_britain_boundary(name: str, lat: float, lon: float, inside: bool) -> None:
    assert in_great_britain(lat, lon) is inside, name
    assert (grid_reference(lat, lon) is not None) is inside, name


def test_transform_is_never_the_ballpark_one() -> None:
    to_easting_northing(*BEN_NEVIS)
    desc = _to_bng().get_last_used_operation().description
    assert "Ballpark" not in desc and "OSGB" in desc


def test_enrich_location() -> None:
    loc = enrich_location(Location(lat=BEN_NEVIS[0], lon=BEN_NEVIS[1], accuracy_m=10))
    assert loc is not None and loc.grid_ref == grid_reference(*BEN_NEVIS)
    kept = enrich_location(Location(lat=BEN_NEVIS[0], lon=BEN_NEVIS[1], grid_ref="NN 1 1"))
    assert kept is not None and kept.grid_ref == "NN 1 1"
    abroad = enrich_location(Location(lat=53.35, lon=-6.26))
    assert abroad is not None and abroad.grid_ref is None
    assert enrich_location(Location(lat=None, lon=None)) is not None
    assert enrich_location(None) is None


def test_grid_reference_and_uncertainty_reach_every_format() -> None:
    import json
    import re

    from tests.support.formats_factory import contact, gnss

    c = contact(location=gnss(*BEN_NEVIS, accuracy_m=1234.5))
    ref = c.location.grid_ref  # type: ignore[union-attr]
    assert ref and ref.startswith("NN 166")
    js = json.loads(render(c, "json")[0])
    assert js["location"]["grid_ref"] == ref and js["location"]["accuracy_m"] == 1234.5
    cap = render(c, "cap")[0].decode()
    assert ref in cap and re.search(r"<circle>56\.796891,-5\.003675 1\.2345</circle>", cap)
    eido = json.loads(render(c, "eido")[0])
    assert ref in eido["locationComponent"][0]["locationDescriptionText"]
    assert ">1234.5</gs:radius>" in eido["locationComponent"][0]["locationByValue"]
    assert ">1234.5</gs:radius>" in render(c, "pidf")[0].decode()
