# deepseek-sidecar container image: see docs/container.md.
#
# Build it with `make image`: the wheels (the project's and every runtime dependency's, for the
# base image's Python and platform) are built on the host into .build/image/ and copied in, so
# the build needs no package index and installs exactly the files that were tested.
#
# BASE_IMAGE must provide python3 with the venv module and the CA store; the real target is
# python:3.12-slim. WHEELS names the wheel directory built for that Python version.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG VERSION=0.1.0
ARG WHEELS=.build/image/wheels-py3.12
# Optional features installed with it (shared guard over Redis, OpenTelemetry export).
ARG EXTRAS=redis,otel
COPY ${WHEELS}/ /wheels/
# pip installs from the copied wheels only, then removes itself (and setuptools, which older
# Pythons put in every venv) so the runtime venv holds the program and its dependencies only.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels \
        "deepseek-sidecar[${EXTRAS}]==${VERSION}" \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools \
    && /opt/venv/bin/deepseek-sidecar --help >/dev/null

FROM ${BASE_IMAGE}
ARG VERSION=0.1.0
ARG SOURCE_URL=""
ARG REVISION=""
# No licence has been chosen yet, so org.opencontainers.image.licenses is left out on purpose.
LABEL org.opencontainers.image.title="deepseek-sidecar" \
      org.opencontainers.image.description="Transparent observability and rate-limit monitoring sidecar for the DeepSeek API and any OpenAI-compatible API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.revision="${REVISION}"

# The upstream is https://api.deepseek.com: without a CA store every request would fail TLS
# verification at run time, so a base without one fails here, at build time, instead.
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        echo "error: the base image has no /etc/ssl/certs/ca-certificates.crt;" \
             "use a base with the ca-certificates package (python:3.12-slim has it)" >&2; \
        exit 1; \
    fi

COPY --from=build /opt/venv /opt/venv

# SSL_CERT_FILE pins the CA store OpenSSL verifies against, whatever the base's defaults are.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# Proxy on 127.0.0.1:8080 (the application shares the pod's loopback), admin on 0.0.0.0:9464.
EXPOSE 8080 9464

# A numeric user needs no passwd entry, and Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["deepseek-sidecar"]
CMD ["run"]
