"""Talking to OBS through obs-websocket 5 (obsws-python), with errors that say what to do."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import obsws_python
import websocket
from obsws_python.error import OBSSDKError, OBSSDKRequestError, OBSSDKTimeoutError

# obsws-python logs its connection parameters, password included, at INFO and prints
# tracebacks for expected failures; keep all of that out of the host's terminal.
_sdk_log = logging.getLogger("obsws_python")
_sdk_log.addHandler(logging.NullHandler())
_sdk_log.propagate = False

DEFAULT_PORT = 4455
ENABLE_HINT = (
    "in OBS open Tools > WebSocket Server Settings, tick 'Enable WebSocket server' and note the port"
)


class ObsError(Exception):
    """OBS could not be reached or refused a request; the message says what to do."""


@dataclass(frozen=True)
class ObsAddress:
    host: str = "localhost"
    port: int = DEFAULT_PORT
    password: str = ""

    @classmethod
    def from_environment(
        cls, host: str | None = None, port: int | None = None, password: str | None = None
    ) -> ObsAddress:
        """Flags first, then OBS_WEBSOCKET_HOST / _PORT / _PASSWORD, then the defaults."""
        env_port = os.environ.get("OBS_WEBSOCKET_PORT", "")
        try:
            default_port = int(env_port) if env_port else DEFAULT_PORT
        except ValueError:
            raise ObsError(f"OBS_WEBSOCKET_PORT must be a port number, not {env_port!r}") from None
        return cls(
            host=host or os.environ.get("OBS_WEBSOCKET_HOST", "") or "localhost",
            port=port or default_port,
            password=password if password is not None else os.environ.get("OBS_WEBSOCKET_PASSWORD", ""),
        )

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _connect_error(address: ObsAddress, error: BaseException) -> ObsError:
    where = f"OBS at {address}"
    if isinstance(error, ConnectionRefusedError):
        return ObsError(
            f"cannot reach {where}: OBS is not running or its WebSocket server is off; {ENABLE_HINT} "
            "(default 4455), then pass --obs-port if it differs"
        )
    if isinstance(error, (socket.gaierror,)):
        return ObsError(f"cannot resolve the OBS host {address.host!r}; check --obs-host")
    if isinstance(error, websocket.WebSocketBadStatusException) or isinstance(error, ValueError):
        return ObsError(
            f"something other than obs-websocket answers on {address}: another program uses that port; "
            "check --obs-port against Tools > WebSocket Server Settings in OBS"
        )
    if isinstance(error, (TimeoutError, websocket.WebSocketTimeoutException, OBSSDKTimeoutError)):
        return ObsError(
            f"{where} did not answer in time: another program may hold that port, or OBS is busy; "
            "check --obs-host/--obs-port"
        )
    if isinstance(error, OBSSDKError):
        text = str(error)
        if "no password" in text:
            return ObsError(
                f"{where} asks for a password: pass --obs-password or set OBS_WEBSOCKET_PASSWORD "
                "(OBS shows it under Tools > WebSocket Server Settings > Show Connect Info)"
            )
        if "identify" in text:
            return ObsError(
                f"{where} refused the password: check --obs-password / OBS_WEBSOCKET_PASSWORD against "
                "Tools > WebSocket Server Settings > Show Connect Info"
            )
        return ObsError(f"{where}: {text}")
    if isinstance(error, (KeyError, TypeError)):
        return ObsError(
            f"{where} speaks an older obs-websocket protocol; this needs OBS 28 or newer (obs-websocket 5)"
        )
    if isinstance(error, OSError):
        return ObsError(f"cannot reach {where}: {error.strerror or error}; check --obs-host/--obs-port")
    return ObsError(f"cannot talk to {where}: {error}")


class ObsConnection:
    """One request connection to obs-websocket. Thread-safe; every call blocks (use a thread)."""

    def __init__(self, address: ObsAddress, timeout: float = 5.0) -> None:
        self.address = address
        self._lock = threading.Lock()
        try:
            self._client = obsws_python.ReqClient(
                host=address.host, port=address.port, password=address.password, timeout=timeout
            )
        except Exception as error:  # the SDK raises many kinds; each becomes one clear line
            raise _connect_error(address, error) from None
        self._closed = False

    def request(self, kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one request; return its response data (empty dict if none)."""
        with self._lock:
            if self._closed:
                raise ObsError("the OBS connection is closed")
            try:
                response = self._client.send(kind, data, raw=True)
            except OBSSDKRequestError as error:
                raise ObsRequestError(kind, error.code, str(error)) from None
            except (websocket.WebSocketException, OSError, OBSSDKTimeoutError) as error:
                raise ObsGone(
                    f"lost the connection to OBS at {self.address} ({error or type(error).__name__}); "
                    "is OBS still running?"
                ) from None
        return response or {}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._client.disconnect()
            except (websocket.WebSocketException, OSError):
                pass

    def __enter__(self) -> ObsConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ObsRequestError(ObsError):
    """OBS answered a request with an error status."""

    #: obs-websocket status codes used here.
    RESOURCE_NOT_FOUND = 600
    RESOURCE_ALREADY_EXISTS = 601
    RENDER_FAILED = 702

    def __init__(self, kind: str, code: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code


class ObsGone(ObsError):
    """The websocket to OBS closed (OBS quit or restarted)."""


class ObsEvents:
    """A second connection that receives events; handlers run on the SDK's reader thread."""

    def __init__(
        self, address: ObsAddress, subscriptions: int, handlers: dict[str, Callable[[Any], None]]
    ) -> None:
        try:
            self._client = obsws_python.EventClient(
                host=address.host,
                port=address.port,
                password=address.password,
                subs=subscriptions,
                timeout=5.0,
            )
        except Exception as error:
            raise _connect_error(address, error) from None
        self._client.callback.register(list(_named(handlers)))

    @property
    def alive(self) -> bool:
        return bool(self._client.worker.is_alive())

    def close(self) -> None:
        try:
            self._client.disconnect()
        except (websocket.WebSocketException, OSError):
            pass


def _named(handlers: dict[str, Callable[[Any], None]]) -> list[Callable[[Any], None]]:
    """obsws-python dispatches by function name (on_<snake_case_event>) on its reader thread,
    which an exception would end: each handler is guarded."""
    return [_guarded(event, handler) for event, handler in handlers.items()]


def _guarded(event: str, handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def call(data: Any) -> None:
        try:
            handler(data)
        except Exception:
            logging.getLogger(__name__).warning("handling the OBS event %s failed", event, exc_info=True)

    call.__name__ = "on_" + event
    return call
