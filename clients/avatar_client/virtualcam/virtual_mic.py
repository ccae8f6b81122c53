"""The virtual microphone on Linux: a PulseAudio/PipeWire null sink the speech is played into,
and a source remapped from its monitor, which meeting apps list as a microphone (most hide
monitor sources). Both carry their owner's pid, so a run that was killed outright can be
recognised and cleaned up by the next one."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from . import errors

_OWNER = re.compile(r"avatar\.cam\.owner=(\d+):(\d+)")
_NAME = re.compile(r"\b(?:sink|source)_name=(\S+)")


def _pulsectl() -> Any:
    try:
        import pulsectl
    except ImportError:
        raise errors.missing_extra("pulsectl", "the virtual microphone") from None
    return pulsectl


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), which tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _owner_alive(pid: int, start_ticks: int) -> bool:
    return process_start_ticks(pid) == start_ticks


def slug(name: str) -> str:
    """A device-name-safe form of the user's microphone name."""
    cleaned = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()
    if not cleaned:
        raise errors.CamError(f"--mic-name {name!r} has no letters or digits")
    return cleaned[:40]


@dataclass(frozen=True)
class MicDevices:
    sink: str  # play speech here
    source: str  # the microphone apps pick
    description: str  # how apps show it


class VirtualMic:
    """Creates the null sink + remapped source; `remove()` takes both away (idempotent)."""

    def __init__(self, name: str = "avatar", rate: int = 48_000) -> None:
        key = slug(name)
        label = "Avatar microphone" if key == "avatar" else f"Avatar microphone ({name})"
        self.devices = MicDevices(f"avatar_cam_{key}", f"avatar_mic_{key}", label)
        self._rate = rate
        self._pulse: Any = None
        self._owner = ""  # the tag our modules carry; set once create() starts loading
        #: Messages about what was found and cleaned up before creating the devices.
        self.notes: list[str] = []
        self.server_name = ""
        self.was_created = False  # both devices were made (and so are ours to report removed)

    def _connect(self) -> Any:
        pulsectl = _pulsectl()
        try:
            pulse = pulsectl.Pulse("avatar cam")
        except pulsectl.PulseError as error:
            raise errors.no_sound_server(str(error) or "connection refused") from None
        return pulse

    def create(self) -> MicDevices:
        pulsectl = _pulsectl()
        self._pulse = self._connect()
        try:
            info = self._pulse.server_info()
            self.server_name = f"{info.server_name} {info.server_version}"
            self._remove_leftovers()
            default_sink, default_source = info.default_sink_name, info.default_source_name
            owner = self._owner = f"avatar.cam.owner={os.getpid()}:{process_start_ticks(os.getpid()) or 0}"
            sink, source, label = self.devices.sink, self.devices.source, self.devices.description
            self._pulse.module_load(
                "module-null-sink",
                f"sink_name={sink} rate={self._rate} channels=1 format=s16le "
                f"sink_properties='device.description=\"{label} (speech in)\" {owner}'",
            )
            self._pulse.module_load(
                "module-remap-source",
                f"master={sink}.monitor source_name={source} channels=1 "
                f"source_properties='device.description=\"{label}\" {owner}'",
            )
            self._keep_defaults(default_sink, default_source)
            self.was_created = True
        except (pulsectl.PulseError, pulsectl.PulseDisconnected) as error:
            self.remove()
            raise errors.MicUnavailable(
                f"the sound server refused to create the virtual microphone ({type(error).__name__}"
                f"{': ' + str(error) if str(error) else ''}); run with --no-mic for the camera alone"
            ) from None
        return self.devices

    def _remove_leftovers(self) -> None:
        pulsectl = _pulsectl()
        mine = {self.devices.sink, self.devices.source}
        # Newest first: the remapped source goes before the sink it reads from.
        for module in sorted(self._pulse.module_list(), key=lambda m: m.index, reverse=True):
            argument = module.argument or ""
            owner = _OWNER.search(argument)
            if owner is None:
                continue
            pid, start = int(owner.group(1)), int(owner.group(2))
            names = set(_NAME.findall(argument))
            if _owner_alive(pid, start):
                if names & mine:
                    raise errors.MicUnavailable(
                        f"a virtual microphone named {self.devices.source} is in use by another "
                        f"`avatar cam` (pid {pid}); stop it or choose another --mic-name"
                    )
                continue
            try:
                self._pulse.module_unload(module.index)
            except pulsectl.PulseOperationFailed:
                pass  # went with the module it depended on
            self.notes.append(
                f"removed {', '.join(sorted(names))} left behind by an earlier run (pid {pid}) "
                "that did not exit cleanly"
            )

    def _keep_defaults(self, sink: str, source: str) -> None:
        """A new sink or source can become the default, and a server that switches on connect
        moves running streams onto it: put the user's defaults and streams back. (Nothing of
        ours plays or records yet, so every stream on our devices was moved there.)"""
        pulse = self._pulse
        info = pulse.server_info()
        sinks = {s.name: s for s in pulse.sink_list()}
        sources = {s.name: s for s in pulse.source_list()}
        if sink in sinks and info.default_sink_name != sink:
            pulse.default_set(sinks[sink])
        if source in sources and info.default_source_name != source:
            pulse.default_set(sources[source])
        ours_sink, ours_source = sinks.get(self.devices.sink), sources.get(self.devices.source)
        if sink in sinks and ours_sink is not None:
            for stream in pulse.sink_input_list():
                if stream.sink == ours_sink.index:
                    pulse.sink_input_move(stream.index, sinks[sink].index)
        if source in sources and ours_source is not None:
            for stream in pulse.source_output_list():
                if stream.source == ours_source.index:
                    pulse.source_output_move(stream.index, sources[source].index)

    def remove(self) -> None:
        """Unload every module carrying this run's owner tag, the remapped source first.

        Found by tag rather than by index, so a sound server restarted meanwhile (whose indices
        mean other modules) is never harmed. Safe to call twice or after a failed create.
        """
        if not self._owner:
            self._close()
            return
        pulsectl = _pulsectl()
        for attempt in range(2):
            try:
                if self._pulse is None:
                    self._pulse = self._connect()
                ours = [m for m in self._pulse.module_list() if self._owner in (m.argument or "")]
                for module in sorted(ours, key=lambda m: m.index, reverse=True):
                    try:
                        self._pulse.module_unload(module.index)
                    except pulsectl.PulseOperationFailed:
                        pass  # unloaded meanwhile
                break
            except (pulsectl.PulseError, pulsectl.PulseDisconnected, errors.MicUnavailable):
                self._close()  # a dead connection: try once more with a new one
                if attempt:
                    break  # no server: its modules went with it
        self._owner = ""
        self._close()

    def _close(self) -> None:
        if self._pulse is not None:
            self._pulse.close()
            self._pulse = None
