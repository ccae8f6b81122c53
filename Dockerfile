# syntax=docker/dockerfile:1
# The avatar node on CPU (portrait engine), as a container image (BuildKit, Docker 23 or newer).
#   docker build -t avatar-node:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9100:9100 avatar-node:0.1.0
# gRPC on 50051, Prometheus metrics on 9100 (/metrics). Arguments after the image name
# replace the defaults in CMD (see `avatar-node serve --help`); set AVATAR_TOKEN to require a token.

# --- build: a wheel of the project (the face models are fetched into it while it is built)
# and wheels of everything it needs.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY avatar_node ./avatar_node
COPY proto ./proto
COPY clients ./clients
COPY integrations ./integrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: plain pip install from those wheels, no compilers, no source tree.
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels avatar-node \
    && groupadd --gid 10001 avatar && useradd --uid 10001 --gid 10001 --create-home avatar
USER 10001:10001
WORKDIR /home/avatar
EXPOSE 50051 9100
# The process (overall gRPC health), not readiness: a full or draining node is healthy.
# (Serving on another --port? Change --target here to match.)
HEALTHCHECK --interval=30s --timeout=6s --start-period=60s --retries=3 \
    CMD ["avatar-node", "health", "--target", "127.0.0.1:50051", "--timeout", "5"]
# Exec form: avatar-node is PID 1 and gets SIGTERM itself, and drains (--grace seconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["avatar-node", "serve"]
CMD ["--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9100", "--grace", "30"]
