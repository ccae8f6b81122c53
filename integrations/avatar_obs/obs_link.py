"""The running command's tie to OBS: set-up, host triggers, and reconnecting when OBS restarts.

Blocking websocket calls run in a worker thread. Host triggers arrive two ways:
- a scene item "<source>: <action>" turned visible (its eye icon, a Stream Deck "source
  visibility" button, or the "Show '<source>: <action>'" hotkey in OBS's settings); it is
  hidden again at once so the next press works;
- a `BroadcastCustomEvent` with eventData {"avatar": {"action": "say", "text": "..."}} from
  any obs-websocket client (chat bots such as Streamer.bot or Firebot speak it), optionally
  with "source": "<source name>" when several avatars run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from obsws_python.subs import Subs

from .obs_source import ObsSource, SetupResult, SourceSpec
from .obs_ws import ObsAddress, ObsConnection, ObsError, ObsEvents, ObsGone

log = logging.getLogger(__name__)

Action = Callable[[dict[str, Any]], Awaitable[None]]


class ObsLink:
    """Keeps one set-up Media Source in one OBS, through OBS restarts."""

    def __init__(
        self,
        address: ObsAddress,
        spec: SourceSpec,
        on_action: Action | None = None,
        reconnect_s: float = 3.0,
    ) -> None:
        self.address = address
        self.spec = spec
        self._on_action = on_action
        self._reconnect_s = reconnect_s
        self._connection: ObsConnection | None = None
        self._events: ObsEvents | None = None
        self._source: ObsSource | None = None
        self._setup: SetupResult | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_attempt = 0.0
        self._lock = asyncio.Lock()
        self._triggers: set[asyncio.Task[None]] = set()
        self.setups = 0
        self.reapplies = 0

    @property
    def connected(self) -> bool:
        return self._connection is not None

    async def connect(self) -> SetupResult:
        """Connect and set the source up; raises ObsError with a clear message."""
        self._loop = asyncio.get_running_loop()
        async with self._lock:
            return await asyncio.to_thread(self._connect_blocking)

    def _connect_blocking(self) -> SetupResult:
        connection = ObsConnection(self.address)
        try:
            source = ObsSource(connection, self.spec)
            result = source.ensure()
            events = None
            if self._on_action is not None:
                events = ObsEvents(
                    self.address,
                    Subs.SCENEITEMS | Subs.GENERAL,
                    {
                        "scene_item_enable_state_changed": self._on_item_enabled,
                        "custom_event": self._on_custom_event,
                    },
                )
        except BaseException:
            connection.close()
            raise
        self._connection, self._source, self._setup, self._events = connection, source, result, events
        self.setups += 1
        return result

    async def call(self, fn: Callable[[ObsSource], Any]) -> Any:
        """Run `fn(source)` in a thread; reconnect (and set up again) first if OBS went away."""
        async with self._lock:
            if self._source is None:
                if time.monotonic() < self._next_attempt:
                    raise ObsGone(f"OBS at {self.address} is not reachable; trying again shortly")
                self._next_attempt = time.monotonic() + self._reconnect_s
                result = await asyncio.to_thread(self._connect_blocking)
                log.warning("%s (OBS is back)", result.describe(self.spec.name))
            source = self._source
            assert source is not None
            try:
                return await asyncio.to_thread(fn, source)
            except ObsGone:
                self._drop()
                self._next_attempt = time.monotonic() + self._reconnect_s
                raise

    async def look(self) -> tuple[np.ndarray, str]:
        """(screenshot, media state) of the source, for the watchdog."""
        return await self.call(lambda s: (s.screenshot(), s.media_state()))  # type: ignore[no-any-return]

    async def reapply(self) -> None:
        self.reapplies += 1
        await self.call(lambda s: s.reapply())

    def _drop(self) -> None:
        connection, events = self._connection, self._events
        self._connection = self._source = self._events = None
        if connection is not None:
            connection.close()
        if events is not None:
            events.close()

    async def aclose(self) -> None:
        for task in list(self._triggers):
            task.cancel()
        async with self._lock:
            await asyncio.to_thread(self._drop)

    # ------------------------------------------------------------------ host triggers (SDK thread)

    def _on_item_enabled(self, event: Any) -> None:
        setup = self._setup
        if setup is None or not getattr(event, "scene_item_enabled", False):
            return
        if getattr(event, "scene_name", None) != setup.scene:
            return
        action = setup.buttons.get(int(getattr(event, "scene_item_id", -1)))
        if action is None:
            return
        item_id = int(event.scene_item_id)
        self._dispatch(
            {"action": _button_action(action), **_button_args(action)}, release=(setup.scene, item_id)
        )

    def _on_custom_event(self, event: Any) -> None:
        payload = getattr(event, "avatar", None)
        if not isinstance(payload, dict):
            return
        target = payload.get("source")
        if target not in (None, "", self.spec.name):
            return
        self._dispatch(payload)

    def _dispatch(self, payload: dict[str, Any], release: tuple[str, int] | None = None) -> None:
        loop, on_action = self._loop, self._on_action
        if loop is None or on_action is None or loop.is_closed():
            return

        async def run() -> None:
            try:
                await on_action(payload)
            except Exception as error:  # a trigger must never take the stream down
                log.warning("OBS trigger %s failed: %s", payload.get("action"), error)
            if release is not None:
                try:
                    await self.call(lambda s: s.release_button(*release))
                except ObsError:
                    pass

        def start() -> None:
            task = loop.create_task(run())
            self._triggers.add(task)
            task.add_done_callback(self._triggers.discard)

        loop.call_soon_threadsafe(start)


def _button_action(action: str) -> str:
    return "interrupt" if action == "interrupt" else "behaviour"


def _button_args(action: str) -> dict[str, Any]:
    return {} if action == "interrupt" else {"name": action}
