"""Routing rules: which platform endpoints receive a contact, and in which format.

Pure: no I/O except reading the TOML file in `load_routes`. A route matches a contact when every
condition it sets holds (tenant ids, kinds, minimum severity, statuses, area); an unset condition matches
anything. Every matching route receives the contact; when none matches, the default route built from
SOSBRIDGE_PLATFORM_URL / _SECRET / _FORMAT / SOSBRIDGE_FALLBACK_URL does.

    [[routes]]
    name = "scotland-police"
    url = "https://contact.example.police.uk/sos"
    secret_env = "SCOTLAND_SECRET"       # or secret = "..." (keep secrets out of files where you can)
    format = "cap"
    fallback_url = "https://standby.example.police.uk/sos"
    tenants = ["care-north"]
    kinds = ["panic", "duress", "sos"]
    min_severity = "severe"
    grid_squares = ["NT", "NN", "NS"]    # British National Grid 100 km squares
    bbox = [54.6, -8.7, 60.9, -0.7]      # south, west, north, east (WGS 84), either or both

    [[routes]]                           # RFC 8876: each contact as a SIP MESSAGE (no secret: use sips:)
    name = "ng112"
    url = "sip:sos@127.0.0.1:5070;transport=tcp"   # or "urn:service:sos" with sip_outbound_proxy

    [[routes]]                           # NENA-STA-024: the bridge listens, police CADs subscribe (mutual TLS)
    name = "cad"
    url = "wss://0.0.0.0:9443/eido"
    eido_cert_file = "server.pem"
    eido_key_file = "server.key"
    eido_client_ca_file = "cad-ca.pem"
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bridge.core.contact import Contact
from bridge.core.geo import grid_reference
from bridge.core.model import AlertKind, ContactStatus, Severity
from bridge.delivery.sip.uri import SipUriError, check_target, is_sip_target, parse_hop

RouteFormat = Literal["json", "cap", "eido", "pidf"]
DEFAULT_ROUTE = "default"
_SQUARE = re.compile(r"^[HJNOST][A-HJ-Z]$")


class RoutingError(ValueError):
    """The routing configuration is unusable; raised at start-up, never while routing a contact."""


class BBox(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    south: float = Field(ge=-90, le=90)
    west: float = Field(ge=-180, le=180)
    north: float = Field(ge=-90, le=90)
    east: float = Field(ge=-180, le=180)

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            if len(value) != 4:
                raise ValueError("bbox is [south, west, north, east]")
            return dict(zip(("south", "west", "north", "east"), value, strict=True))
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BBox:
        if self.south > self.north:
            raise ValueError("bbox south is north of its north edge")
        return self

    def contains(self, lat: float, lon: float) -> bool:
        if not self.south <= lat <= self.north:
            return False
        if self.west <= self.east:
            return self.west <= lon <= self.east
        return lon >= self.west or lon <= self.east  # the box crosses the antimeridian


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    secret: str | None = Field(default=None, min_length=1, repr=False)
    format: RouteFormat = "json"
    fallback_url: str | None = None
    timeout_s: float | None = Field(default=None, gt=0)
    tenants: tuple[str, ...] = ()
    kinds: tuple[AlertKind, ...] = ()
    min_severity: Severity | None = None
    statuses: tuple[ContactStatus, ...] = ()
    bbox: BBox | None = None
    grid_squares: tuple[str, ...] = ()
    # SIP routes (url sip:, sips: or urn:service:...); see docs/platform/sip-message.md.
    sip_from: str | None = None
    sip_outbound_proxy: str | None = None
    sip_ca_file: str | None = None
    geolocation_routing: bool = True
    # EIDO notifier routes (url wss://host:port/path, where the bridge listens); docs/platform/eido-websocket.md.
    eido_cert_file: str | None = None
    eido_key_file: str | None = None
    eido_client_ca_file: str | None = None

    @field_validator("url", "fallback_url")
    @classmethod
    def _target(cls, value: str | None) -> str | None:
        if value is None or re.match(r"^(https?|wss)://[^\s/]+", value):
            return value
        if is_sip_target(value):
            try:
                check_target(value)
            except SipUriError as exc:
                raise ValueError(str(exc)) from exc
            return value
        raise ValueError("must be an http(s) URL, a sip:/sips: URI, a urn:service: URN or a wss:// URL")

    @field_validator("sip_from", "sip_outbound_proxy")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_hop(value)
            except SipUriError as exc:
                raise ValueError(str(exc)) from exc
        return value

    @model_validator(mode="after")
    def _needs(self) -> Route:
        if self.needs_secret and self.secret is None:
            raise ValueError("secret is required for an http(s) url or fallback_url")
        if self.url.startswith("wss://"):
            missing = [f for f in ("eido_cert_file", "eido_key_file", "eido_client_ca_file") if not getattr(self, f)]
            if missing:
                raise ValueError(f"a wss:// (EIDO notifier) url needs {', '.join(missing)}")
            absent = [f for f in ("eido_cert_file", "eido_key_file", "eido_client_ca_file")
                      if not Path(getattr(self, f)).is_file()]
            if absent:
                raise ValueError(f"{', '.join(absent)}: no such file")
        if self.url.lower().startswith("urn:") and not self.sip_outbound_proxy:
            raise ValueError("a urn:service: url needs sip_outbound_proxy (the bridge has no LoST client)")
        return self

    @field_validator("grid_squares", mode="before")
    @classmethod
    def _squares(cls, value: Any) -> Any:
        squares = tuple(str(v).strip().upper() for v in (value or ()))
        bad = [s for s in squares if not _SQUARE.match(s)]
        if bad:
            raise ValueError(f"not British National Grid 100 km squares: {bad}")
        return squares

    @property
    def needs_secret(self) -> bool:
        """True when the route posts webhooks (url or fallback_url http(s)), which are signed."""
        return any(u and u.startswith("http") for u in (self.url, self.fallback_url))

    @property
    def has_area(self) -> bool:
        return self.bbox is not None or bool(self.grid_squares)

    def matches(self, contact: Contact) -> bool:
        if self.tenants and contact.tenant_id not in self.tenants:
            return False
        if self.kinds and contact.kind not in self.kinds:
            return False
        if self.min_severity is not None and contact.severity.rank < self.min_severity.rank:
            return False
        if self.statuses and contact.status not in self.statuses:
            return False
        return not self.has_area or self._in_area(contact)

    def _in_area(self, contact: Contact) -> bool:
        loc = contact.location
        # Without coordinates there is no way to tell the area; the default route takes such contacts.
        if loc is None or loc.lat is None or loc.lon is None:
            return False
        if self.bbox is not None and self.bbox.contains(loc.lat, loc.lon):
            return True
        if self.grid_squares:
            ref = loc.grid_ref or grid_reference(loc.lat, loc.lon)
            if ref and ref[:2] in self.grid_squares:
                return True
        return False


def select_routes(
    contact: Contact,
    routes: Iterable[Route],
    default: Route | None = None,
    previous: Iterable[str] = (),
) -> list[Route]:
    """Every route that matches, in configuration order; the default route when none does.

    `previous` names the routes an earlier contact of the same alert went to: they always get the
    follow-ups too, so a platform that saw the alert also sees its update or cancel even after the
    person has walked out of its area.
    """
    routes = list(routes)
    sticky = set(previous)
    chosen = [r for r in routes if r.name in sticky or r.matches(contact)]
    if default is not None and (not chosen or default.name in sticky):
        if all(r.name != default.name for r in chosen):
            chosen.append(default)
    return chosen


def default_route(settings: Any) -> Route | None:
    """The route from SOSBRIDGE_PLATFORM_URL/SECRET/FORMAT and SOSBRIDGE_FALLBACK_URL, if a URL is set."""
    url = getattr(settings, "platform_url", None)
    if not url:
        return None
    return Route(
        name=DEFAULT_ROUTE,
        url=url,
        secret=settings.platform_secret,
        format=settings.platform_format,
        fallback_url=getattr(settings, "fallback_url", None),
        timeout_s=getattr(settings, "platform_timeout_s", None),
    )


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "route"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{field}: {msg}")
    return "; ".join(parts)


def parse_routes(entries: Iterable[Mapping[str, Any]], environ: Mapping[str, str] | None = None) -> list[Route]:
    env = os.environ if environ is None else environ
    routes: list[Route] = []
    for i, raw in enumerate(entries):
        entry = dict(raw)
        label = f"route #{i + 1} ({entry['name']})" if entry.get("name") else f"route #{i + 1}"
        secret_env = entry.pop("secret_env", None)
        if secret_env is not None:
            if "secret" in entry:
                raise RoutingError(f"{label}: give secret or secret_env, not both")
            if secret_env not in env:
                raise RoutingError(f"{label}: environment variable {secret_env} is not set")
            entry["secret"] = env[secret_env]
        try:
            routes.append(Route.model_validate(entry))
        except ValidationError as exc:
            raise RoutingError(f"route #{i + 1} ({entry.get('name', '?')}): {_one_line(exc)}") from exc
    names = [r.name for r in routes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RoutingError(f"duplicate route names: {dupes}")
    return routes


def routes_from_toml(text: str, environ: Mapping[str, str] | None = None) -> list[Route]:
    """`[[routes]]` at the top level or under `[sosbridge]` (the layout load_settings reads)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RoutingError(f"routes file is not valid TOML: {exc}") from exc
    entries = data.get("routes")
    if entries is None and isinstance(data.get("sosbridge"), dict):
        entries = data["sosbridge"].get("routes")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise RoutingError("routes must be an array of tables: [[routes]]")
    return parse_routes(entries, environ)


class RoutingTable(BaseModel):
    model_config = ConfigDict(frozen=True)

    routes: tuple[Route, ...] = ()
    default: Route | None = None

    def select(self, contact: Contact, previous: Iterable[str] = ()) -> list[Route]:
        return select_routes(contact, self.routes, self.default, previous)

    def all_routes(self) -> list[Route]:
        named = {r.name for r in self.routes}
        extra = [self.default] if self.default is not None and self.default.name not in named else []
        return [*self.routes, *extra]

    def get(self, name: str) -> Route | None:
        return next((r for r in self.all_routes() if r.name == name), None)


def load_routes(
    settings: Any,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> RoutingTable:
    """Routes from the TOML config (`config_file` or SOSBRIDGE_CONFIG) and SOSBRIDGE_ROUTES (a JSON
    array of route tables), plus the default route from Settings. A configured route named "default"
    replaces the Settings one."""
    env = os.environ if environ is None else environ
    routes: list[Route] = []
    # The file load_settings read (`--config` or SOSBRIDGE_CONFIG): both ways behave the same.
    path = config_file or getattr(settings, "config", None) or env.get("SOSBRIDGE_CONFIG")
    if path:
        routes.extend(routes_from_toml(Path(path).read_text(encoding="utf-8"), env))
    if env.get("SOSBRIDGE_ROUTES"):
        try:
            entries = json.loads(env["SOSBRIDGE_ROUTES"])
        except json.JSONDecodeError as exc:
            raise RoutingError(f"SOSBRIDGE_ROUTES is not JSON: {exc}") from exc
        if not isinstance(entries, list):
            raise RoutingError("SOSBRIDGE_ROUTES must be a JSON array of route objects")
        routes = parse_routes([*(r.model_dump() for r in routes), *entries], env)
    default = next((r for r in routes if r.name == DEFAULT_ROUTE), None)
    if default is not None:
        routes = [r for r in routes if r.name != DEFAULT_ROUTE]
    else:
        default = default_route(settings)
    return RoutingTable(routes=tuple(routes), default=default)
