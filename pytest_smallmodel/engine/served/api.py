"""JSON over HTTP to a llama.cpp server or an OpenAI-compatible endpoint, nothing more.

Every request is bounded by a timeout and is sent once: a retry could land on a server whose
state changed in between, and a result that needed a retry is not a result to compare. Errors
name the URL and what went wrong, so a failed test says which server to look at.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pytest_smallmodel.common.errors import EngineError


class ServerError(EngineError):
    """The server answered with an error status or with something that is not JSON."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ServerUnreachable(ServerError):
    """Nothing answered at the URL (refused, reset, name not found, timed out)."""


class ServerAPI:
    """A server's base URL and the JSON calls made to it."""

    def __init__(self, base_url: str, *, timeout: float, unreachable_hint: str = "") -> None:
        """``unreachable_hint`` is added to the message when nothing answers (a server that
        crashed): what to check about the server behind this URL."""
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise EngineError(f"{base_url!r} is not an http(s) URL of a server")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.unreachable_hint = unreachable_hint
        self._parsed = parsed

    def get(self, path: str, *, timeout: float | None = None) -> Any:
        return self._request("GET", path, None, timeout)

    def post(self, path: str, body: Mapping[str, Any], *, timeout: float | None = None) -> Any:
        return self._request("POST", path, body, timeout)

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        host = self._parsed.hostname or ""
        port = self._parsed.port
        if self._parsed.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def _request(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float | None
    ) -> Any:
        url = self.base_url + path
        limit = self.timeout if timeout is None else timeout
        prefix = self._parsed.path.rstrip("/")
        connection = self._connection(limit)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, prefix + path, body=payload, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except TimeoutError:
            raise ServerUnreachable(
                f"{method} {url} did not answer within {limit:g} s (the `timeout` setting): "
                "the server is overloaded or stuck; raise `timeout` if it is just slow"
            ) from None
        except (OSError, http.client.HTTPException) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else error
            if isinstance(error, socket.gaierror):
                reason = f"host name not found ({error})"
            hint = f" {self.unreachable_hint}" if self.unreachable_hint else ""
            raise ServerUnreachable(
                f"{method} {url} failed: {reason}. Is the server running and reachable?{hint}"
            ) from None
        finally:
            connection.close()
        text = raw.decode("utf-8", errors="replace")
        if response.status >= 400:
            raise ServerError(
                f"{method} {url} answered HTTP {response.status}: {_error_message(text)}",
                status=response.status,
            )
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ServerError(
                f"{method} {url} answered HTTP {response.status} with something that is not "
                f"JSON: {text[:200]!r}"
            ) from None


def _error_message(text: str) -> str:
    """The message of llama-server's and OpenAI's ``{"error": {"message": ...}}`` bodies."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return text.strip()[:500]
