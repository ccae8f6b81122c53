"""The avatar as a live source for OBS: MPEG-TS/UDP or RTMP out, set up through obs-websocket 5.

Install with the `[obs]` extra; run `avatar obs --help`. For chat bots and scripts:

    from avatar_obs import ControlClient
    ControlClient("http://127.0.0.1:9556").say("Thanks for the follow!")

The stream takes its frames from the SDK's `LiveFeed` over any `Link` opener (see `feed.py`),
so anything that yields H.264 access units with their audio can feed OBS, not only a node.
"""

from .control import ControlClient, ControlError
from .feed import LinkOpener, node_opener
from .publisher import Destination, StreamFrame, StreamPublisher, rtmp_destination, udp_destination
from .timeline import LiveTimeline

__all__ = [
    "ControlClient",
    "ControlError",
    "Destination",
    "LinkOpener",
    "LiveTimeline",
    "StreamFrame",
    "StreamPublisher",
    "node_opener",
    "rtmp_destination",
    "udp_destination",
]
