"""Redis store (scale-out): several bridge instances share one Redis and one outbox.

Every write that must be atomic is one Lua script, so it runs as a single step on the server and no other
instance sees half of it. All keys live under `<namespace>:`; the namespace comes from the constructor or
from the URL query (`redis://host:6379/0?namespace=site-a`), so instances that share a URL share a store.

Outbox layout, and why it is not a stream (docs/operations/redis.md has the longer version):
  oi:<item>              hash, one outbox row (same fields as the SQLite table)
  oa:<alert>             zset of an alert's rows by seq (outbox_items, cancel, contact_sent)
  oc:<alert>:<route>     zset of the *active* rows (pending/retry/inflight) of one (alert, route) by seq
  oar:<alert>            set of the routes the alert's rows use: a cancel walks only its oc: chains
  due:1 / due:0          zsets of leasable rows, critical / non-critical, scored by the time they become
                         leasable (next_attempt_at, or lease_until while in flight). Only the head (lowest
                         seq) of each oc:<alert>:<route> chain is ever in a due set, which is what keeps an
                         update from overtaking its alert.
  oactive / ocrit        zsets of active rows by created_at / of critical active rows by attempts (stats)
  ocount                 hash state -> number of rows (stats without a scan)
  okey                   hash "<route>\\n<idempotency key>" -> item id (the SQLite unique index)
A stream's consumer group hands each entry to one consumer, but it cannot hold back entry 2 of an alert
until entry 1 is delivered, nor delay a retry until its backoff ends; the sorted sets do both.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge.core.model import STORED, Alert, Device, HistoryEntry, Location
from bridge.store.base import (
    Change,
    CheckinRow,
    ConcurrentUpdate,
    DuplicateMessage,
    OutboxItem,
    OutboxStats,
    StoreError,
    hash_secret,
)
from bridge.store.redis_batch import AutoPipeline
from bridge.store.redis_connection import connect

T = TypeVar("T")
AUDIT_MAXLEN = 100_000  # audit stream entries kept at most (approximate trim), whatever the retention says

_ITEM_FIELDS = (
    "item_id",
    "alert_id",
    "seq",
    "msg_type",
    "idempotency_key",
    "payload",
    "critical",
    "state",
    "attempts",
    "next_attempt_at",
    "lease_until",
    "fallback_sent",
    "created_at",
    "route",
    "body",
    "body_format",
)

# Shared Lua helpers, prepended to every script that changes outbox state.
_LUA_LIB = r"""
local P = ARGV[1]
local function active(st) return st == 'pending' or st == 'retry' or st == 'inflight' end
local function ready_score(ik)
  local st, na, lu = unpack(redis.call('HMGET', ik, 'state', 'next_attempt_at', 'lease_until'))
  if st == 'inflight' then return lu end
  return na
end
-- Only the lowest seq of an (alert, route) chain may be leasable; everything behind it waits.
local function promote(alert_id, route)
  local chain = P .. 'oc:' .. alert_id .. ':' .. route
  local members = redis.call('ZRANGE', chain, 0, -1, 'WITHSCORES')
  if #members == 0 then return end
  local head = tonumber(members[2])
  for i = 1, #members, 2 do
    local id = members[i]
    local ik = P .. 'oi:' .. id
    local due = P .. 'due:' .. redis.call('HGET', ik, 'critical')
    if tonumber(members[i + 1]) == head then
      redis.call('ZADD', due, ready_score(ik), id)
    else
      redis.call('ZREM', due, id)
    end
  end
end
local function set_state(id, new)
  local ik = P .. 'oi:' .. id
  local old, crit, alert_id, route, attempts, created = unpack(
    redis.call('HMGET', ik, 'state', 'critical', 'alert_id', 'route', 'attempts', 'created_at'))
  if old then redis.call('HINCRBY', P .. 'ocount', old, -1) end
  redis.call('HINCRBY', P .. 'ocount', new, 1)
  redis.call('HSET', ik, 'state', new)
  if active(new) then
    redis.call('ZADD', P .. 'oactive', created, id)
    redis.call('ZADD', P .. 'oc:' .. alert_id .. ':' .. route, redis.call('HGET', ik, 'seq'), id)
    if crit == '1' then redis.call('ZADD', P .. 'ocrit', attempts, id) end
  else
    redis.call('ZREM', P .. 'oactive', id)
    redis.call('ZREM', P .. 'ocrit', id)
    redis.call('ZREM', P .. 'oc:' .. alert_id .. ':' .. route, id)
    redis.call('ZREM', P .. 'due:' .. crit, id)
  end
  promote(alert_id, route)
end
"""

_COMMIT = (
    _LUA_LIB
    + r"""
-- ARGV: P, token, dedupe_key, dedupe_ttl_ms, alert_id, device_id, alert_doc, is_open, received_score,
--       cancel, n_history, history..., n_items, (17 fields per item)..., dev_id, dev_old, dev_new,
--       expected_version ('' for a new alert), check_open ('1'/'0'), expected_open ('' for none)
local token, dkey, dttl = ARGV[2], ARGV[3], tonumber(ARGV[4])
local alert_id, device_id, doc, is_open, rscore, cancel = ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
-- A retry of a commit whose reply was lost must not apply it twice.
if redis.call('EXISTS', P .. 'applied:' .. token) == 1 then return {'ok'} end
local i = 11
local n_hist = tonumber(ARGV[i]); local hist_at = i + 1; i = i + 1 + n_hist
local n_items = tonumber(ARGV[i]); local items_at = i + 1; i = i + 1 + 17 * n_items
local dev_id, dev_old, dev_new = ARGV[i], ARGV[i + 1], ARGV[i + 2]
local expected_version = ARGV[i + 3]
local check_open, expected_open = ARGV[i + 4], ARGV[i + 5]
local n_extra = tonumber(ARGV[i + 6] or '0')
-- Every check comes before the first write: a Lua error or refusal leaves nothing behind.
if check_open == '1' then
  local latest = redis.call('ZREVRANGE', P .. 'aopen:' .. device_id, 0, 0)
  if (latest[1] or '') ~= expected_open then return {'stale'} end
end
if expected_version ~= nil and expected_version ~= '' then
  local cur = redis.call('GET', P .. 'alert:' .. alert_id)
  if not cur then return {'stale'} end
  local v = cjson.decode(cur)['version'] or 0
  if tostring(v) ~= expected_version then return {'stale'} end
end
if dkey ~= '' then
  local existing = redis.call('GET', P .. 'dd:' .. dkey)
  if existing then return {'dup', existing} end
end
if dev_id ~= '' then
  local cur = redis.call('HGET', P .. 'devices', dev_id)
  if cur and cur ~= dev_old then return {'conflict'} end
end
for k = 0, n_items - 1 do
  local b = items_at + 17 * k
  if redis.call('EXISTS', P .. 'oi:' .. ARGV[b]) == 1 then return {'clash', ARGV[b]} end
  if redis.call('HEXISTS', P .. 'okey', ARGV[b + 14] .. '\n' .. ARGV[b + 4]) == 1 then
    return {'clash', ARGV[b + 4]}
  end
end
if dkey ~= '' then
  if dttl > 0 then
    redis.call('SET', P .. 'dd:' .. dkey, alert_id, 'PX', dttl)
  else
    redis.call('SET', P .. 'dd:' .. dkey, alert_id)
  end
  redis.call('SADD', P .. 'add:' .. alert_id, dkey)  -- so retention can find the alert's dedupe keys
end
for k = 1, n_extra do
  local xkey = ARGV[i + 6 + k]
  local ok
  if dttl > 0 then
    ok = redis.call('SET', P .. 'dd:' .. xkey, alert_id, 'NX', 'PX', dttl)
  else
    ok = redis.call('SET', P .. 'dd:' .. xkey, alert_id, 'NX')
  end
  if ok then redis.call('SADD', P .. 'add:' .. alert_id, xkey) end
end
redis.call('SET', P .. 'alert:' .. alert_id, doc)
if is_open == '1' then
  redis.call('ZADD', P .. 'aopen:' .. device_id, rscore, alert_id)
  redis.call('ZREM', P .. 'aclosed', alert_id)
else
  redis.call('ZREM', P .. 'aopen:' .. device_id, alert_id)
  redis.call('ZADD', P .. 'aclosed', rscore, alert_id)
end
for k = 0, n_hist - 1 do redis.call('RPUSH', P .. 'hist:' .. alert_id, ARGV[hist_at + k]) end
-- The routes an alert's rows use (oar:<alert>). An alert from before this index existed gets it here, once,
-- from all its rows, before anything reads or extends it.
local function route_index(a_id)
  local oar = P .. 'oar:' .. a_id
  if redis.call('EXISTS', oar) == 0 then
    for _, id in ipairs(redis.call('ZRANGE', P .. 'oa:' .. a_id, 0, -1)) do
      local route = redis.call('HGET', P .. 'oi:' .. id, 'route')
      if route then redis.call('SADD', oar, route) end
    end
  end
  return oar
end
if cancel == '1' or cancel == '2' then
  -- '1': every waiting contact of the alert; '2': only waiting updates (superseded by this change's).
  -- Only active rows can be waiting, and they are exactly the alert's (alert, route) chains: walking every
  -- row the alert ever had made each fold of a flooding device slower than the last, inside Redis.
  for _, route in ipairs(redis.call('SMEMBERS', route_index(alert_id))) do
    for _, id in ipairs(redis.call('ZRANGE', P .. 'oc:' .. alert_id .. ':' .. route, 0, -1)) do
      local st, mt = unpack(redis.call('HMGET', P .. 'oi:' .. id, 'state', 'msg_type'))
      if (st == 'pending' or st == 'retry') and (cancel == '1' or mt == 'update') then set_state(id, 'cancelled') end
    end
  end
end
for k = 0, n_items - 1 do
  local b = items_at + 17 * k
  local id, a_id, seq, state, route = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 7], ARGV[b + 14]
  local ik = P .. 'oi:' .. id
  redis.call('HSET', ik, 'item_id', id, 'alert_id', a_id, 'seq', seq, 'msg_type', ARGV[b + 3],
    'idempotency_key', ARGV[b + 4], 'payload', ARGV[b + 5], 'critical', ARGV[b + 6],
    'attempts', ARGV[b + 8], 'next_attempt_at', ARGV[b + 9], 'lease_until', ARGV[b + 10],
    'fallback_sent', ARGV[b + 12], 'created_at', ARGV[b + 13], 'route', route)
  if ARGV[b + 11] ~= '' then redis.call('HSET', ik, 'last_error', string.sub(ARGV[b + 11], 2)) end
  if ARGV[b + 15] ~= '' then redis.call('HSET', ik, 'body_format', ARGV[b + 15], 'body', ARGV[b + 16]) end
  redis.call('HSET', P .. 'okey', route .. '\n' .. ARGV[b + 4], id)
  redis.call('SADD', route_index(a_id), route)
  redis.call('ZADD', P .. 'oa:' .. a_id, seq, id)
  set_state(id, state)
end
if dev_id ~= '' and redis.call('HEXISTS', P .. 'devices', dev_id) == 1 then
  redis.call('HSET', P .. 'devices', dev_id, dev_new)
end
redis.call('SET', P .. 'applied:' .. token, '1', 'EX', 600)
return {'ok'}
"""
)

_LEASE = (
    _LUA_LIB
    + r"""
-- ARGV: P, now, lease_until, limit. Critical rows first, then by the time each became leasable.
local now, lease_until, limit = tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local out = {}
for _, c in ipairs({'1', '0'}) do
  local due = P .. 'due:' .. c
  local skipped = 0
  while #out < limit do
    local ids = redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[2], 'LIMIT', skipped, limit - #out)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      local ik = P .. 'oi:' .. id
      local st, lu = unpack(redis.call('HMGET', ik, 'state', 'lease_until'))
      if st == 'pending' or st == 'retry' or (st == 'inflight' and tonumber(lu) < now) then
        if st ~= 'inflight' then set_state(id, 'inflight') end
        redis.call('HSET', ik, 'lease_until', lease_until)
        redis.call('ZADD', due, lease_until, id)
        out[#out + 1] = redis.call('HGETALL', ik)
      elseif active(st) then
        skipped = skipped + 1  -- a lease that ends exactly now: the SQLite store waits for '<'
      else
        redis.call('ZREM', due, id)  -- not leasable any more; never expected, but heal rather than spin
      end
    end
  end
end
return out
"""
)

_MARK_DELIVERED = (
    _LUA_LIB
    + r"""
local id, now, token = ARGV[2], ARGV[3], ARGV[4]
local ik = P .. 'oi:' .. id
if redis.call('EXISTS', ik) == 0 then return 0 end
-- A retry after a lost reply must not count the attempt twice.
if redis.call('SET', P .. 'applied:' .. token, '1', 'NX', 'EX', 600) == false then return 1 end
redis.call('HINCRBY', ik, 'attempts', 1)
redis.call('HDEL', ik, 'last_error')
redis.call('HSET', ik, 'lease_until', now)
set_state(id, 'delivered')
return 1
"""
)

_RESCHEDULE = (
    _LUA_LIB
    + r"""
local id, next_at, err, attempts = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ik = P .. 'oi:' .. id
if redis.call('HGET', ik, 'state') ~= 'inflight' then return 0 end
redis.call('HSET', ik, 'next_attempt_at', next_at, 'last_error', err, 'attempts', attempts)
set_state(id, 'retry')
return 1
"""
)

_MARK_DEAD = (
    _LUA_LIB
    + r"""
local id, err, attempts = ARGV[2], ARGV[3], ARGV[4]
local ik = P .. 'oi:' .. id
if redis.call('EXISTS', ik) == 0 then return 0 end
redis.call('HSET', ik, 'last_error', err, 'attempts', attempts)
set_state(id, 'dead')
return 1
"""
)

_APPEND_HISTORY = r"""
-- ARGV: P, alert_id, history entries...: appended only while the alert exists.
local P, alert_id = ARGV[1], ARGV[2]
if redis.call('EXISTS', P .. 'alert:' .. alert_id) == 0 then return 0 end
for k = 3, #ARGV do redis.call('RPUSH', P .. 'hist:' .. alert_id, ARGV[k]) end
return #ARGV - 2
"""

_PURGE = r"""
-- ARGV: P, before_score, batch. Closed alerts received before `before`, with their history, finished
-- outbox rows and dedupe keys; returns how many alerts went. Rows still active are left alone.
local P, before, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', P .. 'aclosed', '-inf', '(' .. before, 'LIMIT', 0, batch)
for _, alert_id in ipairs(ids) do
  redis.call('DEL', P .. 'hist:' .. alert_id)
  for _, id in ipairs(redis.call('ZRANGE', P .. 'oa:' .. alert_id, 0, -1)) do
    local ik = P .. 'oi:' .. id
    local st, route, key = unpack(redis.call('HMGET', ik, 'state', 'route', 'idempotency_key'))
    if st == 'delivered' or st == 'dead' or st == 'cancelled' then
      redis.call('HINCRBY', P .. 'ocount', st, -1)
      redis.call('HDEL', P .. 'okey', route .. '\n' .. key)
      redis.call('ZREM', P .. 'oa:' .. alert_id, id)
      redis.call('DEL', ik)
    end
  end
  for _, dkey in ipairs(redis.call('SMEMBERS', P .. 'add:' .. alert_id)) do
    if redis.call('GET', P .. 'dd:' .. dkey) == alert_id then redis.call('DEL', P .. 'dd:' .. dkey) end
  end
  redis.call('DEL', P .. 'add:' .. alert_id, P .. 'alert:' .. alert_id, P .. 'oar:' .. alert_id)
  redis.call('ZREM', P .. 'aclosed', alert_id)
end
return #ids
"""

_PUT_DEVICE = r"""
-- ARGV: P, device_id, doc, tenant_id, identifier fields ("scheme\nvalue")...
local P, id, doc, tenant = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local own = P .. 'devident:' .. id
for _, f in ipairs(redis.call('SMEMBERS', own)) do
  if redis.call('HGET', P .. 'ident', f) == id then redis.call('HDEL', P .. 'ident', f) end
end
redis.call('DEL', own)
for k = 5, #ARGV do
  redis.call('HSET', P .. 'ident', ARGV[k], id)
  redis.call('SADD', own, ARGV[k])
end
local old_tenant = redis.call('HGET', P .. 'devtenant', id)
if old_tenant then redis.call('SREM', P .. 'tenant:' .. old_tenant, id) end
redis.call('HSET', P .. 'devtenant', id, tenant)
redis.call('SADD', P .. 'tenant:' .. tenant, id)
redis.call('HSET', P .. 'devices', id, doc)
return 1
"""

_REMOVE_DEVICE = r"""
local P, id = ARGV[1], ARGV[2]
local existed = redis.call('HDEL', P .. 'devices', id)
local own = P .. 'devident:' .. id
for _, f in ipairs(redis.call('SMEMBERS', own)) do
  if redis.call('HGET', P .. 'ident', f) == id then redis.call('HDEL', P .. 'ident', f) end
end
redis.call('DEL', own)
local tenant = redis.call('HGET', P .. 'devtenant', id)
if tenant then redis.call('SREM', P .. 'tenant:' .. tenant, id) end
redis.call('HDEL', P .. 'devtenant', id)
local token = redis.call('HGET', P .. 'cred:' .. id, 'h:token')
if token then
  if redis.call('HGET', P .. 'tokens', token) == id then redis.call('HDEL', P .. 'tokens', token) end
end
redis.call('DEL', P .. 'cred:' .. id)
return existed
"""

_SET_CREDENTIAL = r"""
-- Credentials: cred:<device> holds "s:<scheme>" (the stored secret) and "h:<scheme>" (the token hash
-- when hashed, so it can be unindexed later); tokens maps a token hash to its device.
local P, id, scheme, stored, hashed = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local ck = P .. 'cred:' .. id
local old = redis.call('HGET', ck, 'h:' .. scheme)
if old and redis.call('HGET', P .. 'tokens', old) == id then redis.call('HDEL', P .. 'tokens', old) end
redis.call('HDEL', ck, 'h:' .. scheme)
redis.call('HSET', ck, 's:' .. scheme, stored)
if hashed == '1' and scheme == 'token' then
  redis.call('HSET', ck, 'h:' .. scheme, stored)
  redis.call('HSET', P .. 'tokens', stored, id)
end
return 1
"""

_CAS_DEVICE = r"""
local P, id, old, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local cur = redis.call('HGET', P .. 'devices', id)
if not cur then return -1 end
if cur ~= old then return 0 end
redis.call('HSET', P .. 'devices', id, new)
return 1
"""


# Check-in timers (bridge/alerts/checkin.py), kept apart from the alert keys:
#   ck:<device>   hash: timer_id, doc, active, next_at, version, lease_until (one row per device)
#   ckdue         zset of the active rows' device ids, scored by when they can next be leased:
#                 next_at, or lease_until while leased (as the outbox's due sets)
_CHECKIN_FIELDS = ("timer_id", "doc", "active", "next_at", "version", "lease_until")
_PUT_CHECKIN = r"""
-- ARGV: P, device_id, timer_id, doc, active, next_at, expected version ('' = the device has no row).
-- Returns the new version, or -1 when the stored version is not the expected one.
local P, id, tid, doc, active, next_at, expected = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = P .. 'ck:' .. id
local cur = redis.call('HGET', k, 'version')
if (cur or '') ~= expected then return -1 end
local v = (tonumber(cur) or 0) + 1
redis.call('HSET', k, 'timer_id', tid, 'doc', doc, 'active', active, 'next_at', next_at, 'version', v,
           'lease_until', '0')
if active == '1' then redis.call('ZADD', P .. 'ckdue', next_at, id) else redis.call('ZREM', P .. 'ckdue', id) end
return v
"""
_LEASE_CHECKINS = r"""
-- ARGV: P, now, lease_until, limit. Rows due by `now` whose lease is free: leased, returned as
-- {device_id, timer_id, doc, active, next_at, version, lease_until} each.
local P, now, lease_until, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'ckdue', '-inf', now, 'LIMIT', 0, limit)) do
  local k = P .. 'ck:' .. id
  redis.call('HSET', k, 'lease_until', lease_until)
  redis.call('ZADD', P .. 'ckdue', lease_until, id)
  local row = redis.call('HMGET', k, 'timer_id', 'doc', 'active', 'next_at', 'version', 'lease_until')
  table.insert(row, 1, id)
  out[#out + 1] = row
end
return out
"""
_CHECKIN_SCRIPTS = {"put_checkin": _PUT_CHECKIN, "lease_checkins": _LEASE_CHECKINS}


def _checkin_row(device_id: str, values: Sequence[str | None]) -> CheckinRow | None:
    timer_id, doc, active, next_at, version, lease_until = values
    if timer_id is None or doc is None:
        return None
    return CheckinRow(device_id, timer_id, doc, active == "1", float(next_at or 0), int(version or 0),
                      float(lease_until or 0))


def parse_url(url: str, namespace: str) -> tuple[str, str, int | None]:
    """Split our own query parameters (`namespace`, `dedupe_ttl_s`) off a redis URL. Pure."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ttl: int | None = None
    rest = []
    for key, value in query:
        if key == "namespace" and value:
            namespace = value
        elif key == "dedupe_ttl_s" and value:
            ttl = int(float(value))
        else:
            rest.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(rest))), namespace, ttl


def _item_from_hash(h: dict[str, str]) -> OutboxItem:
    return OutboxItem(
        item_id=h["item_id"],
        alert_id=h["alert_id"],
        seq=int(h["seq"]),
        msg_type=h["msg_type"],
        idempotency_key=h["idempotency_key"],
        payload=h["payload"],
        critical=h["critical"] == "1",
        state=cast(Any, h["state"]),
        attempts=int(h["attempts"]),
        next_attempt_at=float(h["next_attempt_at"]),
        lease_until=float(h["lease_until"]),
        last_error=h.get("last_error"),
        fallback_sent=h["fallback_sent"] == "1",
        created_at=float(h["created_at"]),
        route=h["route"],
        # Absent in rows written before bodies were rendered when queued (or by an older instance).
        body=h.get("body"),
        body_format=h.get("body_format"),
    )


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _item_args(item: OutboxItem, created_at: float) -> list[str | int | float]:
    return [
        item.item_id,
        item.alert_id,
        item.seq,
        item.msg_type,
        item.idempotency_key,
        item.payload,
        int(item.critical),
        item.state,
        item.attempts,
        repr(float(item.next_attempt_at)),
        repr(float(item.lease_until)),
        # "" means NULL; anything else carries one marker character so an empty error survives.
        "" if item.last_error is None else "=" + item.last_error,
        int(item.fallback_sent),
        repr(float(created_at)),
        item.route,
        # The body rendered when queued, and its format ("": none; the sink renders at delivery).
        item.body_format if item.body is not None and item.body_format else "",
        item.body if item.body is not None and item.body_format else "",
    ]


class RedisStore:
    """The Store contract on Redis (redis-py asyncio). See the module docstring for the key layout."""

    # The server-side scripts make each write atomic; a commit whose reply was lost is retried this many
    # times with the same token, which the script recognises, so it is never applied twice.
    commit_retries = 3
    mark_retries = 12  # about 8 s of backoff in _call

    def __init__(
        self,
        url: str,
        namespace: str = "sosbridge",
        dedupe_ttl_s: int | None = None,
        audit_maxlen: int = AUDIT_MAXLEN,
    ) -> None:
        self.audit_maxlen = audit_maxlen
        self.url, ns, url_ttl = parse_url(url, namespace)
        self.namespace = ns
        self.prefix = f"{ns}:"
        self.dedupe_ttl_s = dedupe_ttl_s if dedupe_ttl_s is not None else url_ttl
        self._r: Any = None
        self._scripts: dict[str, Any] = {}
        self._batch: AutoPipeline | None = None

    # -- plumbing -------------------------------------------------------------------------------------
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @property
    def r(self) -> Any:  # redis-py's stubs type replies as bytes | str; we decode to str
        if self._r is None:
            raise StoreError("store is not open")
        return self._r

    async def _call(self, fn: Callable[[], Awaitable[T]], retries: int = 0) -> T:
        """Run one Redis interaction; connection trouble becomes StoreError (never acknowledged)."""
        for attempt in range(retries + 1):
            try:
                return await fn()
            except (DuplicateMessage, StoreError):
                raise
            except (RedisError, OSError) as exc:
                if attempt >= retries:
                    raise StoreError(f"redis: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(min(1.0, 0.1 * (attempt + 1)))
        raise AssertionError("unreachable")

    @property
    def batch(self) -> AutoPipeline:
        if self._batch is None:
            raise StoreError("store is not open")
        return self._batch

    async def _script(self, name: str, *args: str | int | float) -> Any:
        return await self.batch.script(self._scripts[name], [self.prefix, *args])

    async def open(self) -> None:
        # No automatic retries inside redis-py: a write retried after a lost reply could apply twice.
        # Reads and the token-guarded commit retry explicitly below.
        self._r = connect(  # one server or a Sentinel-watched primary: bridge/store/redis_connection.py
            self.url,
            decode_responses=True,
            socket_timeout=5.0,
            socket_connect_timeout=2.0,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
        )
        for name, src in {
            "commit": _COMMIT,
            "lease": _LEASE,
            "delivered": _MARK_DELIVERED,
            "reschedule": _RESCHEDULE,
            "dead": _MARK_DEAD,
            "put_device": _PUT_DEVICE,
            "remove_device": _REMOVE_DEVICE,
            "set_credential": _SET_CREDENTIAL,
            "cas_device": _CAS_DEVICE,
            "purge": _PURGE,
            "append_history": _APPEND_HISTORY,
        }.items():
            self._scripts[name] = self._r.register_script(src)
        for name, src in _CHECKIN_SCRIPTS.items():
            self._scripts[name] = self._r.register_script(src)
        self._batch = AutoPipeline(self._r, getattr(self._r, "replication_guard", (0, 0)))
        await self._call(self._r.ping, retries=2)

    async def close(self) -> None:
        batch, self._batch = self._batch, None
        if batch is not None:
            await batch.close()
        r, self._r = self._r, None
        if r is not None:
            await r.aclose()

    async def reclaim_space(self) -> int:
        return 0  # Redis's own files are its operator's to manage (AOF rewrite), not the bridge's

    async def ping(self) -> bool:
        try:
            return bool(await self.r.ping())
        except (RedisError, OSError):
            return False

    # -- registry -------------------------------------------------------------------------------------
    async def put_device(self, device: Device) -> None:
        idents = [f"{scheme}\n{value}" for scheme, value in device.identifiers.items()]
        await self._call(
            lambda: self._script("put_device", device.device_id, device.model_dump_json(), device.tenant_id, *idents),
            retries=2,  # idempotent: the same document written twice
        )

    async def put_devices(self, devices: Sequence[Device], tokens: Mapping[str, str] | None = None) -> None:
        """The per-device scripts, pipelined: one round trip per batch. Each script is idempotent, so a
        batch retried after a lost reply converges to the same registry."""

        async def run() -> None:
            pipe = self.r.pipeline(transaction=False)
            for d in devices:
                idents = [f"{scheme}\n{value}" for scheme, value in d.identifiers.items()]
                args = [self.prefix, d.device_id, d.model_dump_json(), d.tenant_id, *idents]
                await self._scripts["put_device"](args=args, client=pipe)
            for device_id, token in (tokens or {}).items():
                args = [self.prefix, device_id, "token", hash_secret(token), "1"]
                await self._scripts["set_credential"](args=args, client=pipe)
            await pipe.execute()

        await self._call(run, retries=2)

    async def _device_doc(self, device_id: str) -> str | None:
        return await self._call(lambda: self.batch.command("HGET", self._k("devices"), device_id), retries=2)

    async def get_device(self, device_id: str) -> Device | None:
        doc = await self._device_doc(device_id)
        return Device.model_validate_json(doc, context=STORED) if doc else None

    async def list_devices(self, tenant_id: str | None = None) -> list[Device]:
        if tenant_id is None:
            docs: list[str | None] = list(
                (await self._call(lambda: self.r.hgetall(self._k("devices")), retries=2)).values()
            )
        else:
            ids = sorted(await self._call(lambda: self.r.smembers(self._k("tenant", tenant_id)), retries=2))
            docs = await self._call(lambda: self.r.hmget(self._k("devices"), ids), retries=2) if ids else []
        devices = [Device.model_validate_json(d, context=STORED) for d in docs if d]
        return sorted(devices, key=lambda d: d.device_id)

    async def scan_devices(self, batch: int = 500) -> AsyncIterator[list[Device]]:
        """HSCAN over the devices hash: memory holds about one page, not the registry. A device present for
        the whole scan is returned (HSCAN may return one twice while the hash is rehashed: dropped here)."""
        cursor, seen = 0, set[str]()
        while True:
            def page(cursor: int = cursor) -> Awaitable[Any]:
                return self.r.hscan(self._k("devices"), cursor, count=batch)

            cursor, found = await self._call(page, retries=2)
            fresh = [doc for device_id, doc in found.items() if device_id not in seen]
            seen.update(found)
            for at in range(0, len(fresh), batch):  # a small hash comes back whole, whatever COUNT says
                yield [Device.model_validate_json(doc) for doc in fresh[at:at + batch]]
            if cursor == 0:
                return

    async def remove_device(self, device_id: str) -> bool:
        return bool(await self._call(lambda: self._script("remove_device", device_id), retries=2))

    async def find_device(self, scheme: str, value: str) -> Device | None:
        device_id = await self._call(lambda: self.r.hget(self._k("ident"), f"{scheme}\n{value}"), retries=2)
        return await self.get_device(device_id) if device_id else None

    async def _update_device(self, device_id: str, change: Callable[[Device], None]) -> None:
        """Read-modify-write of a device document, compare-and-set so concurrent instances never lose one."""
        for _ in range(20):
            old = await self._device_doc(device_id)
            if old is None:
                return
            device = Device.model_validate_json(old, context=STORED)
            change(device)
            done = await self._call(partial(self._script, "cas_device", device_id, old, device.model_dump_json()))
            if done != 0:
                return
        raise StoreError(f"device {device_id!r} changed concurrently too often")

    async def touch_device(self, device_id: str, seen_at: datetime, location: Location | None) -> None:
        def change(device: Device) -> None:
            device.last_seen = seen_at
            if location is not None and location.has_coordinates:
                device.last_location = location

        await self._update_device(device_id, change)

    async def set_credential(self, device_id: str, scheme: str, secret: str, hashed: bool = True) -> None:
        stored = hash_secret(secret) if hashed else secret
        await self._call(lambda: self._script("set_credential", device_id, scheme, stored, int(hashed)), retries=2)

    async def get_credential(self, device_id: str, scheme: str) -> str | None:
        return await self._call(lambda: self.batch.command("HGET", self._k("cred", device_id), f"s:{scheme}"),
                                retries=2)

    async def device_for_token(self, token: str) -> Device | None:
        device_id = await self._call(lambda: self.batch.command("HGET", self._k("tokens"), hash_secret(token)),
                                     retries=2)
        return await self.get_device(device_id) if device_id else None

    # -- alerts ---------------------------------------------------------------------------------------
    async def commit(self, change: Change) -> None:
        token = secrets.token_hex(12)
        for _ in range(20):
            args = await self._commit_args(change, token)
            result = await self._call(partial(self._script, "commit", *args), retries=self.commit_retries)
            status = result[0]
            if status == "ok":
                for item_id in change.delivered_items:  # its own script: the outbox bookkeeping lives there
                    await self.mark_delivered(item_id, change.delivered_at)
                return
            if status == "dup":
                raise DuplicateMessage(result[1])
            if status == "clash":
                raise StoreError(f"outbox row already exists: {result[1]}")
            if status == "stale":
                raise ConcurrentUpdate(change.alert.alert_id)
            # "conflict": the device document changed between our read and the script; read it again.
        raise StoreError("device changed concurrently too often")

    async def _commit_args(self, change: Change, token: str) -> list[str | int | float]:
        alert = change.alert
        args: list[str | int | float] = [
            token,
            change.dedupe_key or "",
            int(self.dedupe_ttl_s * 1000) if self.dedupe_ttl_s else 0,
            alert.alert_id,
            alert.device_id,
            alert.model_dump_json(),
            int(alert.is_open),
            repr(alert.received_at.timestamp()),
            1 if change.cancel_pending_outbox else 2 if change.supersede_pending_updates else 0,
            len(change.history),
            *(h.model_dump_json() for h in change.history),
            len(change.outbox),
        ]
        for item in change.outbox:
            args.extend(_item_args(item, item.created_at or time.time()))
        guards = [
            "" if change.expected_version is None else str(change.expected_version),
            "1" if change.check_open_alert else "0",
            change.expected_open_alert or "",
            str(len(change.extra_dedupe_keys)),
            *change.extra_dedupe_keys,
        ]
        if change.device_location is None:
            args.extend(["", "", "", *guards])
            return args
        device_id, loc = change.device_location
        old = await self._device_doc(device_id)
        if old is None:
            args.extend(["", "", "", *guards])
            return args
        device = Device.model_validate_json(old, context=STORED)
        device.last_location = loc
        device.last_seen = alert.updated_at
        args.extend([device_id, old, device.model_dump_json(), *guards])
        return args

    async def get_alert(self, alert_id: str) -> Alert | None:
        doc = await self._call(lambda: self.batch.command("GET", self._k("alert", alert_id)), retries=2)
        return Alert.model_validate_json(doc, context=STORED) if doc else None

    async def open_alert_for_device(self, device_id: str) -> Alert | None:
        ids = await self._call(lambda: self.batch.command("ZREVRANGE", self._k("aopen", device_id), 0, 0), retries=2)
        return await self.get_alert(ids[0]) if ids else None

    async def history(self, alert_id: str) -> list[HistoryEntry]:
        rows = await self._call(lambda: self.r.lrange(self._k("hist", alert_id), 0, -1), retries=2)
        return [HistoryEntry.model_validate_json(r, context=STORED) for r in rows]

    async def append_history(self, alert_id: str, entries: Sequence[HistoryEntry]) -> None:
        docs = [h.model_dump_json() for h in entries]
        if not docs:
            return
        # One script: only for a stored alert (retention deletes hist:<id> with the alert). Not retried:
        # a reply lost after the write could record a delivery twice.
        await self._call(partial(self._script, "append_history", alert_id, *docs))

    async def alerts_for_dedupe(self, dedupe_keys: Sequence[str]) -> dict[str, str]:
        if not dedupe_keys:
            return {}
        keys = [self._k("dd", key) for key in dedupe_keys]
        found = await self._call(lambda: self.batch.command("MGET", *keys), retries=2)
        return {key: alert_id for key, alert_id in zip(dedupe_keys, found, strict=True) if alert_id is not None}

    async def contact_sent(self, alert_id: str) -> bool:
        return any(
            (i.state in ("delivered", "inflight") or i.attempts > 0) and not i.route.startswith("notify:")
            for i in await self.outbox_items(alert_id)  # emergency contacts' rows are not the platform's
        )

    # -- outbox ---------------------------------------------------------------------------------------
    async def lease(self, limit: int, lease_s: float, now: float) -> list[OutboxItem]:
        if limit <= 0:
            return []
        # Not retried: a lease whose reply was lost simply expires and the rows are leased again.
        rows = await self._call(lambda: self._script("lease", repr(float(now)), repr(now + lease_s), limit))
        return [_item_from_hash(_pairs(r)) for r in rows]

    async def mark_delivered(self, item_id: str, now: float) -> None:
        # Worth persisting through a short Redis outage: if this is lost, the row's lease expires and the
        # contact is delivered a second time. The token makes the retries safe to repeat.
        token = secrets.token_hex(12)
        await self._call(lambda: self._script("delivered", item_id, repr(float(now)), token), retries=self.mark_retries)

    async def reschedule(self, item_id: str, next_attempt_at: float, error: str, attempts: int) -> None:
        await self._call(
            lambda: self._script("reschedule", item_id, repr(float(next_attempt_at)), error[:500], attempts),
            retries=2,
        )

    async def mark_dead(self, item_id: str, error: str, attempts: int) -> None:
        await self._call(lambda: self._script("dead", item_id, error[:500], attempts), retries=2)

    async def mark_fallback_sent(self, item_id: str) -> None:
        key = self._k("oi", item_id)

        async def run() -> None:
            if await self.r.exists(key):
                await self.r.hset(key, "fallback_sent", "1")

        await self._call(run, retries=2)

    async def outbox_stats(self, now: float, overdue_attempts: int) -> OutboxStats:
        async def run() -> list[Any]:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._k("ocount"))
                pipe.zcount(self._k("ocrit"), overdue_attempts, "+inf")
                pipe.zrange(self._k("oactive"), 0, 0, withscores=True)
                return cast(list[Any], await pipe.execute())

        counts, overdue, oldest = await self._call(run, retries=2)
        stats = OutboxStats()
        for state, n in counts.items():
            if hasattr(stats, state):
                setattr(stats, state, int(n))
        stats.critical_overdue = int(overdue)
        stats.oldest_pending_age_s = max(0.0, now - oldest[0][1]) if oldest and oldest[0][1] else 0.0
        return stats

    async def outbox_items(self, alert_id: str) -> list[OutboxItem]:
        async def run() -> list[dict[str, str]]:
            ids = await self.r.zrange(self._k("oa", alert_id), 0, -1)
            if not ids:
                return []
            async with self.r.pipeline(transaction=False) as pipe:
                for item_id in ids:
                    pipe.hgetall(self._k("oi", item_id))
                return cast(list[dict[str, str]], await pipe.execute())

        return [_item_from_hash(h) for h in await self._call(run, retries=2) if h]

    # -- retention ------------------------------------------------------------------------------------
    async def purge_closed(self, before: datetime) -> int:
        total = 0
        while True:
            n = int(await self._call(lambda: self._script("purge", repr(before.timestamp()), 500), retries=2))
            total += n
            if n < 500:
                break
        # Audit entries are stream entries whose ids carry the time they were written.
        min_id = f"{int(before.timestamp() * 1000)}-0"
        await self._call(lambda: self.r.xtrim(self._k("audit"), minid=min_id, approximate=False), retries=2)
        return total

    # -- audit ----------------------------------------------------------------------------------------
    async def audit(self, at: datetime, actor: str, action: str, subject: str, detail: str = "") -> None:
        # An append-only log is what a stream is for; XADD ids also give a server-side time order.
        fields = {"at": at.isoformat(), "actor": actor, "action": action, "subject": subject, "detail": detail}
        # Bounded: MAXLEN ~ lets Redis trim whole stream nodes cheaply (the retention purge trims by age).
        await self._call(
            lambda: self.r.xadd(self._k("audit"), fields, maxlen=self.audit_maxlen, approximate=True)
        )

    async def audit_log(self, count: int = 100) -> list[dict[str, str]]:
        """The most recent audit entries, oldest first (not part of the Store contract)."""
        rows = await self._call(lambda: self.r.xrevrange(self._k("audit"), count=count), retries=2)
        return [dict(fields) for _, fields in reversed(rows)]

    # -- check-in timers ------------------------------------------------------------------------------
    async def put_checkin(self, row: CheckinRow, expected_version: int | None) -> int:
        # Never retried: a retry after a lost reply would find its own write and report a conflict.
        expected = "" if expected_version is None else str(expected_version)
        version = int(await self._call(lambda: self._script(
            "put_checkin", row.device_id, row.timer_id, row.doc, int(row.active), repr(float(row.next_at)), expected)))
        if version < 0:
            raise ConcurrentUpdate(row.timer_id)
        return version

    async def get_checkin(self, device_id: str) -> CheckinRow | None:
        values = await self._call(lambda: self.r.hmget(self._k("ck", device_id), _CHECKIN_FIELDS), retries=2)
        return _checkin_row(device_id, values)

    async def lease_checkins(self, now: float, lease_s: float, limit: int) -> list[CheckinRow]:
        rows = await self._call(lambda: self._script(
            "lease_checkins", repr(float(now)), repr(float(now + lease_s)), limit))
        found = [_checkin_row(r[0], r[1:]) for r in rows]
        return [r for r in found if r is not None]

    async def next_checkin_at(self) -> float | None:
        first = await self._call(lambda: self.r.zrange(self._k("ckdue"), 0, 0, withscores=True), retries=2)
        return float(first[0][1]) if first else None


def dump_keys(store: RedisStore) -> Callable[[], Awaitable[list[str]]]:
    """For tests and operators: every key of the namespace (SCAN, never KEYS)."""

    async def run() -> list[str]:
        return sorted([k async for k in store.r.scan_iter(match=store.prefix + "*", count=500)])

    return run


__all__ = ["RedisStore", "dump_keys", "parse_url"]
