# haproxy-asg-reconciler as a container: the sidecar of an HAProxy container that shares its config
# directory and runtime sockets (docs/container.md).

# -- build: the wheel, installed with its dependencies into a virtual environment ---------------
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install /wheels/*.whl

# -- run: the same Python, the venv, HAProxy for `haproxy -c` only, and tini as PID 1 ---------
# bookworm: its haproxy is 2.6, the version the controller drives; run HAProxy 2.6 beside it, so
# that the check_command judges a file the way the running HAProxy will. tini: PID 1 inherits
# every orphaned process (a check or reload command's background children) and must reap them,
# which the controller does not; tini also passes SIGTERM on to it.
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=builder /opt/venv /opt/venv
# The template inside the package (`reconcile template` prints the same file); the repository's
# top-level haproxy.cfg.j2 is a symlink to it, and a symlink is not a file to copy.
COPY reconciler/haproxy.cfg.j2 /usr/share/haproxy-asg-reconciler/haproxy.cfg.j2
# A numeric user, so that `runAsNonRoot` can verify it; the shared directories are its own, so a
# fresh volume mounted on them starts writable for it.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent reconciler \
 && install -d -o 10001 -g 10001 /usr/local/etc/haproxy /var/run/haproxy
# The listen address is a default (RECONCILER_DEFAULT_*): `[server] listen` in the user's file,
# or RECONCILER_SERVER_LISTEN, wins over it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECONCILER_CONFIG=/etc/reconciler/reconciler.toml \
    RECONCILER_LOG_FORMAT=json \
    RECONCILER_DEFAULT_SERVER_LISTEN=0.0.0.0:9100
USER 10001:10001
EXPOSE 9100
# /healthz answers 503 when no cycle succeeded lately. `reconcile health` asks it at the listen
# address the settings end up with, whichever place set it, never through a proxy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["reconcile", "health"]
ENTRYPOINT ["/usr/bin/tini", "--", "reconcile"]
