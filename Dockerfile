# One image for both commands: `headroom operator` (Deployment) and
# `headroom agent` (DaemonSet). Build from the repository root:
#   docker build -t headroom:dev .
#
# The base is pinned to a full patch-level tag on a named Debian release, so a
# rebuild picks up neither a new Python minor nor a new Debian. For a release,
# pin the digest too (PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...);
# tests/chart/test_dockerfile.py accepts either form and rejects floating tags.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- stage 1: build wheels for headroom and every dependency, install them
# into a self-contained virtualenv. Build tools stay in this stage.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/headroom \
 && /opt/headroom/bin/pip install --no-index --find-links /wheels headroom \
 && /opt/headroom/bin/pip uninstall --yes pip \
 && /opt/headroom/bin/headroom --version

# --- stage 2: the runtime: the base image plus the virtualenv, nothing else
# (no wheels, no pip in the venv, no compilers, no source tree).
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/headroom /opt/headroom
ENV PATH=/opt/headroom/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The operator runs as this unprivileged user. The agent's DaemonSet overrides
# it with runAsUser: 0 because it writes memory.high and memory.reclaim in the
# host's cgroup v2 tree (mounted read-write), whose files belong to root.
RUN groupadd --system --gid 10001 headroom \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin headroom
USER 10001:10001
ENTRYPOINT ["headroom"]
CMD ["--help"]
