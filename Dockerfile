# syntax=docker/dockerfile:1
# event-consumer: multi-stage build on a slim Python base; runs as an unprivileged user.
#   docker build -t event-consumer .
#   docker run --rm -v "$PWD/config.toml:/etc/event-consumer/config.toml:ro" \
#     -e REDMIST_CLIENT_SECRET -e EVENT_CONSUMER__AUTH__CLIENT_ID=my-client event-consumer
# Config: the mounted file, overridden by EVENT_CONSUMER__SECTION__KEY environment variables.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
RUN python -m venv /opt/event-consumer \
    && /opt/event-consumer/bin/pip install --no-cache-dir '.[nats]'

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="event-consumer" \
      org.opencontainers.image.description="Relay a SignalR hub's live events to JSON lines"
ENV PATH=/opt/event-consumer/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVENT_CONSUMER__HTTP__ENABLED=true \
    EVENT_CONSUMER__HTTP__HOST=0.0.0.0 \
    EVENT_CONSUMER__HTTP__PORT=9464
RUN groupadd --system --gid 10001 consumer \
    && useradd --system --uid 10001 --gid consumer --home-dir /var/lib/event-consumer --shell /usr/sbin/nologin consumer \
    && install -d -o consumer -g consumer -m 0750 /var/lib/event-consumer \
    && install -d -m 0755 /etc/event-consumer
COPY --from=build /opt/event-consumer /opt/event-consumer
COPY config.toml /etc/event-consumer/config.toml
USER 10001:10001
WORKDIR /var/lib/event-consumer
VOLUME ["/var/lib/event-consumer"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; sys.exit(0 if u.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["event-consumer"]
CMD ["run", "--config", "/etc/event-consumer/config.toml"]
