"""Errors as RFC 9457 problem details (``application/problem+json``), never a stack trace."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("tower.api")
PROBLEM_JSON = "application/problem+json"


class ProblemDetails(BaseModel):
    """An error, as RFC 9457 describes it (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str = Field(description="What went wrong and what to do about it.")
    instance: str = Field(description="The path that was asked for.")
    errors: list[dict[str, Any]] | None = Field(None, description="Invalid input: each location and what is wrong.")
    service: str | None = Field(None, description="503: the service that is unavailable.")
    checks: dict[str, str] | None = Field(None, description="/ready: each service's state.")


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


# The errors each kind of operation can answer, documented as problem details in the OpenAPI
# document (FastAPI's own 422 model, HTTPValidationError, is not what the API sends).
_PROBLEMS = {
    "400": "The body could not be parsed",
    "401": "A bearer token is needed (TOWER_API_TOKEN)",
    "403": "The bearer token is wrong",
    "404": "Unknown id",
    "409": "Conflicts with what exists (a used scene id, an attempt not refined yet)",
    "413": "The body is over TOWER_API_MAX_BODY_BYTES",
    "415": "Unsupported content type",
    "422": "Invalid input",
    "503": "Kafka or PostgreSQL is unavailable",
}


def _codes(path: str, method: str, operation: dict[str, Any]) -> set[str]:
    codes = set()
    if method == "post":
        codes |= {"400", "413", "422"}
    if operation.get("parameters"):
        codes.add("422")
    if "{" in path or path.endswith("/feedback/submit"):
        codes.add("404")
    if path.startswith(("/api/", "/media/")):
        codes |= {"401", "403"}
        if not path.endswith("/scene/plan"):
            codes.add("503")
    if path.endswith(("/workflow/integrate", "/batches", "/feedback/submit")):
        codes.add("409")
    if path.endswith("/batches") and method == "post":
        codes.add("415")
    return codes


def install_problem_openapi(app: FastAPI) -> None:
    """Document every error answer as ``application/problem+json`` :class:`ProblemDetails`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ProblemDetails"] = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for code in _codes(path, method, operation) | {c for c in responses if c in _PROBLEMS}:
                    described = responses.get(code, {}).get("description") or _PROBLEMS[code]
                    responses[code] = {"description": described, "content": problem}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
