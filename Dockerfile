# k8s-access-bot: install the locked dependencies in one stage, run as non-root in a slim one.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Exactly the versions in requirements.lock (bash scripts/lock.sh), each file's hash checked,
# wheels only; the build backend comes from the lock too.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid bot --home-dir /app --shell /usr/sbin/nologin bot
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY migrations ./migrations
# K8S_ACCESS_PORT: where `serve` listens, and so where the health check asks.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    K8S_ACCESS_CONFIG=/etc/k8s-access/k8s-access.yaml \
    K8S_ACCESS_MIGRATIONS=/app/migrations \
    K8S_ACCESS_PORT=3000 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['K8S_ACCESS_PORT']}/healthz\", timeout=4)"]
ENTRYPOINT ["k8s-access-bot"]
CMD ["serve"]
