"""The Redis store's client from one URL: a single server, or the primary a set of Sentinels names.

- `redis://`, `rediss://`, `unix://`: one server (redis-py's `from_url`).
- `redis+sentinel://[user:password@]host[:port][,host[:port]...]/service[/db][?options]`
  (`rediss+sentinel://` for TLS to the data nodes): the primary the sentinels name for `service`; a
  command after a failover asks them again (redis-py's Sentinel support). Options: `sentinel_username`,
  `sentinel_password`, `min_replicas` (default 1 with sentinels, 0 otherwise), `replica_timeout_ms`
  (default 1000). The sentinel port defaults to 26379.
- The replication guard (`min_replicas` > 0): every script call, which is every write of the store, is
  followed on the same connection by `WAIT min_replicas replica_timeout_ms`. Fewer copies raise
  `NotReplicated` (a RedisError: the store's StoreError), so the alert is not acknowledged and the device
  sends it again; the commit token and the message-id dedupe make the retry land once. Without it an alert
  acknowledged just before the primary dies can be missing from the replica promoted in its place.
- A bounded, waiting pool: at most POOL_CONNECTIONS connections; a command that finds them all busy waits
  for one (up to the socket timeout) instead of failing at once, as redis-py 8's default pool does
  beyond 100 (a flood of 1,000 in-flight MQTT alerts made thousands of commits fail and be retried).
See docs/operations/redis.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SENTINEL_PORT = 26379
OUR_OPTIONS = ("sentinel_username", "sentinel_password", "min_replicas", "replica_timeout_ms")
POOL_CONNECTIONS = 64  # per bridge process; each command holds one for a round trip (plus WAIT)


class UrlError(ValueError):
    """A Redis URL this module cannot use (the message names what is wrong)."""


@dataclass(frozen=True)
class RedisTarget:
    """What a store URL says: where, and how many replicas must hold each write before it counts."""

    url: str  # a redis-py URL of one server (empty for sentinels)
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinel_kwargs: dict[str, str] = field(default_factory=dict)
    min_replicas: int = 0
    replica_timeout_ms: int = 1000

    def describe(self) -> str:
        """Where, without credentials: for start-up lines and errors."""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"redis sentinel {hosts} service {self.service} db {self.db}"
        return self.url


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [ipv6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else SENTINEL_PORT
    host, _, port = text.partition(":")
    if not host:
        raise UrlError(f"empty sentinel host in {text!r}")
    try:
        return host, int(port) if port else SENTINEL_PORT
    except ValueError:
        raise UrlError(f"sentinel port must be a number, got {port!r}") from None


def _int_option(options: dict[str, str], name: str, default: int) -> int:
    try:
        return int(options.pop(name, default))
    except ValueError:
        raise UrlError(f"{name} must be a whole number") from None


def parse_target(url: str) -> RedisTarget:
    """The RedisTarget of a store URL (after the store's own `namespace`/`dedupe_ttl_s` are removed). Pure."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise UrlError("must be a redis://, rediss://, unix:// or redis+sentinel:// URL")
    rest, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    ours = {k: options.pop(k) for k in OUR_OPTIONS if k in options}
    if scheme not in SENTINEL_SCHEMES:
        min_replicas = _int_option(ours, "min_replicas", 0)
        timeout = _int_option(ours, "replica_timeout_ms", 1000)
        plain = f"{scheme}://{rest}" + (f"?{urlencode(options)}" if options else "")
        return RedisTarget(url=plain, min_replicas=min_replicas, replica_timeout_ms=timeout)
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        userinfo, hosts = "", rest
    hostlist, _, path = hosts.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise UrlError("name the monitored service after the hosts: redis+sentinel://host:26379/mymaster")
    service, db = parts[0], parts[1] if len(parts) > 1 else options.pop("db", "0")
    username, _, password = userinfo.partition(":")
    sentinel_kwargs = {k.removeprefix("sentinel_"): v for k, v in ours.items() if k.startswith("sentinel_")}
    try:
        db_number = int(db)
    except ValueError:
        raise UrlError(f"the database must be a number, got {db!r}") from None
    return RedisTarget(
        url="",
        sentinels=tuple(_host_port(h) for h in hostlist.split(",") if h),
        service=unquote(service),
        db=db_number,
        username=unquote(username) or None,
        password=unquote(password) or None,
        tls=scheme == "rediss+sentinel",
        sentinel_kwargs=sentinel_kwargs,
        min_replicas=_int_option(ours, "min_replicas", 1),
        replica_timeout_ms=_int_option(ours, "replica_timeout_ms", 1000),
    )


def describe_url(url: str) -> str:
    try:
        return parse_target(url).describe()
    except UrlError:
        return "redis (unparsable URL)"


def connect(url: str, **client_options: Any) -> Any:
    """A redis-py asyncio client for the store URL (not yet connected: the first command connects)."""
    from redis.asyncio import BlockingConnectionPool, Redis
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

    from bridge.store.redis_batch import GUARDED_COMMANDS, replication_shortfall

    target = parse_target(url)

    class GuardedRedis(Redis):
        # Read by the store's AutoPipeline, which ends a batch of writes with one WAIT instead.
        replication_guard = (target.min_replicas, target.replica_timeout_ms)

        async def _send_command_parse_response(self, conn: Any, command_name: Any, *args: Any, **options: Any) -> Any:
            reply = await super()._send_command_parse_response(conn, command_name, *args, **options)
            if target.min_replicas and str(command_name).upper() in GUARDED_COMMANDS:
                # WAIT counts the replicas that hold every write made so far on *this* connection.
                await conn.send_command("WAIT", target.min_replicas, target.replica_timeout_ms)
                shortfall = replication_shortfall(int(await conn.read_response()), target.min_replicas,
                                                  target.replica_timeout_ms)
                if shortfall is not None:
                    raise shortfall
            return reply

    # A command waits this long for a free connection, then fails (StoreError: not acknowledged).
    pool_wait = {"max_connections": POOL_CONNECTIONS, "timeout": client_options.get("socket_timeout") or 5.0}
    if not target.sentinels:
        return GuardedRedis.from_pool(BlockingConnectionPool.from_url(target.url, **pool_wait, **client_options))

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):  # type: ignore[misc]
        """The primary's address from the sentinels, and the bounded waiting pool above."""

    socket_options = {k: v for k, v in client_options.items() if k.startswith("socket_")}
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={**socket_options, **target.sentinel_kwargs},
        **socket_options,
    )
    return sentinel.master_for(
        target.service,
        redis_class=GuardedRedis,
        connection_pool_class=BlockingSentinelPool,
        **pool_wait,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **{k: v for k, v in client_options.items() if not k.startswith("socket_")},
        **socket_options,
    )
