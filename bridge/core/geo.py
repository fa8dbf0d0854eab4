"""Location enrichment: British National Grid references (EPSG:27700) for coordinates in Great Britain.

pyproj (~14 MB resident) is imported with the first grid reference, not when the bridge starts.
Docs: docs/platform/standards.md ("Location enrichment").
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from bridge.core.model import Location

if TYPE_CHECKING:
    from pyproj import Transformer

# OSGB 100 km squares; the grid's false origin is 'SV'.
_LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # no I

# A generous box around Great Britain (and its islands) in WGS84; grid references outside it are meaningless.
_GB_BOUNDS = (49.8, -8.9, 61.0, 2.0)

# The box also holds the island of Ireland (which uses the Irish Grid) and the French coast from Dieppe to
# Calais. West of these longitudes, in these latitude bands, is Ireland; they pass between the Irish coast
# and the westernmost British land of the same latitudes (the Smalls, the Rhins of Galloway, Kintyre).
_IRELAND_EAST_EDGE = ((51.2, 54.0, -5.8), (54.0, 55.1, -5.35), (55.1, 55.45, -5.95))


def in_great_britain(lat: float, lon: float) -> bool:
    """Coarse test for Great Britain and its islands (incl. Scilly, Hebrides, Orkney, Shetland)."""
    south, west, north, east = _GB_BOUNDS
    if not (south <= lat <= north and west <= lon <= east):
        return False
    for lo, hi, edge in _IRELAND_EAST_EDGE:
        if lo <= lat < hi and lon < edge:
            return False
    # France lies south-east of the line Le Treport-ish (49.8 N, 0.2 E) to Calais-ish (51.1 N, 1.7 E);
    # Dungeness and Dover lie north-west of it.
    return not (lat < 51.1 and lon > 0.2 + (lat - 49.8) * 1.5 / 1.3)


@lru_cache(maxsize=1)
def _to_bng() -> Transformer:
    from pyproj import Transformer

    # Never fall back to PROJ's "ballpark" offset (~100 m wrong). Without the OSTN15 grid, PROJ uses the
    # 2 m Helmert (EPSG "OSGB36 to WGS 84 (6)"); with the grid installed it uses OSTN15 (cm level).
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True, allow_ballpark=False)


def to_easting_northing(lat: float, lon: float) -> tuple[float, float]:
    e, n = _to_bng().transform(lon, lat)
    return float(e), float(n)


def grid_letters(easting: float, northing: float) -> str:
    e100k, n100k = int(easting // 100000), int(northing // 100000)
    if not (0 <= e100k <= 6 and 0 <= n100k <= 12):
        raise ValueError("outside the National Grid")
    l1 = (19 - n100k) - (19 - n100k) % 5 + (e100k + 10) // 5
    l2 = (19 - n100k) * 5 % 25 + e100k % 5
    return _LETTERS[l1] + _LETTERS[l2]


def grid_reference(lat: float, lon: float, digits: int = 10) -> str | None:
    """e.g. 'NT 25150 73350' for Edinburgh Castle; None outside Great Britain."""
    if not in_great_britain(lat, lon):
        return None
    e, n = to_easting_northing(lat, lon)
    try:
        letters = grid_letters(e, n)
    except ValueError:
        return None
    half = digits // 2
    scale = 10 ** (5 - half)
    ee = int(e % 100000) // scale
    nn = int(n % 100000) // scale
    return f"{letters} {ee:0{half}d} {nn:0{half}d}"


def enrich_location(loc: Location | None) -> Location | None:
    if loc is None or not loc.has_coordinates or loc.grid_ref:
        return loc
    assert loc.lat is not None and loc.lon is not None
    ref = grid_reference(loc.lat, loc.lon)
    return loc.model_copy(update={"grid_ref": ref}) if ref else loc
