"""Limits shared by every API process, in Redis (``PRIVACY_REDIS_URL``; docs/operations/scaling.md).

Same semantics as the in-memory limiter (:mod:`.memory`): token buckets with a burst and a refill
rate, and all-or-nothing sliding logs with a give-back. Each count is one Lua script run through
redis-py's ``Script`` (EVALSHA, reloaded by redis-py when Redis has forgotten it). Redis runs a script
atomically, so two processes never both take the last token, in one round trip, and without the
retry loop of a WATCH/MULTI transaction, which a flood from one address (the case a limit exists
for) would turn into a storm of retries. The ``limits`` package was the first choice; it has no
token bucket, no count over several keys at once and no give-back, which these limits need.
The clock is Redis's own (``TIME``), one clock for every process on every host. A count whose
answer was lost is retried once (:func:`connect`), so a flaky network may count a request twice,
never not at all.

Redis keys are keyed hashes of the count's name (an HMAC under a key derived from the audit key), so
a Redis dump shows no client address and no identity's index, and each key expires once it carries
nothing (a refilled bucket, an emptied log). Several deployments may share one Redis under their own
``PRIVACY_REDIS_PREFIX``. One Redis server (or a Sentinel-managed primary), not a Redis Cluster:
a count over several keys needs them on one node.

**Redis out of reach**: decided per kind of limit, never a 500.

- Token buckets (requests per address and per operator, failed operator keys per address) fall back
  to this process's own buckets: every limit stays in force, per process (with N processes, N times
  looser) until Redis answers again. Refusing instead would turn a Redis outage into an outage of
  every operator call, since every call checks the failed-key lock-out first.
- Sliding logs (the code mails to an identity in 24 hours, :func:`~.http.code_quota`) refuse: 503
  ``/problems/unavailable`` with Retry-After, nothing changed. A log started afresh per process
  would hand out a new day of mails to a victim's inbox with every outage.
- A give-back is skipped (a network keeps one mail less of its share for the day).
- A refund of bucket tokens goes to this process's buckets (a take counted in Redis stays taken).

After a failure Redis is left alone for ``pause`` seconds, so an outage adds no connection timeout
to every request; the first call after that tries again. The outage and the recovery are logged
once each (``ratelimit_redis_unavailable``, ``ratelimit_redis_recovered``), the error's type only.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Sequence

import structlog
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from privacy_service.ratelimit.base import Limit, Limiter, LimitsUnavailable
from privacy_service.ratelimit.memory import LocalLimiter

# Looked up at each use (the lines are rare: an outage, a recovery), so they follow the logging
# configuration of the moment rather than the one of a first use.
LOGGER = "privacy_service.ratelimit"

PAUSE_SECONDS = 2.0
# Redis on the same network answers in well under a millisecond: a second means it is not answering.
TIMEOUT_SECONDS = 1.0
_ERRORS = (RedisError, OSError)
_LOOK, _TAKE, _PUT_BACK = "0", "1", "2"  # what _BUCKET does with the tokens

# A token bucket. KEYS[1]: the bucket. ARGV: burst, tokens per second, cost, "1" to take ("0" to look,
# "2" to put back: never above the burst, a full bucket deleted), now in seconds ("" for Redis's clock).
# Returns nil if the tokens are there (and takes them when asked), else the seconds until they are (a
# string: a Lua number would come back as an integer).
_BUCKET = """
local burst, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now
if ARGV[5] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[5])
end
local tokens = burst
local saved = redis.call('HMGET', KEYS[1], 't', 'u')
if saved[1] then
  tokens = math.min(burst, tonumber(saved[1]) + math.max(0, now - tonumber(saved[2])) * rate)
end
local function save()
  if tokens >= burst then
    redis.call('DEL', KEYS[1])
    return
  end
  redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
  local ttl = 86400000
  if rate > 0 then ttl = math.ceil((burst - tokens) / rate * 1000) + 1000 end
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if ARGV[4] == '2' then
  tokens = math.min(burst, tokens + cost)
  save()
  return false
end
if tokens < cost then
  if rate > 0 then return tostring((cost - tokens) / rate) end
  return '3600'
end
if ARGV[4] == '1' then
  tokens = tokens - cost
  save()
end
return false
"""

# Sliding logs, all or nothing. KEYS: one sorted set of event times per quota. ARGV: window (s), now
# ("" for Redis's clock), a unique event id, then each key's limit. Returns nil if every key had room
# (the event is added to each), else the seconds until each has room (nothing added).
_LOGS = """
local window = tonumber(ARGV[1])
local now
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[2])
end
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local count = redis.call('ZCARD', key)
  if count >= limit then
    if limit > 0 then
      local oldest = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
      wait = math.max(wait, tonumber(oldest[2]) + window - now)
    else
      wait = math.max(wait, window)
    end
  end
end
if wait > 0 then return tostring(wait) end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[3])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
return false
"""


def connect(url: str) -> Redis:
    """A client that gives up fast: one immediate retry (a pooled connection dropped by a Redis
    restart is reconnected), then the caller's fallback, instead of redis-py's default backoff."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),
    )
    return client


class RedisLimiter:
    """A :class:`~privacy_service.ratelimit.base.Limiter` whose counts every process shares."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        secret: bytes,
        fallback: Limiter | None = None,
        clock: Callable[[], float] | None = None,
        pause: float = PAUSE_SECONDS,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._secret = secret
        # Where token buckets are counted while Redis is out of reach.
        self.fallback: Limiter = fallback or LocalLimiter()
        # None: Redis's clock. Tests pass their own (wall-clock seconds, the same in every process).
        self._clock = clock
        self._pause = pause
        self._retry_at = 0.0
        self._down = False
        self._bucket = client.register_script(_BUCKET)
        self._logs = client.register_script(_LOGS)

    def key(self, kind: str, name: str) -> str:
        """The Redis key of a count: opaque, fixed length, under this deployment's prefix."""
        digest = hmac.new(self._secret, f"{kind}\x00{name}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{self._prefix}{kind}:{digest}"

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _reachable(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            structlog.get_logger(LOGGER).warning(
                "ratelimit_redis_unavailable", error=type(exc).__name__, pause_seconds=self._pause
            )
        self._down = True
        self._retry_at = time.monotonic() + self._pause

    def _answered(self) -> None:
        if self._down:
            self._down = False
            structlog.get_logger(LOGGER).info("ratelimit_redis_recovered")

    async def _tokens(self, bucket: str, key: str, limit: Limit, cost: float, mode: str) -> float | None:
        if self._reachable():
            args = [repr(float(limit.burst)), repr(limit.per_minute / 60.0), repr(cost), mode]
            try:
                reply = await self._bucket(keys=[self.key("bucket", f"{bucket}\x00{key}")], args=[*args, self._now()])
            except _ERRORS as exc:
                self._failed(exc)
            else:
                self._answered()
                return None if reply is None else float(reply)
        if mode == _TAKE:
            return await self.fallback.hit(bucket, key, limit, cost)
        if mode == _PUT_BACK:
            await self.fallback.refund(bucket, key, limit, cost)
            return None
        return await self.fallback.wait(bucket, key, limit, cost)

    async def hit(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        return await self._tokens(bucket, key, limit, cost, _TAKE)

    async def wait(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> float | None:
        return await self._tokens(bucket, key, limit, cost, _LOOK)

    async def refund(self, bucket: str, key: str, limit: Limit, cost: float = 1.0) -> None:
        """Redis out of reach: put back into the fallback's bucket (where the take was counted then;
        a take counted in Redis stays taken there until refilled, the safe side)."""
        await self._tokens(bucket, key, limit, cost, _PUT_BACK)

    async def take_all(self, quotas: Sequence[tuple[str, int]], window: float) -> float | None:
        if not self._reachable():
            raise LimitsUnavailable
        keys = [self.key("log", name) for name, _ in quotas]
        args = [repr(float(window)), self._now(), secrets.token_hex(8), *(str(limit) for _, limit in quotas)]
        try:
            reply = await self._logs(keys=keys, args=args)
        except _ERRORS as exc:
            self._failed(exc)
            raise LimitsUnavailable from None
        self._answered()
        return None if reply is None else float(reply)

    async def give_back(self, key: str) -> None:
        if not self._reachable():
            return
        try:
            await self._client.zpopmax(self.key("log", key))
        except _ERRORS as exc:
            self._failed(exc)
        else:
            self._answered()

    async def status(self) -> str:
        """Asks Redis (a PING) rather than trusting the last count: a quiet process learns of an outage too."""
        try:
            await self._client.ping()
        except _ERRORS as exc:
            self._failed(exc)
            return f"per process: Redis out of reach ({type(exc).__name__})"
        self._answered()
        return "shared (Redis)"

    async def reset(self) -> None:
        """Delete this deployment's counts (every key under the prefix) and the fallback's."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self._prefix) + "*"  # the prefix taken literally
        async for name in self._client.scan_iter(match=pattern, count=1000):
            await self._client.unlink(name)
        await self.fallback.reset()

    async def close(self) -> None:
        await self._client.aclose()


def build_limiter(redis_url: str | None, *, prefix: str, secret: bytes) -> Limiter:
    """Redis when a URL is given (every process shares the counts), else this process's memory."""
    if redis_url is None:
        return LocalLimiter()
    return RedisLimiter(connect(redis_url), prefix=prefix, secret=secret)
