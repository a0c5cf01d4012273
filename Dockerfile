# syntax=docker/dockerfile:1
# privacy-service image: `docker build -t privacy-service .`
# No key, token or .env file is ever part of the image. The local keyring is supplied at run time
# at PRIVACY_KEYRING_PATH (see README, "Running with Docker"); Vault tokens come from the environment.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: make the wheel and install it (runtime dependencies only) into a virtualenv --------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY privacy_service ./privacy_service
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install /dist/*.whl

# --- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PRIVACY_HOST=0.0.0.0 \
    PRIVACY_PORT=8000 \
    PRIVACY_POLICY_DIR=/app/policies \
    PRIVACY_KEYRING_PATH=/run/secrets/keyring.json

# A fixed numeric uid so that a keyring file mounted from outside can be owned by it (chown 10001).
# /run/secrets and /app/var belong to that user (0700): a named volume mounted there starts with
# this ownership, so the service can create the keyring (0600) or an SQLite database in it.
RUN groupadd --system --gid 10001 privacy \
 && useradd --system --uid 10001 --gid privacy --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin privacy \
 && mkdir -p /app/var /run/secrets \
 && chown privacy:privacy /app/var /run/secrets \
 && chmod 0700 /app/var /run/secrets

COPY --from=build /opt/venv /opt/venv
COPY policies /app/policies
WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Liveness only (python, since the slim image has no curl). /readyz also checks database and keys.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import http.client, os, sys; c = http.client.HTTPConnection('127.0.0.1', int(os.environ.get('PRIVACY_PORT', '8000')), timeout=4); c.request('GET', '/healthz'); sys.exit(0 if c.getresponse().status == 200 else 1)"]

ENTRYPOINT ["privacy-service"]
CMD ["serve"]
