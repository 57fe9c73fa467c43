# smtpconfig server image. Build:  docker build -t smtpconfig:0.1.0 .
# See docs/deployment.md ("Container image") for how to run it.

# Both stages must use the same base image: the venv's python is a symlink to the base's interpreter.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a self-contained venv with the service and the first-party file provider ------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/smtpconfig
WORKDIR /src
# .dockerignore lets in only what the build needs (no .venv, .git, data directories or tests).
COPY . .
# The exact versions in constraints.txt, the same ones `make run` and `make test` use.
RUN /opt/smtpconfig/bin/pip install -c constraints.txt . ./plugins/file-provider \
 && /opt/smtpconfig/bin/smtpconfig --help > /dev/null

# --- runtime: the venv and a non-root user, nothing else ------------------------------------------
FROM ${PYTHON_IMAGE}
# A fixed uid/gid so Kubernetes securityContext, volume ownership and file modes can name them.
RUN groupadd --system --gid 10001 smtpconfig \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/smtpconfig --shell /usr/sbin/nologin smtpconfig \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/smtpconfig
COPY --from=build /opt/smtpconfig /opt/smtpconfig
# SMTPCONFIG_DATA_DIR is set here rather than left to the relative default so that the server and a
# CLI started with `docker exec` / `kubectl exec` agree on the data directory (socket, admin token).
# Environment variables override the TOML file: set the data directory with this variable, not
# with `data_dir` in a config file.
ENV PATH=/opt/smtpconfig/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SMTPCONFIG_DATA_DIR=/var/lib/smtpconfig
WORKDIR /var/lib/smtpconfig
VOLUME ["/var/lib/smtpconfig"]
USER 10001:10001
# No EXPOSE: which ports are open depends on the settings. The ones used in docs/deployment.md:
#   2587  gRPC API (`listen`; TLS required off loopback)
#   8081  grpc.health.v1 only, plaintext (`health_listen`), for kubelet gRPC probes
#   9090  Prometheus /metrics (`metrics_listen`)
# By default the server listens on 127.0.0.1:2587 inside the container and on the Unix socket
# /var/lib/smtpconfig/smtpconfig.sock; neither is reachable from outside without more settings.
ENTRYPOINT ["smtpconfig", "serve"]
