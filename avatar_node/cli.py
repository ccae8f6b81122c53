"""`avatar-node`: run the node, check a weights directory.

Errors in what was asked for (a busy or invalid port, unreadable TLS files, an unknown
engine) are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from . import __version__
from .engines import registry

#: The bearer token clients must send; the same variable the `avatar` command reads.
TOKEN_ENV = "AVATAR_TOKEN"
#: Read too, for configurations written before the variable was shared.
OLD_TOKEN_ENV = "AVATAR_NODE_TOKEN"


def _serve(args: argparse.Namespace) -> int:
    from .endpoint import ListenError
    from .server import AvatarNodeServer, NodeConfig, new_event_loop

    token = args.auth_token or os.environ.get(TOKEN_ENV) or os.environ.get(OLD_TOKEN_ENV) or None
    engines = [name.strip() for name in args.engine.split(",") if name.strip()]
    unknown = [name for name in engines if name not in registry.available()]
    if not engines or unknown:
        print(f"error: unknown engine {', '.join(unknown) or repr(args.engine)}; available: "
              f"{', '.join(registry.available())}", file=sys.stderr)
        return 2
    needing = [name for name in engines if name in registry.NEEDS_WEIGHTS]
    if needing and not args.weights:
        print(f"error: the {needing[0]} engine needs its weights: add --weights DIR "
              "(check a directory with: avatar-node check-weights DIR)", file=sys.stderr)
        return 2
    config = NodeConfig(
        host=args.host,
        port=args.port,
        engines=engines,
        max_sessions=args.max_sessions,
        auth_token=token,
        grace_s=args.grace,
        weights_dir=args.weights,
        vae=args.vae,
        identity_cache_bytes=args.avatar_cache_mb * 1024 * 1024,
        live_load_target=args.live_load_target,
        hardware_encoder=args.nvenc,
        web_port=args.web_port if args.web else None,
        web_host=args.web_host,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        metrics_port=args.metrics_port,
    )

    async def run() -> None:
        server = AvatarNodeServer(config)
        port = await server.start()
        extras = [", token required" if token else "",
                  ", TLS" + (" with client certificates" if config.tls_client_ca else "") if config.tls_cert else "",
                  f", metrics on :{server.metrics_port}/metrics" if server.metrics is not None else ""]
        print(
            f"avatar node ready on {config.host}:{port} (engines {', '.join(engines)}, "
            f"{config.max_sessions} sessions{''.join(extras)})",
            flush=True,
        )
        if server.web is not None:
            print(f"web page on http://{config.web_host}:{server.web_port}/"
                  f"{' (it asks for the token)' if token else ''}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # Windows
                pass
        await stop.wait()
        print(f"draining (up to {config.grace_s:g} s)...", flush=True)
        await server.stop()

    loop = new_event_loop()
    try:
        loop.run_until_complete(run())
    except (ValueError, ListenError) as exc:  # a busy port, bad TLS files, an unknown engine...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        loop.close()
    return 0


def _health(args: argparse.Namespace) -> int:
    """Ask a node's gRPC health service; exit 0 when SERVING (for container health checks)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"error: no health answer from {args.target}: {exc.code().name} "  # type: ignore[attr-defined]
                  f"({exc.details()})", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.service or 'overall'}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _livetalk_command(module: str, argv: list[str]) -> int:
    """Run one of the livetalk engine's commands (they need the [diffusion] extra)."""
    import importlib

    try:
        command = importlib.import_module(f".engines.livetalk.{module}", __package__).main
    except ImportError as exc:
        print(f"error: the diffusion engine needs its extra: pip install 'avatar-node[diffusion]' ({exc})",
              file=sys.stderr)
        return 2
    return int(command(argv))


#: Subcommands that parse their own arguments (they live with the diffusion engine).
_PASS_THROUGH = {"check-weights": "check_weights", "make-tiny-weights": "tiny", "encode-prompts": "encode_prompts"}


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in _PASS_THROUGH:
        return _livetalk_command(_PASS_THROUGH[args_in[0]], args_in[1:])
    args = build_parser().parse_args(args_in)
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return int(args.run(args))


def build_parser() -> argparse.ArgumentParser:
    """The command line (the container image and the Kubernetes manifests use its flags)."""
    parser = argparse.ArgumentParser(prog="avatar-node", description="The real-time avatar node.")
    parser.add_argument("--version", action="version", version=f"avatar-node {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the gRPC API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    serve.add_argument("--port", type=int, default=50051, help="gRPC port (default 50051; 0 = any free port)")
    serve.add_argument("--engine", default=registry.DEFAULT_ENGINE,
                       help=f"engine(s) to serve, comma-separated; the first is the default "
                       f"(available: {', '.join(registry.available())})")
    serve.add_argument("--weights", default=None, help="weights directory, for engines that load weights")
    serve.add_argument("--vae", choices=("full", "tiny", "auto"), default=None,
                       help="livetalk's video decoder: full (default; the Wan2.1 VAE, the release's quality), "
                       "tiny (much faster, softer; needs taew2_1.pth from github.com/madebyollin/taehv in "
                       "the weights directory) or auto (tiny when that file is there)")
    serve.add_argument("--max-sessions", type=int, default=4, help="sessions at once; more get RESOURCE_EXHAUSTED")
    serve.add_argument("--auth-token", default="", help="require `authorization: Bearer TOKEN` "
                       f"(or set {TOKEN_ENV}; {OLD_TOKEN_ENV} is read too)")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds sessions get to finish on SIGTERM")
    serve.add_argument("--live-load-target", type=float, default=0.85, metavar="SHARE",
                       help="share of the cores live sessions may plan to use before new ones are refused "
                       "(admission control; raise it only to measure capacity)")
    serve.add_argument("--nvenc", action="store_true",
                       help="encode H.264 with NVENC where an NVIDIA GPU offers it (else libx264, per session; "
                       "H100 and H200 have no encoder units)")
    serve.add_argument("--avatar-cache-mb", type=int, default=1024,
                       help="memory for prepared avatars kept for reuse (least recently used go first)")
    serve.add_argument("--web", action="store_true", help="also serve the web page and its WHEP endpoint "
                       "(needs the [web] extra)")
    serve.add_argument("--web-port", type=int, default=8080, help="port of the web page (with --web)")
    serve.add_argument("--web-host", default="127.0.0.1", help="address of the web page (with --web); "
                       "loopback unless you say otherwise")
    serve.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (default: off)")
    serve.add_argument("--tls-cert", default=None, metavar="FILE",
                       help="serve TLS with this PEM certificate chain (with --tls-key)")
    serve.add_argument("--tls-key", default=None, metavar="FILE", help="the PEM private key of --tls-cert")
    serve.add_argument("--tls-client-ca", default=None, metavar="FILE",
                       help="mutual TLS: accept only clients with a certificate signed by this PEM CA")
    serve.add_argument("-v", "--verbose", action="store_true")
    serve.set_defaults(run=_serve)

    check = sub.add_parser("health", help="check a running node's gRPC health (exit 0 when serving)")
    check.add_argument("--target", default="127.0.0.1:50051", metavar="HOST:PORT",
                       help="the node (plaintext gRPC; default 127.0.0.1:50051)")
    check.add_argument("--service", default="", help="'' for the process (liveness), avatar.v1.AvatarNode for "
                       "readiness (not serving while full or draining)")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer")
    check.set_defaults(run=_health)

    # Listed for --help; main() hands their arguments to them before parsing.
    sub.add_parser("check-weights", help="check a weights directory for the diffusion engine")
    sub.add_parser("make-tiny-weights", help="write a tiny random-weight directory for the diffusion engine")
    sub.add_parser("encode-prompts", help="pre-encode text prompts for the diffusion engine")
    return parser


if __name__ == "__main__":
    sys.exit(main())
