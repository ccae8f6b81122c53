"""A local HTTP control, so a chat bot (or any script) can make the running avatar speak.

    POST /say        {"text": "Thanks for the follow!"}
    POST /speak      the body is an audio file (wav, mp3, ogg...): the avatar says it
    POST /interrupt
    POST /behaviour  {"name": "nod"}
    GET  /status

Replies are JSON: {"ok": true, ...} or {"ok": false, "error": "..."} with a 4xx/5xx status.
It listens on 127.0.0.1 only by default. `ControlClient` is the Python side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 * 1024 * 1024
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class ControlError(Exception):
    """A control request failed; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Controls(Protocol):
    """What the control server drives (the running `avatar obs` command)."""

    async def say(self, text: str) -> None: ...

    async def speak(self, audio_file: bytes) -> float: ...  # returns seconds of speech queued

    async def interrupt(self) -> None: ...

    async def behaviour(self, name: str) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class _Request:
    method: str
    path: str
    body: bytes


class ControlServer:
    """Serves `Controls` over HTTP/1.1 (one request per connection)."""

    def __init__(self, controls: Controls, host: str = "127.0.0.1", port: int = 0) -> None:
        self._controls = controls
        self._host = host
        self._port = port
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as error:
            raise ControlError(
                f"cannot listen for control requests on {self._host}:{self._port}: "
                f"{error.strerror or error}; another program (or another `avatar obs`) uses that port: "
                "pick another --control-port",
                500,
            ) from None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            try:
                async with asyncio.timeout(30.0):
                    request = await _read_request(reader)
                status, reply = 200, await self._handle(request)
            except ControlError as error:
                status, reply = error.status, {"ok": False, "error": str(error)}
            except TimeoutError:
                status, reply = 400, {"ok": False, "error": "the request did not arrive in time"}
            except Exception as error:  # a bug must not take the stream down
                log.exception("control request failed")
                status, reply = 500, {"ok": False, "error": f"internal error: {error}"}
            body = json.dumps(reply).encode()
            writer.write(
                f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            self._clients.discard(task)

    async def _handle(self, request: _Request) -> dict[str, Any]:
        routes: dict[tuple[str, str], Callable[[_Request], Awaitable[dict[str, Any]]]] = {
            ("POST", "/say"): self._say,
            ("POST", "/speak"): self._speak,
            ("POST", "/interrupt"): self._interrupt,
            ("POST", "/behaviour"): self._behaviour,
            ("GET", "/status"): self._status,
        }
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        handler = routes.get((request.method, path))
        if handler is None:
            if any(p == path for _, p in routes):
                raise ControlError(f"{request.method} is not allowed on {path}", 405)
            raise ControlError(
                f"no such control: {path} (try /say, /speak, /interrupt, /behaviour, /status)", 404
            )
        return await handler(request)

    async def _say(self, request: _Request) -> dict[str, Any]:
        text = str(_json(request).get("text", "")).strip()
        if not text:
            raise ControlError('say needs {"text": "..."} with something to say')
        await self._controls.say(text)
        return {"ok": True}

    async def _speak(self, request: _Request) -> dict[str, Any]:
        if not request.body:
            raise ControlError("speak needs an audio file as the request body")
        seconds = await self._controls.speak(request.body)
        return {"ok": True, "seconds": round(seconds, 3)}

    async def _interrupt(self, request: _Request) -> dict[str, Any]:
        await self._controls.interrupt()
        return {"ok": True}

    async def _behaviour(self, request: _Request) -> dict[str, Any]:
        name = str(_json(request).get("name", "")).strip()
        if not name:
            raise ControlError('behaviour needs {"name": "nod"} (or smile, blink, shake, raise_eyebrows)')
        await self._controls.behaviour(name)
        return {"ok": True}

    async def _status(self, request: _Request) -> dict[str, Any]:
        return {"ok": True, **self._controls.status()}


def _json(request: _Request) -> dict[str, Any]:
    if not request.body:
        return {}
    try:
        value = json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ControlError("the body is not JSON") from None
    if not isinstance(value, dict):
        raise ControlError("the body must be a JSON object")
    return value


async def _read_request(reader: asyncio.StreamReader) -> _Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ControlError("not an HTTP request") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _ = lines[0].split(" ", 2)
    except ValueError:
        raise ControlError("not an HTTP request") from None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise ControlError("bad Content-Length") from None
    if length > MAX_BODY_BYTES:
        raise ControlError(f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB", 413)
    body = await reader.readexactly(length) if length else b""
    return _Request(method.upper(), target, body)


class ControlClient:
    """Drive a running `avatar obs --control-port PORT` from Python (a chat bot, a script).

    >>> avatar = ControlClient("http://127.0.0.1:9556")
    >>> avatar.say("Thanks for the raid!")
    """

    def __init__(self, url: str = "http://127.0.0.1:9556", timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def say(self, text: str) -> None:
        self._call("POST", "/say", json.dumps({"text": text}).encode(), "application/json")

    def speak(self, audio: bytes | str | Path) -> float:
        """Say an audio file (any format FFmpeg reads); returns its length in seconds."""
        data = audio if isinstance(audio, bytes) else Path(audio).read_bytes()
        return float(self._call("POST", "/speak", data, "application/octet-stream")["seconds"])

    def interrupt(self) -> None:
        self._call("POST", "/interrupt")

    def behaviour(self, name: str) -> None:
        self._call("POST", "/behaviour", json.dumps({"name": name}).encode(), "application/json")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def _call(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> dict[str, Any]:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", error.reason)
            except (ValueError, AttributeError):
                message = error.reason
            raise ControlError(str(message), error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ControlError(
                f"cannot reach the avatar at {self.url} ({reason}); is `avatar obs --control-port` running?",
                503,
            ) from None
