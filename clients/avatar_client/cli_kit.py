"""What every command line of the project shares: connection and TLS options, target and size
parsing, the sample photo, reading a photo, and the exit-status rule.

`avatar`, `avatar cam`, `avatar obs`, `avatar-livekit` and `avatar-node` all depend on the client,
so the kit lives here and imports nothing but the client. The rule: a command line that cannot
work as given exits 2 (`UsageError`), work that failed exits 1 (`CliError` and the SDK's errors),
Ctrl+C exits 130; each is one `error: ...` line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import grpc

from .client import MAX_MESSAGE_BYTES
from .errors import AvatarError
from .tls import tls_credentials

DEFAULT_PORT = 50051
TOKEN_ENV = "AVATAR_TOKEN"
#: The output sizes a node renders (each side), as the node checks them.
MIN_SIDE, MAX_SIDE = 64, 1920
SAMPLE_IMAGE = "assets/sample_portrait.jpg"

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class CliError(Exception):
    """Work that failed: `error: <message>`, exit status 1."""


class UsageError(CliError):
    """A command line that cannot work as given: `error: <message>`, exit status 2."""


def parse_target(text: str) -> str:
    """HOST[:PORT] with the port checked (1-65535) and 50051 when none is given; a gRPC
    target with a scheme (dns:///..., unix:...) is passed on as written."""
    text = text.strip()
    if "://" in text or text.startswith("unix:"):
        return text
    host, port = text, ""
    if text.startswith("["):  # [IPv6]:PORT
        close = text.find("]")
        if close < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: an IPv6 address needs its closing ']'")
        host, rest = text[: close + 1], text[close + 1 :]
        if rest and not rest.startswith(":"):
            raise argparse.ArgumentTypeError(f"{text!r} should look like [::1]:{DEFAULT_PORT}")
        port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:  # a bare IPv6 address
        host = f"[{text}]"
    if not host.strip("[]"):
        raise argparse.ArgumentTypeError(
            f"{text!r} names no host: use HOST:PORT, e.g. localhost:{DEFAULT_PORT}")
    if not port:
        return f"{host}:{DEFAULT_PORT}"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be a number from 1 to 65535")
    return f"{host}:{int(port)}"


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 848x480, not {text!r}") from None
    if width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even, not {width}x{height}")
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise argparse.ArgumentTypeError(
            f"{width}x{height} is out of range: each side {MIN_SIDE} to {MAX_SIDE} (e.g. 848x480, 1280x720)")
    return width, height


def add_connection_arguments(parser: Any, *, without_target: str = "start one in this process") -> None:
    """--target, --token and the TLS options, as every command names them (`parser`: an
    ArgumentParser or one of its argument groups)."""
    parser.add_argument("--target", type=parse_target, metavar="HOST[:PORT]",
                        help=f"the node to use (port {DEFAULT_PORT} when none is given; default: {without_target})")
    parser.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                        help=f"bearer token for a node that requires one (default: ${TOKEN_ENV})")
    parser.add_argument("--tls", action="store_true",
                        help="connect with TLS, trusting the system's CAs (implied by --ca and --cert)")
    parser.add_argument("--ca", type=Path, metavar="FILE",
                        help="TLS: the PEM certificate of the CA that signed the node's certificate, for a node "
                        "whose certificate no system CA signed (implies --tls)")
    parser.add_argument("--cert", type=Path, metavar="FILE",
                        help="mutual TLS: this client's PEM certificate (with --key)")
    parser.add_argument("--key", type=Path, metavar="FILE", help="mutual TLS: the PEM private key of --cert")


def channel_credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    """TLS credentials from --tls/--ca/--cert/--key, or None for a plaintext connection."""
    if not (args.tls or args.ca or args.cert or args.key):
        return None
    if not args.target:
        raise UsageError("--tls, --ca, --cert and --key are for a remote node: add --target HOST:PORT")
    try:
        return tls_credentials(ca=args.ca, cert=args.cert, key=args.key)
    except ValueError as error:
        raise UsageError(str(error).replace("cert and key", "--cert and --key")) from None


def sample_image() -> bytes:
    try:
        return resources.files("avatar_node").joinpath(SAMPLE_IMAGE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError):
        raise CliError("the sample portrait is not installed; pass --image PHOTO") from None


def read_photo(path: Path) -> bytes:
    """A photo's bytes, refused here when no node would take it (over the message limit)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such image file: {path}") from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {error.strerror or error}") from None
    check_photo_size(data, path)
    return data


def check_photo_size(data: bytes, path: Path) -> None:
    if len(data) > MAX_MESSAGE_BYTES:
        raise UsageError(
            f"{path} is {len(data) / 2**20:.1f} MiB; a node takes at most {MAX_MESSAGE_BYTES // 2**20} MiB: "
            "shrink or re-encode it (a 1920-pixel JPEG is plenty), e.g. "
            f"`ffmpeg -i {path} -vf scale='min(1920,iw)':-2 photo.jpg`")


def photo_or_sample(image: Path | None) -> bytes:
    return read_photo(image) if image else sample_image()


def missing_extra(command: str, extra: str, label: str, error: ImportError) -> str:
    """The line to print when `command` needs an optional extra (`label` names it for people)."""
    missing = error.name or str(error)
    return f"`{command}` needs the {label} extra ({missing} is missing): pip install 'avatar-node[{extra}]'"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop what native libraries write to the process's stderr (TFLite announces its XNNPACK
    delegate there, past Python's reach) while Python's own sys.stderr keeps working."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 to quiet
        yield
        return
    python_stderr = sys.stderr
    try:
        sys.stderr.flush()
        sys.stderr = open(saved, "w", closefd=False)  # noqa: SIM115 - closed below
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = python_stderr
        os.dup2(saved, 2)
        os.close(saved)


def describe_error(error: BaseException) -> str:
    """The message for a failure, with what to do where the node's own words assume the SDK."""
    if isinstance(error, AvatarError) and error.code == grpc.StatusCode.UNAUTHENTICATED:
        return (f"missing or wrong token ({error.code_name}): pass the node's token with --token TOKEN "
                f"or set {TOKEN_ENV}")
    return str(error)


def run_guarded(work: Callable[[], int], failures: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's work and turn its errors into the exit-status rule (see the module notes).
    `failures`: the command's own error types that mean failed work (exit 1)."""
    failed: tuple[type[BaseException], ...] = (CliError, AvatarError, OSError, ValueError, *failures)
    try:
        return work()
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except failed as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
