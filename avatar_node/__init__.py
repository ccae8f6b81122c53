"""The avatar node: one photo plus speech in, live H.264 video and matching audio out."""

__version__ = "0.1.0"
