"""The control endpoint: how another program (an agent, a script) makes a running `avatar cam`
speak, stop or gesture.

`avatar cam --name NAME` listens on a loopback TCP port and writes the port and a random token
to a file only its user can read (`control_file(NAME)`), so only that user's programs can find
and use it. `CamControl.connect(NAME)` reads the file and talks JSON lines:

    {"token": "..."}                                  -> {"ok": true, "name": ..., "pid": ...}
    {"id": 1, "op": "say", "text": "Hello"}           -> {"id": 1, "ok": true, "turn_id": "agent-3"}
    {"id": 2, "op": "speak", "pcm": BASE64_S16LE, "sample_rate": 16000, "end_of_turn": true,
     "turn_id": ""}                                   -> {"id": 2, "ok": true, "turn_id": "agent-4"}
    {"id": 3, "op": "interrupt"} / {"op": "behaviour", "name": "nod"} / {"op": "status"}
and pushes {"event": "turn", "kind": "started"|"finished", "turn_id": ..., ...} as turns progress.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .errors import CamError

MAX_LINE = 8 * 1024 * 1024


def control_dir() -> Path:
    """A directory only this user can read: $XDG_RUNTIME_DIR/avatar-cam, else one in the temp dir."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", tempfile.gettempdir())) / "avatar-cam"
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "avatar-cam"
    else:
        base = Path(tempfile.gettempdir()) / f"avatar-cam-{os.getuid()}"
    return base


def control_file(name: str) -> Path:
    return control_dir() / f"{name}.json"


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlServer:
    """Serves the control protocol; `handle(request)` does the work and returns the reply fields."""

    def __init__(self, name: str, handle: Handler) -> None:
        self.name = name
        self._handle = handle
        self._token = secrets.token_urlsafe(24)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.path = control_file(name)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_LINE)
        port = self._server.sockets[0].getsockname()[1]
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if sys.platform != "win32" and directory.stat().st_uid != os.getuid():
            raise CamError(f"{directory} belongs to another user; set XDG_RUNTIME_DIR to a private directory")
        temporary = directory / f".{self.name}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump({"host": "127.0.0.1", "port": port, "token": self._token, "pid": os.getpid()}, out)
        os.replace(temporary, self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = json.loads(await reader.readline() or b"{}")
            if not secrets.compare_digest(str(hello.get("token", "")), self._token):
                writer.write(b'{"ok": false, "error": "wrong token"}\n')
                return
            writer.write(json.dumps({"ok": True, "name": self.name, "pid": os.getpid()}).encode() + b"\n")
            self._writers.add(writer)
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    reply = await self._handle(request)
                    reply = {"id": request.get("id"), "ok": True, **reply}
                except CamError as error:
                    reply = {"id": request.get("id"), "ok": False, "error": str(error)}
                except (ValueError, KeyError, TypeError) as error:
                    reply = {"ok": False, "error": f"bad request: {error}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def broadcast(self, event: dict[str, Any]) -> None:
        data = json.dumps(event).encode() + b"\n"
        for writer in list(self._writers):
            if not writer.is_closing():
                writer.write(data)

    async def aclose(self) -> None:
        """Stop listening, drop clients, remove the control file. Idempotent."""
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for writer in list(self._writers):
                writer.close()
            self._writers.clear()


class CamControl:
    """A program's handle on a running `avatar cam`.

    >>> async with await CamControl.connect("avatar") as cam:
    ...     turn_id = await cam.say("Hello everyone")
    ...     await cam.wait_finished(turn_id)
    """

    #: Finished turns remembered for a later `wait_finished`.
    KEEP_FINISHED = 256

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._finished: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, name: str = "avatar", timeout: float = 5.0) -> CamControl:
        path = control_file(name)
        try:
            info = json.loads(path.read_text())
        except FileNotFoundError:
            raise CamError(f"no `avatar cam --name {name}` is running (no {path})") from None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(info["host"], info["port"], limit=MAX_LINE)
        except (TimeoutError, OSError):
            raise CamError(f"`avatar cam --name {name}` does not answer (stale {path}?)") from None
        writer.write(json.dumps({"token": info["token"]}).encode() + b"\n")
        async with asyncio.timeout(timeout):
            hello = json.loads(await reader.readline() or b"{}")
        if not hello.get("ok"):
            writer.close()
            raise CamError(f"`avatar cam --name {name}` refused the connection: {hello.get('error')}")
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "event" in message:
                    if message.get("kind") == "finished":
                        self._turn_finished(message)
                    self.events.put_nowait(message)
                elif (future := self._replies.pop(message.get("id"), None)) is not None:
                    future.set_result(message)
        finally:
            for future in [*self._replies.values(), *self._finished.values()]:
                if not future.done():
                    future.set_exception(CamError("the avatar cam closed the control connection"))

    def _turn_finished(self, message: dict[str, Any]) -> None:
        """Kept until waited for: a turn can finish (an interrupt, a short text) before its
        caller gets to `wait_finished`, even before `say` has returned its id."""
        waiter = self._finished.setdefault(
            str(message.get("turn_id", "")), asyncio.get_running_loop().create_future()
        )
        if not waiter.done():
            waiter.set_result(message)
        done = [turn for turn, future in self._finished.items() if future.done()]
        for turn in done[: max(0, len(done) - self.KEEP_FINISHED)]:  # the oldest nobody waited for
            del self._finished[turn]

    async def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[self._next_id] = future
        self._writer.write(json.dumps({"id": self._next_id, "op": op, **fields}).encode() + b"\n")
        await self._writer.drain()
        reply = await future
        if not reply.get("ok"):
            raise CamError(reply.get("error", "the request failed"))
        return reply

    def _watch(self, reply: dict[str, Any]) -> str:
        turn_id = str(reply["turn_id"])
        self._finished.setdefault(turn_id, asyncio.get_running_loop().create_future())
        return turn_id

    async def say(self, text: str, voice: str = "") -> str:
        """Queue text for the avatar to say; returns its turn id."""
        return self._watch(await self._call("say", text=text, voice=voice))

    async def speak(
        self, pcm: np.ndarray, sample_rate: int, end_of_turn: bool = True, turn_id: str = ""
    ) -> str:
        """Queue int16 mono speech; returns its turn id. Stream a turn in pieces by passing the
        first call's turn id to the next ones, with end_of_turn=True on the last."""
        data = base64.b64encode(np.asarray(pcm, dtype="<i2").tobytes()).decode()
        reply = await self._call(
            "speak", pcm=data, sample_rate=sample_rate, end_of_turn=end_of_turn, turn_id=turn_id
        )
        return self._watch(reply)

    async def wait_finished(self, turn_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The turn's `finished` event (played_ms, interrupted)."""
        future = self._finished.get(turn_id)
        if future is None:
            raise CamError(f"unknown turn {turn_id!r}")
        async with asyncio.timeout(timeout):
            finished = await asyncio.shield(future)
        self._finished.pop(turn_id, None)
        return finished

    async def interrupt(self) -> None:
        await self._call("interrupt")

    async def behaviour(self, name: str) -> None:
        await self._call("behaviour", name=name)

    async def status(self) -> dict[str, Any]:
        return await self._call("status")

    async def aclose(self) -> None:
        self._writer.close()
        self._reading.cancel()
        try:
            await self._reading
        except (asyncio.CancelledError, ConnectionError, ValueError):
            pass

    async def __aenter__(self) -> CamControl:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
