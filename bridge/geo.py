"""Location enrichment: British National Grid references (EPSG:27700) for coordinates in Great Britain."""

from __future__ import annotations

from functools import lru_cache

from pyproj import Transformer

from bridge.model import Location

# OSGB 100 km squares; the grid's false origin is 'SV'.
_LETTERS = "ABCDEFGHJKLMNOPQRSTUVWXYZ"  # no I

# A generous box around Great Britain (and its islands) in WGS84; grid references outside it are meaningless.
_GB_BOUNDS = (49.8, -8.9, 61.0, 2.0)


@lru_cache(maxsize=1)
def _to_bng() -> Transformer:
    return Transformer.from_crs("EPSG:4326", "EPSG:27700", always_xy=True)


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
    south, west, north, east = _GB_BOUNDS
    if not (south <= lat <= north and west <= lon <= east):
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
