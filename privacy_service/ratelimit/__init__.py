"""Rate limits, lock-outs and code-mail quotas: token buckets and sliding logs.

Counted in Redis when ``PRIVACY_REDIS_URL`` is set, so that every API process shares one count
(:mod:`.shared`); else in each process's memory, the embedded default (:mod:`.memory`). The
interface is :class:`Limiter`; :mod:`.http` holds what requests meet (the per-address guard, the
code-mail quota).
"""

from privacy_service.ratelimit.base import Limit, Limiter, LimitsUnavailable, RateLimited, check
from privacy_service.ratelimit.http import (
    DAY_SECONDS,
    CodeQuota,
    address_key,
    client_address,
    client_key,
    code_quota,
    ip_rate_limit,
    network_key,
)
from privacy_service.ratelimit.memory import LocalLimiter, RateLimiter
from privacy_service.ratelimit.shared import RedisLimiter, build_limiter

__all__ = [
    "DAY_SECONDS",
    "CodeQuota",
    "Limit",
    "Limiter",
    "LimitsUnavailable",
    "LocalLimiter",
    "RateLimited",
    "RateLimiter",
    "RedisLimiter",
    "address_key",
    "build_limiter",
    "check",
    "client_address",
    "client_key",
    "code_quota",
    "ip_rate_limit",
    "network_key",
]
