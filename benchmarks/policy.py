"""The published policy (issue 4): serving it must cost about what serving a constant costs.

``GET /v1/policy`` through the full application (middleware, security headers, language
negotiation, validators) against a bare Litestar app whose only endpoint returns a constant JSON
document of the same size. Both run in process through ``httpx.ASGITransport``, in interleaved
rounds; rendering is cached per version, language and format, so the request path only negotiates
and copies bytes. The HTML page is measured the same way, for information.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx
from litestar import Litestar, MediaType, Response, get

from benchmarks.common import (
    BenchContext,
    Figure,
    Op,
    Round,
    interleaved_throughput,
    progress,
    ratio_figure,
)
from privacy_service.app import create_app

APPLICATION = "policy"
BARE = "bare"
RATIO_TARGET = 0.80


def _bare_app(document: Any, html: str) -> Litestar:
    """The baseline: Litestar with nothing but two constant endpoints."""

    @get("/constant.json", sync_to_thread=False)
    def constant_json() -> Any:
        return document

    @get("/constant.html", sync_to_thread=False, media_type=MediaType.HTML)
    def constant_html() -> Response[str]:
        return Response(html, media_type=MediaType.HTML)

    return Litestar([constant_json, constant_html], debug=False)


def _getter(client: httpx.AsyncClient, url: str, headers: Mapping[str, str] | None = None) -> Op:
    async def fetch() -> None:
        response = await client.get(url, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")

    return fetch


def _figure(name: str, results: dict[str, list[Round]], workers: int, size: int, target: bool) -> Figure:
    return ratio_figure(
        name,
        results[APPLICATION],
        results[BARE],
        target=RATIO_TARGET if target else None,
        target_text=f"≥ {RATIO_TARGET:.2f}x",
        details={
            "workers": workers,
            "body_bytes": size,
            "baseline": "bare Litestar app returning a constant of the same size (in process, httpx.ASGITransport)",
        },
    )


async def policy_throughput(ctx: BenchContext) -> list[Figure]:
    config = ctx.config
    app = create_app(runtime=ctx.runtime)
    figures: list[Figure] = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        policy_json = (await client.get("/v1/policy")).content
        privacy_html = (await client.get("/privacy", headers={"Accept-Language": "zh-CN,zh;q=0.9"})).text
        bare = _bare_app(json.loads(policy_json), privacy_html)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://bench") as baseline:
            constant = (await baseline.get("/constant.json")).content
            progress.log(f"policy JSON {len(policy_json)} bytes; bare constant {len(constant)} bytes")
            cases = [
                ("GET /v1/policy (JSON, en)", "/v1/policy", {}, "/constant.json", len(policy_json), True),
                (
                    "GET /privacy (HTML, zh by Accept-Language)",
                    "/privacy",
                    {"Accept-Language": "zh-CN,zh;q=0.9"},
                    "/constant.html",
                    len(privacy_html.encode()),
                    False,
                ),
            ]
            for name, url, headers, bare_url, size, has_target in cases:
                results = await interleaved_throughput(
                    name,
                    {APPLICATION: _getter(client, url, headers), BARE: _getter(baseline, bare_url)},
                    workers=config.workers,
                    rounds=config.rounds,
                    seconds=config.round_seconds,
                    warmup=config.warmup_seconds,
                )
                figures.append(_figure(name, results, config.workers, size, has_target))
    return figures
