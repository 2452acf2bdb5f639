# syntax=docker/dockerfile:1.7
# One image for every target: `docker run IMAGE run --target ingest` (or set TRIGGERS_TARGET).
# Build: docker build -t triggers:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.8
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
# Third-party dependencies first, from the lock alone, so that a code change reuses this layer.
COPY pyproject.toml uv.lock README.md ./
COPY libs/common/pyproject.toml libs/common/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/inbox/pyproject.toml services/inbox/
COPY services/webhooks/pyproject.toml services/webhooks/
COPY services/analytics/pyproject.toml services/analytics/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-install-workspace
# Then the workspace itself, installed as wheels (not editable), so the runtime stage needs only /app/.venv.
COPY libs libs
COPY services services
COPY src src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --all-packages --no-editable \
 && /app/.venv/bin/triggers --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="triggers" \
      org.opencontainers.image.description="Triggers: event ingestion, inbox, webhooks and analytics over Kafka" \
      org.opencontainers.image.licenses="Proprietary"
RUN groupadd --system --gid 10001 triggers \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin triggers
COPY --from=build --chown=root:root /app/.venv /app/.venv
# Listen on every interface inside the container; one worker per container (scale with replicas).
# Bytecode was compiled at build time, so the root filesystem can be mounted read-only; /tmp must stay
# writable (PROMETHEUS_MULTIPROC_DIR lives there when --workers > 1).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRIGGERS_HTTP_HOST=0.0.0.0 \
    TRIGGERS_HTTP_PORT=8080 \
    TRIGGERS_WORKERS=1 \
    TRIGGERS_TARGET=all
USER 10001:10001
WORKDIR /app
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["triggers"]
CMD ["run"]
