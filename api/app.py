"""The API application: :func:`create_app` builds it from a :class:`Settings`; ``tower api`` serves it."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry

from api.backends import Backends
from api.live_hub import LiveHub
from api.middleware import BodyLimit, RequestMetrics
from api.problems import install_problem_handlers, install_problem_openapi
from api.routes import assembly, director, live, media, memory, ops, reads
from foundation.settings import Settings

log = logging.getLogger("tower.api")
PANEL_DIST = Path(__file__).resolve().parents[1] / "panel" / "dist"
DESCRIPTION = """\
Tower's director API (the seed's Tower service, port 8328). Planning and prompt writing answer
at once; `workflow/integrate`, `feedback/submit` and `batches` produce events and answer 202;
reads come from the PostgreSQL projections; `scenes/{id}/events` streams a scene live from Kafka.
Writes need `Authorization: Bearer <TOWER_API_TOKEN>` when a token is set. Errors are RFC 9457
problem details.
"""


def create_app(settings: Settings) -> FastAPI:
    backends = Backends(settings)
    live_hub = LiveHub(settings, max_scenes=settings.api_live_scenes, scene_buffer=settings.api_live_buffer,
                       queue_size=settings.api_live_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The ~100k objects of the imports never die: out of the collector's way, its full
        # collections (30-40 ms each, measured) stop being the API's p99.
        gc.collect()
        gc.freeze()
        yield
        await live_hub.close()
        await backends.close()

    app = FastAPI(title="Tower", version="1.0", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.backends = backends
    app.state.live_hub = live_hub
    app.state.registry = CollectorRegistry()
    install_problem_handlers(app)
    install_problem_openapi(app)
    for module in (director, reads, assembly, memory, live, media, ops):
        app.include_router(module.router)

    panel = settings.panel_dir or PANEL_DIST
    if (panel / "index.html").is_file():
        serve_panel(app, panel)
    else:
        log.info("no built DirectorPanel in %s (make panel); / redirects to /docs", panel)

        @app.get("/", include_in_schema=False)
        async def root() -> RedirectResponse:
            return RedirectResponse("/docs")

    if settings.api_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type",
                                                                          "Last-Event-ID"])
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics, registry=app.state.registry)
    return app


def serve_panel(app: FastAPI, panel: Path) -> None:
    """The built DirectorPanel: ``/`` is its page, ``/assets`` its bundles, and the few other files
    Vite puts at the top. Explicit routes rather than a catch-all mount, so the API's own 404 and
    405 answers stay what they are."""
    index = panel / "index.html"

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if (panel / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=panel / "assets"), name="panel-assets")
    for extra in panel.iterdir():
        if extra.is_file() and extra.name != "index.html":
            app.add_api_route(f"/{extra.name}", _file_route(extra), methods=["GET"], include_in_schema=False)


def _file_route(path: Path):  # noqa: ANN202 - a route endpoint
    async def endpoint() -> FileResponse:
        return FileResponse(path)

    return endpoint


def serve(settings: Settings) -> None:
    """Run the API with uvicorn until stopped (SIGINT/SIGTERM)."""
    import uvicorn

    from api.security import check_bind

    check_bind(settings)
    log.info("Tower API on http://%s:%d (docs at /docs)", settings.api_host, settings.api_port)
    uvicorn.run(create_app(settings), host=settings.api_host, port=settings.api_port, log_level="warning",
                access_log=False, proxy_headers=False, server_header=False)
