"""Errors as RFC 9457 problem details (``application/problem+json``), never a stack trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tower.api")
PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An error the API answers with: an HTTP status, a one-line title and a detail that says what to do."""

    def __init__(self, status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None,
                 **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers
        self.extensions = extensions


class ServiceUnavailable(Problem):
    """A service the request needs (Kafka, PostgreSQL) does not answer: 503, naming it."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(503, f"{service} is unavailable: {detail}", title=f"{service} unavailable",
                         headers={"Retry-After": "5"}, service=service)


def problem_response(status: int, title: str, detail: str, instance: str, headers: dict[str, str] | None = None,
                     **extensions: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "instance": instance,
            **extensions}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, request.url.path, exc.headers, **exc.extensions)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        phrase = HTTPStatus(exc.status_code).phrase
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else _default_detail(exc.status_code, request)
        return problem_response(exc.status_code, phrase, detail, request.url.path, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"location": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")}
            for err in exc.errors()[:20]
        ]
        summary = "; ".join(f"{e['location']}: {e['message']}" for e in errors[:3])
        return problem_response(422, "Invalid request", f"the request is not valid: {summary}", request.url.path,
                                errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error answering %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(500, "Internal Server Error",
                                "the server failed to answer this request; the error is in its log", request.url.path)


def _default_detail(status: int, request: Request) -> str:
    if status == 404:
        return f"nothing at {request.url.path}; the API is described at /docs"
    if status == 405:
        return f"{request.method} is not allowed on {request.url.path}"
    return HTTPStatus(status).description or HTTPStatus(status).phrase
