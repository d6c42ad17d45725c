# task-sidecar image: `docker build -t task-sidecar .`
# Runs `task-sidecar serve` as UID 10001 with nothing writable but TASK_SIDECAR_DATA_DIR.
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (helm/task-sidecar).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# policies.yaml is the target of the symlink sidecar/default_policies.yaml; the wheel stores
# a real copy of it.
COPY pyproject.toml README.md policies.yaml ./
COPY sidecar/ sidecar/
RUN /opt/venv/bin/pip install . \
    && cd / \
    && /opt/venv/bin/task-sidecar check

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASK_SIDECAR_DATA_DIR=/var/lib/task-sidecar
RUN groupadd --system --gid 10001 task-sidecar \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/task-sidecar --shell /usr/sbin/nologin task-sidecar \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/task-sidecar
COPY --from=builder /opt/venv /opt/venv
USER 10001:10001
WORKDIR /var/lib/task-sidecar
EXPOSE 8080
ENTRYPOINT ["task-sidecar", "serve"]
