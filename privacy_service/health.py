"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get

from privacy_service.errors import problem


@get("/healthz", tags=["ops"], opt={"public": True}, summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    tags=["ops"],
    opt={"public": True, "problems": (503,)},
    summary="Readiness: database, keys and policy usable",
)
async def readyz(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        await state.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"failed: {type(exc).__name__}"
    try:
        checks["keys"] = f"ok (KEK v{await state.runtime.provider.current_version()})"
    except Exception as exc:
        checks["keys"] = f"failed: {type(exc).__name__}"
    checks["policy"] = f"ok (version {state.policy.version})"
    # Not a condition of readiness: without Redis the limits fall back to per-process counts
    # (docs/operations/scaling.md), and taking every process out of rotation would be the outage.
    limits = await state.rate_limiter.status()
    if all(value.startswith("ok") for value in checks.values()):
        return Response({"status": "ready", "checks": checks, "limits": limits})
    return problem(
        503, "unavailable", "Service unavailable", "a dependency is not ready", request, checks=checks, limits=limits
    )
