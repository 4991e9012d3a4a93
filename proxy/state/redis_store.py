"""Redis backends: ``redis://``, ``rediss://``, ``redis+sentinel://`` and ``redis+cluster://``.

redis.asyncio (hiredis parser). Every operation is one Lua script, so it is atomic; a script
touching several keys (the sliding window's two buckets) builds them from one hash tag
(``sg:{rl|ip|192.0.2.1|conn}:28512``) so they share a Cluster slot. Scripts are sent with
EVALSHA and loaded with EVAL on NOSCRIPT. Socket timeouts equal ``store.timeout``; the
connection pool reconnects by itself after Redis comes back.

URLs:
- ``redis://[:password@]host:port/db``, ``rediss://...`` (TLS)
- ``redis+sentinel://[:password@]host:port,host:port/service[/db]``
- ``redis+cluster://[:password@]host:port,host:port``
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from proxy.state.base import Store, window_buckets

WINDOW = """
local c = 0
if tonumber(ARGV[1]) > 0 then
  c = redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  c = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local p = tonumber(redis.call('GET', KEYS[2]) or '0')
return tostring(c + p * tonumber(ARGV[3]))
"""
INCR = """
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return c
"""
SLOT_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  if n >= tonumber(ARGV[4]) then return {0, n} end
  n = n + 1
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, n}
"""
SLOT_REFRESH = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
GREYLIST = """
local now, delay, win = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local r = redis.call('HMGET', KEYS[1], 'f', 'p')
if r[1] then
  if r[2] == '1' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {'known', '0'}
  end
  local el = now - tonumber(r[1])
  if el < delay then return {'early', tostring(delay - el)} end
  if el <= delay + win then
    redis.call('HSET', KEYS[1], 'p', '1')
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {'pass', '0'}
  end
end
redis.call('HSET', KEYS[1], 'f', ARGV[1], 'p', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'new', ARGV[2]}
"""
DECAY = """
local now, add_a, add_r, hl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'a', 'r', 't')
local a, rj = 0, 0
if r[1] then
  local f = 0.5 ^ (math.max(0, now - tonumber(r[3])) / hl)
  a, rj = tonumber(r[1]) * f, tonumber(r[2]) * f
end
if add_a ~= 0 or add_r ~= 0 then
  a, rj = a + add_a, rj + add_r
  redis.call('HSET', KEYS[1], 'a', tostring(a), 'r', tostring(rj), 't', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return {tostring(a), tostring(rj)}
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def parse_hosts(netloc: str, default_port: int) -> tuple[str, list[tuple[str, int]]]:
    """``[:password@]h:p,h:p`` -> (password, [(host, port)])."""
    password = ""
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1] if ":" in auth else auth)
    hosts = []
    for raw in netloc.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif ":" in item:
            host, p = item.rsplit(":", 1)
            port = int(p)
        else:
            host, port = item, default_port
        hosts.append((host, port))
    if not hosts:
        raise ValueError("no host in store URL")
    return password, hosts


def make_client(url: str, timeout: float, password: str = "") -> Any:
    """A redis.asyncio client (Redis or RedisCluster) for one of the supported URLs."""
    opts: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        client = Redis.from_url(url, **opts)
        if password and not client.connection_pool.connection_kwargs.get("password"):
            client = Redis.from_url(url, password=password, **opts)
        return client
    parts = urlsplit(url)
    pw, hosts = parse_hosts(parts.netloc, 26379 if scheme == "redis+sentinel" else 6379)
    pw = pw or password
    if scheme == "redis+sentinel":
        from redis.asyncio.sentinel import Sentinel

        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ValueError("redis+sentinel:// needs the service name: redis+sentinel://h:p,h:p/service")
        service = path[0]
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            hosts,
            sentinel_kwargs={
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
                "password": pw or None,
            },
            **opts,
            password=pw or None,
            db=db,
        )
        client = sentinel.master_for(service)
        client._spamgate_sentinels = sentinel.sentinels  # closed with the client (RedisStore.close)
        return client
    if scheme == "redis+cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        opts.pop("health_check_interval")
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in hosts], password=pw or None, **opts)
    raise ValueError(f"unsupported store URL scheme: {scheme!r}")


class RedisStore(Store):
    def __init__(
        self, url: str, timeout: float, prefix: str = "sg:", password: str = "", down_backoff: float = 0.0
    ) -> None:
        super().__init__(timeout, prefix, down_backoff)
        self.url = url
        scheme = url.split("://", 1)[0].lower()
        self.backend = {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(scheme, "redis")
        self.client = make_client(url, timeout, password)
        self._shas: dict[str, str] = {}

    def tag(self, name: str) -> str:
        """The hash-tagged base of a multi-key operation: every key built from it shares a slot."""
        return f"{self.prefix}{{{name}}}"

    def _k(self, name: str) -> str:
        return self.prefix + name

    async def _script(self, script: str, keys: list[str], args: list[Any]) -> Any:
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        try:
            return await self.client.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(script, len(keys), *keys, *args)

    def window_keys(self, name: str, window: float, now: float) -> tuple[list[str], float]:
        bucket, weight = window_buckets(window, now)
        base = self.tag(name)
        return [f"{base}:{bucket}", f"{base}:{bucket - 1}"], weight

    async def _window_hit(self, name: str, window: float, cost: int, now: float) -> float:
        keys, weight = self.window_keys(name, window, now)
        out = await self._script(WINDOW, keys, [cost, _ms(2 * window), repr(weight)])
        return float(out)

    async def _incr(self, name: str, ttl: float) -> int:
        return int(await self._script(INCR, [self._k(name)], [_ms(ttl)]))

    async def _get(self, name: str) -> str | None:
        v = await self.client.get(self._k(name))
        return None if v is None else v.decode() if isinstance(v, bytes) else str(v)

    async def _set(self, name: str, value: str, ttl: float) -> None:
        await self.client.set(self._k(name), value, px=_ms(ttl))

    async def _delete(self, name: str) -> None:
        await self.client.delete(self._k(name))

    async def _slot_acquire(
        self, name: str, slot: str, limit: int, ttl: float, now: float
    ) -> tuple[bool, int]:
        ok, n = await self._script(
            SLOT_ACQUIRE, [self._k(name)], [repr(now), repr(now + ttl), slot, limit, _ms(ttl)]
        )
        return bool(ok), int(n)

    async def _slot_refresh(self, name: str, slot: str, ttl: float, now: float) -> None:
        await self._script(SLOT_REFRESH, [self._k(name)], [repr(now + ttl), slot, _ms(ttl)])

    async def _slot_release(self, name: str, slot: str) -> None:
        await self.client.zrem(self._k(name), slot)

    async def _greylist(
        self, name: str, delay: float, window: float, lifetime: float, now: float
    ) -> tuple[str, float]:
        state, secs = await self._script(
            GREYLIST,
            [self._k(name)],
            [repr(now), repr(delay), repr(window), _ms(lifetime), _ms(delay + window)],
        )
        return (state.decode() if isinstance(state, bytes) else str(state)), float(secs)

    async def _decay(  # noqa: PLR0917
        self, name: str, accepted: float, rejected: float, half_life: float, ttl: float, now: float
    ) -> tuple[float, float]:
        a, r = await self._script(
            DECAY, [self._k(name)], [repr(now), repr(accepted), repr(rejected), repr(half_life), _ms(ttl)]
        )
        return float(a), float(r)

    async def _scan(self, prefix: str, limit: int, now: float) -> list[tuple[str, str]]:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._k(prefix)) + "*"
        n, out = len(self.prefix), []
        async for key in self.client.scan_iter(match=pattern, count=500):
            k = key.decode() if isinstance(key, bytes) else str(key)
            try:
                v = await self.client.get(k)
            except ResponseError:  # not a string (a hash: reputation history): the name only
                v = b""
            if v is not None:
                out.append((k[n:], v.decode() if isinstance(v, bytes) else str(v)))
                if len(out) >= limit:
                    break
        return out

    async def _ping(self) -> None:
        await self.client.ping()

    async def _window_clear(self, name: str, window: float, now: float) -> None:
        keys, _ = self.window_keys(name, window, now)
        await self.client.delete(*keys)

    async def close(self) -> None:
        for c in [self.client, *getattr(self.client, "_spamgate_sentinels", [])]:
            try:
                await c.aclose()
            except Exception:  # noqa: S110 - closing a dead connection is not an error worth raising
                pass
