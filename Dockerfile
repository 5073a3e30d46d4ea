# hftgw container image: a build stage compiles the Cython extensions into a wheel, the runtime
# stage is python:slim with that wheel and no compiler.
#
#   docker build -t hftgw:0.1.0 .
#   docker run --rm -p 7001:7001 -p 9090:9090 -v hftgw-journal:/var/lib/hftgw \
#       -e HFTGW_JWT_SECRET="$(openssl rand -hex 32)" hftgw:0.1.0
#
# The journal lives on the /var/lib/hftgw volume; configuration is /etc/hftgw/hftgw.toml (mount
# your own over it or point HFTGW_CONFIG elsewhere) plus HFTGW_* variables.  SIGTERM reaches the
# gateway directly (exec-form ENTRYPOINT, the gateway is PID 1 and handles TERM/INT/HUP), which
# then drains: not ready, stop accepting, answer what is queued, log sessions out, flush the sink.

ARG PYTHON_IMAGE=python:3.11
ARG HFTGW_VERSION=0.1.0

# -- build: wheels for hftgw (Cython -> C -> .so here) and every dependency ----------------------
FROM ${PYTHON_IMAGE}-bookworm AS build
ARG HFTGW_VERSION
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
    && test -f "/wheels/hftgw-${HFTGW_VERSION}-cp311-cp311-linux_$(uname -m).whl"

# -- runtime ----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}-slim-bookworm AS runtime
ARG HFTGW_VERSION
LABEL org.opencontainers.image.title="hftgw" \
      org.opencontainers.image.description="Exchange order gateway: SBE over TCP, Cython matching core" \
      org.opencontainers.image.version="${HFTGW_VERSION}"
RUN groupadd --system --gid 10001 hftgw \
    && useradd --system --uid 10001 --gid hftgw --home-dir /var/lib/hftgw --no-create-home \
       --shell /usr/sbin/nologin hftgw \
    && mkdir -p /var/lib/hftgw /etc/hftgw \
    && chown hftgw:hftgw /var/lib/hftgw
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels "hftgw==${HFTGW_VERSION}" \
    && rm -rf /tmp/wheels
COPY configs/hftgw.toml /etc/hftgw/hftgw.toml
ENV HFTGW_CONFIG=/etc/hftgw/hftgw.toml \
    HFTGW_LISTEN=0.0.0.0:7001 \
    HFTGW_METRICS_LISTEN=0.0.0.0:9090 \
    HFTGW_JOURNAL_DIR=/var/lib/hftgw \
    HFTGW_LOG_FORMAT=json \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/hftgw
VOLUME ["/var/lib/hftgw"]
# order entry, market data (WebSocket), side port (/metrics /health /ready /directory)
EXPOSE 7001 7002 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["hftgw", "probe", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["hftgw"]
CMD ["serve"]
