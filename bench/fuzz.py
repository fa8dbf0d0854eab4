#!/usr/bin/env python3
"""Mutation fuzzer for every registered decoder: `bench/fuzz.py [--cases N] [--seed S] [--jobs J]`.

Decoders come from the `sosbridge.decoders` entry points (bridge.devices.decoding.decoders()), so a decoder
added by a plug-in is fuzzed without touching this file. Seeds are the samples of every device profile
that names the decoder (hardware/profiles/); a decoder no profile uses is driven with every profile's
samples. Each case mutates a seed (byte and bit flips, truncation, insertion, splicing, JSON node
replacement with hostile values, line-protocol field edits, meta edits) or generates hostile input from
scratch (random bytes, wrong-shape JSON, deep nesting, huge numbers, NaN). Framed wire formats get half
their mutated cases re-framed (a DC-09 CRC and length, a watch frame's length made right again), and the
DC-09 wire itself (CRC, length, AES, then the decoder) is a target of its own, `dc09-wire`.

The property: a decoder returns a list of `Decoded` or raises `DecodeError`; anything else is a crash.
Prints a table, writes JSON to bench/results/fuzz.json and exits 1 if any decoder crashed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.devices.decoding import Decoded, DecodeError, Frame, decoders  # noqa: E402
from bridge.devices.profiles import DeviceProfile, ProfileRegistry  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "fuzz.json"

# Values that have broken parsers before: type confusion, float edge cases, huge and negative numbers.
HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    -(2**63) - 1,
    10**400,
    1e308,
    -1e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    "",
    " ",
    "0",
    "-1",
    "NaN",
    "1e999",
    "null",
    "true",
    "2026-13-45T99:99:99Z",
    "\u0000",
    "\u202e",
    "é" * 300,
    "x" * 5000,
    [],
    [None],
    {},
    {"": None},
    [[[]]],
]

# Bytes that end lines, fields, strings and checksums, or start a broken UTF-8 sequence.
SPECIAL_BYTES = [b"\x00", b"\xff", b"\r\n", b"*", b",", b'"', b"\\u0000", b"\xc3", b"\xed\xa0\x80"]

# The fields decoders and profiles look at; putting hostile values under these keys reaches deep code.
INTERESTING_KEYS = [
    "action", "kind", "state", "lat", "lon", "latitude", "longitude", "acc", "tst", "_type", "t",
    "object", "fPort", "f_port", "data", "frm_payload", "uplink_message", "deviceInfo", "devEui",
    "rxInfo", "time", "received_at", "intent", "intentName", "confidenceScore", "siteId", "slots",
    "last_seen", "battery", "sos", "message_id", "location", "end_device_ids", "decoded_payload",
    "object.location", "dev_eui", "deduplicationId", "correlation_ids", "input",
]


@dataclass
class Seed:
    payload: bytes
    meta: dict[str, str]


@dataclass
class Target:
    name: str
    profiles: list[DeviceProfile]
    seeds: list[Seed]


@dataclass
class Report:
    decoder: str
    cases: int = 0
    crashes: int = 0
    signatures: dict[str, dict[str, Any]] = field(default_factory=dict)
    decode_errors: int = 0
    decoded_events: int = 0
    seconds: float = 0.0
    profiles: list[str] = field(default_factory=list)
    seeds: int = 0

    @property
    def cases_per_s(self) -> float:
        return self.cases / self.seconds if self.seconds else 0.0


# -- wire formats behind a transport's checks (CRC, length, AES) -----------------------------------------
DC09_KEY = "AAAAAAAAAAAAAAAA"


def _dc09_wire(frame: Frame, profile: DeviceProfile) -> list[Decoded]:
    """What the DC-09 transport does to a datagram before the ingress: checks, decryption, decoding."""
    from device_adapters.decoders import dc09

    body = dc09.check_frame(frame.payload)
    message = dc09.open_message(body, dc09.parse_key(DC09_KEY) if body.startswith('"*') else None)
    block = dc09.clear_body(message)
    return dc09.decode(Frame(payload=block.encode("ascii", "replace"), meta=frame.meta), profile)


def _dc09_reframe(payload: bytes) -> bytes:
    """A mutated message block given a valid CRC and length, so mutations reach the parser."""
    from device_adapters.decoders import dc09

    text = payload.decode("latin-1").lstrip("\n").rstrip("\r")
    body = text[8:] if len(text) > 8 and text[8:9] == '"' else text
    return b"\n" + f"{dc09.crc16(body.encode('latin-1')):04X}0{len(body) % 4096:03X}".encode() + body.encode(
        "latin-1") + b"\r"


def _watch_reframe(payload: bytes) -> bytes:
    """A mutated watch frame with its declared length made right again."""
    from device_adapters.decoders import watch

    inner = payload.strip(b"[]")
    parts = inner.split(b"*", 3)
    if len(parts) == 4:
        return b"[" + b"*".join(parts[:2]) + b"*" + f"{len(parts[3]):04X}".encode() + b"*" + parts[3] + b"]"
    return watch.build_frame("3G", "1234567890", payload)


def _dc09_wire_seeds(profile: DeviceProfile) -> list[Seed]:
    from device_adapters.decoders import dc09

    seeds = []
    for sample in profile.samples:
        block = sample.frame().payload.decode("ascii")
        seeds.append(Seed(dc09.frame_body(block), {"protocol": "dc09"}))
        head, sep, rest = block.partition("[")
        if sep and not head.startswith('"*'):
            data = rest.split("|", 1)[-1]
            encrypted = dc09.encrypt_text(dc09.parse_key(DC09_KEY), data)
            seeds.append(Seed(dc09.frame_body('"*' + head[1:] + "[" + encrypted), {"protocol": "dc09"}))
    return seeds


WIRE_TARGETS = {"dc09-wire": ("dc09-alarm-panel", _dc09_wire, _dc09_wire_seeds)}
REFRAMERS = {"dc09-wire": _dc09_reframe, "watch": _watch_reframe}


def targets(registry: ProfileRegistry | None = None) -> list[Target]:
    """One target per registered decoder, with the profiles that use it and their samples as seeds; plus
    the wire formats a transport checks before its decoder runs (WIRE_TARGETS)."""
    registry = registry or ProfileRegistry.load()
    out = []
    for name, (profile_id, _fn, make_seeds) in WIRE_TARGETS.items():
        wire_profile = registry.get(profile_id)
        if wire_profile is not None:
            out.append(Target(name, [wire_profile], make_seeds(wire_profile)))
    for name in sorted(decoders()):
        profiles = registry.by_decoder(name)
        if not profiles:
            # Nothing names this decoder (e.g. chirpstack/ttn are reached through `lorawan`): drive it
            # with every profile, so mappings and options it may read still vary.
            profiles = [p.model_copy(update={"decoder": name}) for p in registry.profiles.values()]
        seeds = [Seed(s.frame().payload, dict(s.meta)) for p in profiles for s in p.samples]
        if not seeds:
            seeds = [Seed(b"{}", {})]
        out.append(Target(name, profiles, seeds))
    return out


# -- mutators (pure, seeded) -------------------------------------------------------------------------------
def _rand_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def _hostile(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.6 or depth > 3:
        return rng.choice(HOSTILE)
    if r < 0.8:
        return [_hostile(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(INTERESTING_KEYS): _hostile(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _nodes(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _nodes(v, (*path, i))
    return found


def _replace(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc.get(head), rest, value)}
    copy = list(doc)
    copy[head] = _replace(copy[head], rest, value)
    return copy


def _delete(doc: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1:
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != path[0]}
        return [v for i, v in enumerate(doc) if i != path[0]]
    head = path[0]
    if isinstance(doc, dict):
        return {**doc, head: _delete(doc[head], path[1:])}
    copy = list(doc)
    copy[head] = _delete(copy[head], path[1:])
    return copy


def _dump(doc: Any) -> bytes:
    try:
        return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    except (ValueError, TypeError):
        return b"{}"


def mutate_json(rng: random.Random, payload: bytes) -> bytes | None:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    for _ in range(rng.randint(1, 3)):
        nodes = _nodes(doc)
        path = rng.choice(nodes)
        op = rng.random()
        if op < 0.55:
            doc = _replace(doc, path, _hostile(rng))
        elif op < 0.7 and path:
            doc = _delete(doc, path)
        elif op < 0.85:
            # Add a key decoders look for, with a hostile value, next to the existing ones.
            parent = path[:-1]
            container = doc
            for p in parent:
                container = container[p]
            if isinstance(container, dict):
                doc = _replace(doc, (*parent, rng.choice(INTERESTING_KEYS)), _hostile(rng))
        else:
            # Re-type a leaf: the same value as a string, a list, or an object.
            node: Any = doc
            for p in path:
                node = node[p]
            doc = _replace(doc, path, rng.choice([str(node), [node], {"value": node}]))
    return _dump(doc)


def mutate_text(rng: random.Random, payload: bytes) -> bytes:
    """Line protocols (NMEA, Contact ID, SMS): edit comma/space separated fields."""
    text = payload.decode("latin-1")
    sep = "," if "," in text else " "
    fields = text.split(sep)
    i = rng.randrange(len(fields))
    op = rng.random()
    if op < 0.3:
        fields[i] = str(rng.choice(["", "-", "9" * rng.randint(1, 40), "-0", "1e9", "NaN", "∞", "*", "$", ",,"]))
    elif op < 0.5:
        fields[i] = "".join(rng.choice("0123456789ABCDEF.-+NSEW*$") for _ in range(rng.randint(0, 12)))
    elif op < 0.7:
        del fields[i]
    elif op < 0.85:
        fields.insert(i, fields[i])
    else:
        rng.shuffle(fields)
    return sep.join(fields).encode("latin-1", "replace")


def mutate_bytes(rng: random.Random, payload: bytes, other: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.25 and data:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op < 0.4 and data:
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        elif op < 0.55 and data:
            del data[rng.randrange(len(data)) :]
        elif op < 0.7:
            pos = rng.randint(0, len(data))
            data[pos:pos] = _rand_bytes(rng, rng.randint(1, 8))
        elif op < 0.8 and data:
            a = rng.randrange(len(data))
            b = rng.randint(a, min(len(data), a + 16))
            data[a:a] = data[a:b] * rng.randint(1, 4)
        elif op < 0.9:
            cut = rng.randint(0, len(other))
            data = data[: rng.randint(0, len(data))] + bytearray(other[cut:])
        elif data:
            pos = rng.randrange(len(data))
            data[pos:pos] = rng.choice(SPECIAL_BYTES)
    return bytes(data)


def fresh(rng: random.Random) -> bytes:
    """Input not derived from a seed: random bytes, wrong-shape JSON, deep nesting."""
    r = rng.random()
    if r < 0.35:
        return _rand_bytes(rng, rng.randint(0, 96))
    if r < 0.7:
        return _dump(_hostile(rng))
    if r < 0.85:
        n = rng.choice([10, 100, 1000, 5000, 20000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}"), ('{"object":', "}")])
        return (opener * n + "1" + closer * rng.choice([n, 0, n // 2])).encode()
    return rng.choice([b"", b"null", b"[]", b"0", b"NaN", b"-Infinity", b"1" * 5000, b'"x"', b"\xef\xbb\xbf{}"])


def mutate_meta(rng: random.Random, meta: dict[str, str], pool: list[dict[str, str]]) -> dict[str, str]:
    r = rng.random()
    if r < 0.8:
        return meta
    if r < 0.9:
        return dict(rng.choice(pool))
    meta = dict(meta)
    if meta and rng.random() < 0.5:
        del meta[rng.choice(sorted(meta))]
    else:
        key = rng.choice([*sorted(meta), "topic", "port", "f_port", "network", "event", "sender", "subtopic"])
        meta[key] = rng.choice(["", "-1", "999999999999", "ttn", "chirpstack", "up", "join", "\x00", "a/+/#"])
    return meta


def make_case(rng: random.Random, target: Target) -> tuple[bytes, dict[str, str]]:
    seed = rng.choice(target.seeds)
    r = rng.random()
    if r < 0.12:
        payload = fresh(rng)
    elif r < 0.5:
        payload = mutate_json(rng, seed.payload) or mutate_bytes(rng, seed.payload, rng.choice(target.seeds).payload)
    elif r < 0.65:
        payload = mutate_text(rng, seed.payload) if seed.payload else fresh(rng)
    else:
        payload = mutate_bytes(rng, seed.payload, rng.choice(target.seeds).payload)
    reframe = REFRAMERS.get(target.name)
    if reframe is not None and rng.random() < 0.5:
        payload = reframe(payload)  # valid CRC/length again: the mutation reaches the parser behind them
    meta = mutate_meta(rng, seed.meta, [s.meta for s in target.seeds])
    if target.name == "watch" and rng.random() < 0.7:
        meta = {**meta, "received_at": rng.choice(["2026-03-01T12:00:00+00:00", "1994-01-01T00:00:00+00:00",
                                                   "not a time", "", "9999-12-31T23:59:59+00:00"])}
    return payload, meta


# -- running -------------------------------------------------------------------------------------------------
def signature(exc: BaseException) -> str:
    """Exception type plus the innermost frame in project code: one entry per distinct bug."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename] or frames
    if not ours:
        return type(exc).__name__
    last = ours[-1]
    where = last.filename[len(str(ROOT)) + 1 :] if last.filename.startswith(str(ROOT)) else last.filename
    return f"{type(exc).__name__} at {where}:{last.lineno}"


def check_result(result: Any) -> None:
    if not isinstance(result, list) or not all(isinstance(d, Decoded) for d in result):
        raise TypeError(f"decoder returned {type(result).__name__}, not list[Decoded]")


def run_target(name: str, cases: int, seed: int) -> Report:
    target = next(t for t in targets() if t.name == name)
    decode = WIRE_TARGETS[name][1] if name in WIRE_TARGETS else decoders()[name]
    rng = random.Random(f"{seed}:{name}")
    report = Report(decoder=name, profiles=[p.id for p in target.profiles], seeds=len(target.seeds))
    started = time.perf_counter()
    for i in range(cases):
        payload, meta = make_case(rng, target)
        profile = target.profiles[i % len(target.profiles)]
        try:
            frame = Frame(payload=payload, meta=meta)
            result = decode(frame, profile)
            check_result(result)
            report.decoded_events += len(result)
        except DecodeError:
            report.decode_errors += 1
        except Exception as exc:  # the whole point: anything else is a crash
            report.crashes += 1
            sig = signature(exc)
            entry = report.signatures.setdefault(
                sig,
                {
                    "count": 0,
                    "message": str(exc)[:200],
                    "profile": profile.id,
                    "payload_hex": payload[:512].hex(),
                    "meta": meta,
                },
            )
            entry["count"] += 1
        report.cases += 1
    report.seconds = time.perf_counter() - started
    return report


def print_table(reports: list[Report]) -> None:
    head = f"{'decoder':<14} {'cases':>9} {'crashes':>8} {'signatures':>10} {'errors':>8} {'events':>8} {'cases/s':>9}"
    print(head)
    print("-" * len(head))
    for r in reports:
        print(
            f"{r.decoder:<14} {r.cases:>9} {r.crashes:>8} {len(r.signatures):>10} "
            f"{r.decode_errors:>8} {r.decoded_events:>8} {r.cases_per_s:>9.0f}"
        )
    for r in reports:
        for sig, entry in r.signatures.items():
            print(f"\nCRASH {r.decoder}: {sig} x{entry['count']}: {entry['message']}")
            print(f"  profile={entry['profile']} meta={entry['meta']} payload_hex={entry['payload_hex'][:160]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per decoder (default 100000)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--decoder", action="append", help="only these decoders (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    names = [t.name for t in targets() if not args.decoder or t.name in args.decoder]
    started = time.perf_counter()
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            reports = list(pool.map(run_target, names, [args.cases] * len(names), [args.seed] * len(names)))
    else:
        reports = [run_target(n, args.cases, args.seed) for n in names]
    print_table(reports)
    total_crashes = sum(r.crashes for r in reports)
    doc = {
        "seed": args.seed,
        "cases_per_decoder": args.cases,
        "wall_s": round(time.perf_counter() - started, 2),
        "total_crashes": total_crashes,
        "decoders": [asdict(r) | {"cases_per_s": round(r.cases_per_s, 1)} for r in reports],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n{sum(r.cases for r in reports)} cases, {total_crashes} crashes; results in {args.out}")
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
