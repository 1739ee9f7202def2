"""The dashboard's aiohttp app: a static page plus a JSON API over ClickHouse.

Bad filters get 400 with a message, an unreachable ClickHouse 502; nothing leaks a stack trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from driftline.apps.dashboard import queries as q
from driftline.apps.dashboard.annotate import Annotator
from driftline.apps.dashboard.store import ClickHouseStore, StoreError
from driftline.settings import Settings

log = logging.getLogger("driftline.dashboard")
STATIC_DIR = Path(str(resources.files("driftline.apps.dashboard") / "static"))
STORE_KEY = web.AppKey("store", ClickHouseStore)
SECURITY_HEADERS = {
    # everything the page needs is served from here: no CDN, no inline script
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@web.middleware
async def _errors(request: web.Request, handler):
    try:
        response = await handler(request)
    except q.FilterError as exc:
        response = web.json_response({"error": str(exc)}, status=400)
    except StoreError as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        response = web.json_response({"error": str(exc)}, status=502)
    response.headers.update(SECURITY_HEADERS)
    return response


async def _filters(request: web.Request) -> q.Filters:
    """The request's filters; the default range (``all``) is the span of the task's data."""
    params = dict(request.query)
    span = None
    if params.get("range", q.ALL) == q.ALL and "from" not in params and "to" not in params:
        task = params.get("task", "")
        rows = await request.app[STORE_KEY].query(q.SPAN_SQL, {"task": "" if task == "all" else task})
        if rows and rows[0]["n"]:
            span = (int(rows[0]["first"]), int(rows[0]["last"]))
    return q.parse_filters(params, now=time.time(), span=span)


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _annotate(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "annotate.html", headers={"Cache-Control": "no-cache"})


async def _health(request: web.Request) -> web.Response:
    await request.app[STORE_KEY].query("SELECT 1")
    return web.json_response({"ok": True})


async def _tasks(request: web.Request) -> web.Response:
    rows = await request.app[STORE_KEY].query(q.TASKS_SQL)
    return web.json_response({"tasks": [r["task"] for r in rows], "ranges": [q.ALL, *q.RANGES]})


async def _labels(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.LABELS_SQL, f.params())
    return web.json_response(q.shape_labels(rows, f))


async def _latency(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.LATENCY_SQL, f.params())
    return web.json_response(q.shape_latency(rows, f))


async def _sentiment(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.SENTIMENT_SQL, f.params())
    return web.json_response(q.shape_sentiment(rows, f))


async def _accuracy(request: web.Request) -> web.Response:
    f = await _filters(request)
    store = request.app[STORE_KEY]
    rows, serving, timeline, graded = await asyncio.gather(
        store.query(q.ACCURACY_SQL, f.params()),
        store.query(q.SERVING_SQL, f.params()),
        store.query(q.TIMELINE_SQL, f.params()),
        store.query(q.CALIBRATION_SQL, f.params()),
    )
    fitted = await asyncio.to_thread(q.temperatures, graded)
    estimated = await store.query(q.ESTIMATE_SQL, q.estimate_params(f, fitted))
    return web.json_response(q.shape_accuracy(rows, serving, timeline, f, estimated, fitted))


async def _alerts(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.TIMELINE_SQL, f.params())
    return web.json_response(q.shape_timeline(rows, f))


async def _shadow(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.SHADOW_SQL, f.params())
    return web.json_response(q.shape_shadow(rows, f))


async def _event(request: web.Request) -> web.Response:
    params = q.event_params(dict(request.query))
    store = request.app[STORE_KEY]
    parts = await asyncio.gather(*(store.query(sql, params) for sql in q.EVENT_QUERIES.values()))
    event = q.shape_event(dict(zip(q.EVENT_QUERIES, parts, strict=True)))
    if event is None:
        return web.json_response(
            {"error": f"no label row for {params['event_id']!r} of {params['task']}"}, status=404
        )
    return web.json_response(event)


async def _explanations(request: web.Request) -> web.Response:
    f = await _filters(request)
    rows = await request.app[STORE_KEY].query(q.EXPLANATIONS_SQL, f.params())
    return web.json_response(q.shape_explanations(rows, f))


def create_app(store: ClickHouseStore, annotator: Annotator | None = None) -> web.Application:
    """The aiohttp application: JSON API routes, the pages and static files over ``store``; the
    annotator routes when ``annotator`` is given."""
    app = web.Application(middlewares=[_errors])
    app[STORE_KEY] = store
    app.router.add_get("/", _index)
    app.router.add_get("/annotate", _annotate)
    if annotator is not None:
        annotator.add_routes(app)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/api/tasks", _tasks)
    app.router.add_get("/api/labels", _labels)
    app.router.add_get("/api/latency", _latency)
    app.router.add_get("/api/sentiment", _sentiment)
    app.router.add_get("/api/accuracy", _accuracy)
    app.router.add_get("/api/alerts", _alerts)
    app.router.add_get("/api/explanations", _explanations)
    app.router.add_get("/api/event", _event)
    app.router.add_get("/api/shadow", _shadow)
    app.router.add_static("/static/", STATIC_DIR, show_index=False)

    async def _close(app: web.Application) -> None:
        app[STORE_KEY].close()

    app.on_cleanup.append(_close)
    return app


def serve(
    host: str, port: int, store: ClickHouseStore, ready: Any = None, settings: Settings | None = None
) -> None:
    """Run until interrupted; ``ready`` (a callable) is told the bound URL once listening. With
    ``settings``, the annotator routes are served too."""

    async def _main() -> None:
        annotator = Annotator(settings, store) if settings is not None else None
        runner = web.AppRunner(create_app(store, annotator), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        if ready is not None:
            ready(f"http://{host}:{port}/")
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
