"""Bearer-token protection: every write needs ``TOWER_API_TOKEN`` (when one is set); reads too
with ``TOWER_API_PROTECT_READS`` (a GET may pass it as ``?access_token=``, for browsers' event
streams and images). No token, or a malformed header: 401; a wrong token: 403."""

from __future__ import annotations

import ipaddress
import secrets

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import Problem
from foundation.settings import Settings

bearer = HTTPBearer(auto_error=False, description="TOWER_API_TOKEN")


def _check(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if settings.api_token is None:
        return
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "this operation needs `Authorization: Bearer <TOWER_API_TOKEN>`",
                      headers={"WWW-Authenticate": 'Bearer realm="tower"'})
    if not secrets.compare_digest(credentials.credentials.encode(), settings.api_token.get_secret_value().encode()):
        raise Problem(403, "the bearer token is not TOWER_API_TOKEN")


# async: FastAPI runs a plain-function dependency in a worker thread, once per request.
async def require_write(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    _check(request.app.state.settings, credentials)


async def require_read(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    settings: Settings = request.app.state.settings
    if settings.api_protect_reads:
        # A browser's EventSource and <img> cannot send headers: GETs may carry the token as
        # ?access_token= (RFC 6750, section 2.3).
        if credentials is None and request.method == "GET" and "access_token" in request.query_params:
            credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=request.query_params["access_token"])
        _check(settings, credentials)


def is_loopback(host: str) -> bool:
    if host in {"localhost", "ip6-localhost"}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings) -> None:
    """Refuse to serve writes to a network without a token (``ValueError`` saying what to set)."""
    if settings.api_token is None and not is_loopback(settings.api_host):
        raise ValueError(
            f"refusing to listen on {settings.api_host} without a token: set TOWER_API_TOKEN, "
            "or bind a loopback address (TOWER_API_HOST=127.0.0.1)"
        )
