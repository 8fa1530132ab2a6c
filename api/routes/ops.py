"""Operations: liveness, readiness (Kafka and PostgreSQL answer) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.models import Health, Readiness
from api.problems import Problem
from api.routes.director import backends_of

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness: the API process answers")
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: {"description": "Kafka or PostgreSQL is down"}},
            summary="Readiness: Kafka and PostgreSQL answer (503 naming what is down)")
async def ready(request: Request) -> Readiness:
    checks = await backends_of(request).check()
    down = {name: why for name, why in checks.items() if why != "ok"}
    if down:
        raise Problem(503, "; ".join(down.values()), title="Not ready", headers={"Retry-After": "5"}, checks=checks)
    return Readiness(status="ready", checks=checks)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics of the API",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
