# syntax=docker/dockerfile:1
# The production image: extauthz in a slim Python runtime, non-root, no build tools.
#   docker build -t extauthz .
# For reproducible builds pin the base by digest, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest> -t extauthz .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first (a layer that changes only with the lock), exactly as locked.
COPY requirements.lock ./
RUN python -m venv /opt/extauthz \
 && /opt/extauthz/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
# Generate the protobuf stubs from protos/ and build the wheel in a throwaway venv, with the
# tools pinned by hash too (requirements-build.lock; --no-isolation: the build backend is the
# locked setuptools, not one fetched unpinned).
COPY requirements-build.lock ./
RUN python -m venv /tmp/build \
 && /tmp/build/bin/pip install --no-cache-dir --require-hashes -r requirements-build.lock
COPY pyproject.toml README.md LICENSE ./
COPY protos ./protos
COPY extauthz ./extauthz
RUN /tmp/build/bin/python protos/generate.py \
 && /tmp/build/bin/python -m build --wheel --no-isolation --outdir /dist . \
 && /opt/extauthz/bin/pip install --no-cache-dir --no-deps /dist/extauthz-*.whl

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 extauthz \
 && useradd --system --uid 10001 --gid extauthz --home-dir /nonexistent --shell /usr/sbin/nologin extauthz
COPY --from=build /opt/extauthz /opt/extauthz
ENV PATH=/opt/extauthz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /tmp
USER 10001:10001
# Check over gRPC, the step-up pages, Check over HTTP, /metrics (admin.listen: set 0.0.0.0:9004)
EXPOSE 9001 9002 9003 9004
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9002/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["extauthz"]
CMD ["serve"]
