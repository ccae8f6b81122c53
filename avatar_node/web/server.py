"""The node's web page and WHEP endpoint: an HTTP server beside gRPC, on the same event loop
and over the same `AvatarRuntime`, so browser sessions count against `--max-sessions`, go
through the same admission control, and are refused while the node drains.

Endpoints (all but the page's static files need `Authorization: Bearer TOKEN` when the node
has a token):

    GET    /                         the page (HTML, JS and CSS from this package; no CDN)
    GET    /api/info                 engines, behaviours, voices, sessions, upload limit
    POST   /api/avatars              a photo (raw bytes) -> {"avatar_id": ...}; size-checked
    POST   /whep[?avatar=ID&size=WxH&mic=listen|puppet|off]
                                     WHEP: an SDP offer -> 201, the SDP answer, Location
    DELETE /whep/{id}                WHEP: end the session
    POST   /whep/{id}/control        {"action": "say", "text": ...} | {"action": "interrupt"} |
                                     {"action": "behaviour", "name": ...} | {"action": "mic", "mode": ...}
    GET    /whep/{id}/stats          the session's figures (fps, lag, drops, microphone)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from aiohttp import web

from avatar_node.pipeline import AvatarRuntime, EndReason, ErrorCode, PipelineError, SessionOptions
from avatar_node.rpc.auth import token_matches
from avatar_node.rpc.convert import MAX_MESSAGE_BYTES

from .microphone import MIC_MODES
from .session import SessionLimits, WebSession

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Photos are limited like a gRPC image (one message).
MAX_UPLOAD_BYTES = MAX_MESSAGE_BYTES
MAX_SDP_BYTES = 256 * 1024
MAX_CONTROL_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2000
DEFAULT_SIZE = (848, 480)

_HTTP_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.FAILED_PRECONDITION: 409,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.RESOURCE_EXHAUSTED: 503,  # the node is full: try again later or another node
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.INTERNAL: 500,
}


def sample_photo() -> bytes:
    return resources.files("avatar_node").joinpath("assets/sample_portrait.jpg").read_bytes()


@dataclass
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    auth_token: str | None = None
    #: The photo sessions use when the page names no avatar (default: the bundled sample).
    default_photo: bytes | None = None
    limits: SessionLimits = field(default_factory=SessionLimits)


def error_response(status: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def pipeline_error_response(exc: PipelineError) -> web.Response:
    status = _HTTP_STATUS.get(exc.code, 500)
    headers = {"Retry-After": "5"} if status == 503 else {}
    return error_response(status, exc.reason, exc.message, **headers)


class WebServer:
    """`await start()` (returns the port), `await stop()`; sessions live in `sessions`."""

    def __init__(self, runtime: AvatarRuntime, config: WebConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.sessions: dict[str, WebSession] = {}
        self.port = 0
        self.refused: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._default_photo = config.default_photo or sample_photo()

    # ------------------------------------------------------------------ life cycle

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=MAX_UPLOAD_BYTES + 64 * 1024,
            middlewares=[self._cors, self._auth],
        )
        app.router.add_get("/", self._index)
        app.router.add_static("/static/", STATIC_DIR, show_index=False)
        app.router.add_get("/api/info", self._info)
        app.router.add_post("/api/avatars", self._upload)
        app.router.add_post("/whep", self._whep_offer)
        app.router.add_route("*", "/whep/{session}", self._whep_resource)
        app.router.add_post("/whep/{session}/control", self._control)
        app.router.add_get("/whep/{session}/stats", self._stats)
        return app

    async def start(self) -> int:
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port, reuse_port=False)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        addresses = runner.addresses  # (host, port, ...) of each listening socket
        self.port = int(addresses[0][1]) if addresses else self.config.port
        log.info("web page on http://%s:%d/", self.config.host, self.port)
        return self.port

    async def close_sessions(self, why: str = "the node is stopping") -> None:
        await asyncio.gather(*(s.aclose(why, EndReason.NODE_SHUTDOWN) for s in list(self.sessions.values())),
                             return_exceptions=True)

    async def stop(self) -> None:
        """Close every session, then stop serving."""
        await self.close_sessions()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------------ middleware

    @web.middleware
    async def _cors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        """WHEP players on other origins may call the endpoint (bearer header only, no cookies)."""
        if not request.path.startswith("/whep"):
            return await handler(request)
        headers = {
            "Access-Control-Allow-Origin": "*",
            "Access-Control-Allow-Methods": "POST, DELETE, PATCH, GET, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Expose-Headers": "Location",
        }
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=headers)
        response = await handler(request)
        response.headers.update(headers)
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        token = self.config.auth_token
        guarded = request.path.startswith("/api/") or request.path.startswith("/whep")
        if token and guarded and not token_matches(request.headers.get("Authorization", ""), token):
            self.refused["unauthenticated"] = self.refused.get("unauthenticated", 0) + 1
            return error_response(401, "BAD_TOKEN", "missing or wrong token; send `Authorization: Bearer <token>` "
                                  "(the page asks for it)", **{"WWW-Authenticate": 'Bearer realm="avatar-node"'})
        return await handler(request)

    # ------------------------------------------------------------------ the page

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def _info(self, request: web.Request) -> web.Response:
        engine = self.runtime.engine()
        status = self.runtime.status()
        return web.json_response({
            "engine": engine.info.name,
            "engines": [e.info.name for e in self.runtime.engines],
            "behaviours": sorted(engine.behaviours),
            "voices": self.runtime.voices(),
            "auth_required": bool(self.config.auth_token),
            "max_upload_bytes": MAX_UPLOAD_BYTES,
            "active_sessions": status.active_sessions,
            "max_sessions": status.max_sessions,
            "draining": status.draining,
            "web_sessions": len(self.sessions),
            "mic_modes": list(MIC_MODES),
        })

    async def _upload(self, request: web.Request) -> web.Response:
        too_big = error_response(
            413, "IMAGE_TOO_LARGE",
            f"the upload is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB; resize a photo (2048 px on the long "
            "side is plenty) or re-encode a video (480p, 30-120 s) and upload it again",
        )
        if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
            return too_big
        try:
            image = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_big
        if len(image) > MAX_UPLOAD_BYTES:
            return too_big
        try:
            prepared = await self.runtime.prepare(image, request.query.get("engine", ""))
        except PipelineError as exc:
            return pipeline_error_response(exc)
        identity = prepared.identity
        return web.json_response(
            {"avatar_id": identity.avatar_id, "width": identity.image_width, "height": identity.image_height,
             "cached": prepared.cached, "prepare_ms": round(prepared.prepare_ms, 1), "notes": list(identity.notes)},
            status=201,
        )

    # ------------------------------------------------------------------ WHEP

    def _options(self, request: web.Request) -> SessionOptions:
        width, height = DEFAULT_SIZE
        size = request.query.get("size", "")
        if size:
            try:
                width, height = (int(part) for part in size.lower().split("x"))
            except ValueError:
                raise PipelineError(ErrorCode.INVALID_ARGUMENT, "BAD_OUTPUT_FORMAT",
                                    f"size must look like 848x480, not {size[:40]!r}") from None
        try:
            fps = float(request.query.get("fps", "0"))
        except ValueError:
            raise PipelineError(ErrorCode.INVALID_ARGUMENT, "BAD_OUTPUT_FORMAT", "fps must be a number") from None
        return SessionOptions(live=True, video="rgb", width=width, height=height, fps=fps,
                              engine=request.query.get("engine", ""), voice=request.query.get("voice", ""),
                              stats_interval_ms=1000)

    async def _whep_offer(self, request: web.Request) -> web.Response:
        if request.content_type != "application/sdp":
            return error_response(415, "NOT_SDP", "send the SDP offer with `Content-Type: application/sdp`")
        if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
            return error_response(413, "OFFER_TOO_LARGE", f"the SDP offer is over {MAX_SDP_BYTES} bytes")
        offer = (await request.read()).decode("utf-8", "replace")
        if len(offer) > MAX_SDP_BYTES or "m=" not in offer:
            return error_response(400, "BAD_OFFER", "the body is not an SDP offer; send the offer from createOffer()")
        mic = request.query.get("mic", "listen")
        if mic not in MIC_MODES:
            return error_response(400, "BAD_MIC_MODE", f"mic must be one of {', '.join(MIC_MODES)}")
        avatar: bytes | str = request.query.get("avatar", "") or self._default_photo
        try:
            stream = await self.runtime.open_stream(avatar, self._options(request))
        except PipelineError as exc:
            self.refused[exc.reason] = self.refused.get(exc.reason, 0) + 1
            return pipeline_error_response(exc)
        session = WebSession(stream, limits=self.config.limits, mic_mode=mic,  # type: ignore[arg-type]
                             on_closed=self._forget)
        self.sessions[session.id] = session
        try:
            answer = await session.answer(offer)
        except (ValueError, RuntimeError, KeyError) as exc:
            await session.aclose(f"bad offer: {exc}")
            return error_response(400, "BAD_OFFER", f"the SDP offer could not be answered ({exc}); offer to "
                                  "receive audio and video (VP8 or H.264, Opus)")
        except BaseException:
            await session.aclose("the request was cancelled")
            raise
        log.info("web session %s started (%dx%d, mic %s)", session.id[:8], stream.options.width,
                 stream.options.height, mic)
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/whep/{session.id}"})

    def _forget(self, session: WebSession) -> None:
        self.sessions.pop(session.id, None)

    def _session(self, request: web.Request) -> WebSession:
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.closed:
            raise web.HTTPNotFound(text=json.dumps({"error": "UNKNOWN_SESSION", "message":
                                   "no such session (it ended); start a new one"}), content_type="application/json")
        return session

    async def _whep_resource(self, request: web.Request) -> web.Response:
        if request.method == "DELETE":
            session = self._session(request)
            await session.aclose("the client ended it (DELETE)", EndReason.END_REQUESTED)
            return web.Response(status=200)
        if request.method == "PATCH":  # trickle ICE / ICE restart: the answer already holds every candidate
            return error_response(405, "NO_TRICKLE", "trickle ICE is not supported; wait for ICE gathering to "
                                  "complete before sending the offer", Allow="DELETE")
        return error_response(405, "METHOD", "use DELETE to end the session", Allow="DELETE")

    async def _control(self, request: web.Request) -> web.Response:
        session = self._session(request)
        if request.content_length is not None and request.content_length > MAX_CONTROL_BYTES:
            return error_response(413, "TOO_LARGE", f"a control message is at most {MAX_CONTROL_BYTES} bytes")
        try:
            body = json.loads(await request.read() or b"{}")
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            return error_response(400, "BAD_JSON", 'send a JSON object such as {"action": "say", "text": "Hi"}')
        action = body.get("action")
        stream = session.stream
        try:
            if action == "say":
                text = str(body.get("text", "")).strip()
                if not text:
                    return error_response(400, "EMPTY_TEXT", "nothing to say: `text` is empty")
                if len(text) > MAX_TEXT_CHARS:
                    return error_response(400, "TEXT_TOO_LONG", f"keep `text` under {MAX_TEXT_CHARS} characters")
                await stream.say(text, str(body.get("voice", "")))
            elif action == "interrupt":
                stream.interrupt()
            elif action == "behaviour":
                stream.behaviour(str(body.get("name", "")))
            elif action == "mic":
                mode = body.get("mode")
                if mode not in MIC_MODES:
                    return error_response(400, "BAD_MIC_MODE", f"mode must be one of {', '.join(MIC_MODES)}")
                session.mic.set_mode(mode)  # type: ignore[arg-type]
            else:
                return error_response(400, "UNKNOWN_ACTION", "action must be say, interrupt, behaviour or mic")
        except PipelineError as exc:
            return pipeline_error_response(exc)
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        session = self._session(request)
        status = self.runtime.status()
        return web.json_response({**session.snapshot(), "node": {
            "active_sessions": status.active_sessions, "max_sessions": status.max_sessions,
            "draining": status.draining}})

