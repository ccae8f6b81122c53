"""Watching OBS's copy of the stream and repairing a dead feed.

OBS reports PLAYING for a Media Source whose input died: the last picture just stays. So the
watchdog compares small screenshots of the source over a window: if the pictures we sent
changed (the avatar blinks, moves, talks) while OBS's stayed exactly the same, or OBS shows
nothing while we send a picture, or the media ended or failed, the source settings are sent
again, which makes OBS reopen the stream. Repairs back off while they do not help.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from .obs_ws import ObsError
from .pictures import SentPictures, changed_fraction, is_blank, max_difference, thumbnail

log = logging.getLogger(__name__)

#: OBS's picture counts as frozen when no pixel moved by more than this over the window (a stuck
#: source renders the very same texture; a live one never stays this still)...
FROZEN_MAX_DIFFERENCE = 2
#: ...while at least this share of pixels changed visibly in what we sent.
SENT_CHANGED_ABOVE = 0.005
DEAD_STATES = frozenset(
    {"OBS_MEDIA_STATE_ENDED", "OBS_MEDIA_STATE_STOPPED", "OBS_MEDIA_STATE_ERROR", "OBS_MEDIA_STATE_NONE"}
)


@dataclass
class HealthStats:
    checks: int = 0
    repairs: int = 0
    last_verdict: str = "starting"
    last_repair_reason: str = ""


@dataclass(frozen=True)
class Observation:
    at: float
    thumb: np.ndarray
    state: str


class FeedWatchdog:
    """Every `interval_s`, look at the source in OBS; repair it when it is dead for `window_s`.

    `look()` returns (screenshot RGB, media state) and `repair()` re-applies the source
    settings; both are awaitables so the blocking websocket calls can run in a thread.
    """

    def __init__(
        self,
        look: Callable[[], Awaitable[tuple[np.ndarray, str]]],
        repair: Callable[[], Awaitable[None]],
        sent: SentPictures,
        *,
        interval_s: float = 2.0,
        window_s: float = 6.0,
        grace_s: float = 8.0,
        max_backoff_s: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._look = look
        self._repair = repair
        self._sent = sent
        self.interval_s = interval_s
        self.window_s = window_s
        self.grace_s = grace_s
        self._max_backoff_s = max_backoff_s
        self.stats = HealthStats()
        self._clock = clock
        self._seen: collections.deque[Observation] = collections.deque()
        self._quiet_until = clock() + grace_s
        self._failed_repairs = 0

    def restart_grace(self) -> None:
        """Forget what was seen and judge again only after the grace period (the stream was reopened)."""
        self._seen.clear()
        self._quiet_until = self._clock() + self.grace_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except ObsError as error:
                self.stats.last_verdict = f"cannot check: {error}"
                log.debug("health check failed: %s", error)

    async def check(self) -> str:
        """One observation; repairs if the verdict is dead. Returns the verdict."""
        rgb, state = await self._look()
        now = self._clock()
        self.stats.checks += 1
        self._seen.append(Observation(now, thumbnail(rgb), state))
        while self._seen and self._seen[0].at < now - self.window_s - self.interval_s:
            self._seen.popleft()
        verdict = self._verdict(now)
        self.stats.last_verdict = verdict
        if verdict.startswith("dead") and now >= self._quiet_until:
            await self._do_repair(verdict, now)
        elif verdict == "live":
            self._failed_repairs = 0
        return verdict

    def _verdict(self, now: float) -> str:
        seen = list(self._seen)
        if not seen or seen[-1].at - seen[0].at < self.window_s - 0.5 * self.interval_s:
            return "watching"
        if all(o.state in DEAD_STATES for o in seen):
            return f"dead: the media source is {seen[-1].state.removeprefix('OBS_MEDIA_STATE_').lower()}"
        sent = self._sent.since(seen[0].at - self.interval_s)
        if len(sent) < 2:
            return "watching"  # nothing (or too little) sent to compare with
        if any(o.state == "OBS_MEDIA_STATE_PAUSED" for o in seen):
            return "paused by the host"
        sent_change = max(changed_fraction(sent[0].thumb, p.thumb) for p in sent[1:])
        sent_blank = all(is_blank(p.thumb) for p in sent)
        if all(is_blank(o.thumb) for o in seen) and not sent_blank:
            return f"dead: OBS shows nothing for {seen[-1].at - seen[0].at:.0f} s while the avatar is sent"
        obs_change = max(max_difference(seen[0].thumb, o.thumb) for o in seen[1:])
        if obs_change <= FROZEN_MAX_DIFFERENCE and sent_change >= SENT_CHANGED_ABOVE:
            return f"dead: OBS shows a frozen picture for {seen[-1].at - seen[0].at:.0f} s while the avatar moves"
        return "live"

    async def _do_repair(self, verdict: str, now: float) -> None:
        self.stats.repairs += 1
        self.stats.last_repair_reason = verdict.removeprefix("dead: ")
        log.warning(
            "OBS feed looks dead (%s); re-applying the source settings (repair %d)",
            self.stats.last_repair_reason,
            self.stats.repairs,
        )
        await self._repair()
        self._failed_repairs += 1
        backoff = min(self.grace_s * 2 ** (self._failed_repairs - 1), self._max_backoff_s)
        self._seen.clear()
        self._quiet_until = now + backoff
