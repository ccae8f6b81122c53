"""Errors shared across the node's layers; it imports nothing of the package, so media,
speech, engines and the pipeline can all raise them without importing each other."""

from __future__ import annotations


class AvatarInputError(ValueError):
    """The user's input cannot be used (no face, not an image, too large...).

    The message is shown to the user as is: say what is wrong and what to do.
    The node maps it to INVALID_ARGUMENT; `reason` is the machine-readable name that
    goes with it (e.g. NO_FACE, BAD_IMAGE, IMAGE_TOO_LARGE, BAD_AUDIO).
    """

    def __init__(self, message: str, reason: str = "INVALID_INPUT") -> None:
        super().__init__(message)
        self.reason = reason
