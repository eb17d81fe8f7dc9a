# featurestream: one image for every app process (init, engine, feature server, producer).
#
#   docker build -t featurestream:local .
#   docker run --rm featurestream:local --help
#
# The image holds no broker and no Redis: point it at existing ones with
# FEATURESTREAM_KAFKA_BOOTSTRAP and FEATURESTREAM_REDIS_URL (docker-compose.yml does).
# Every pinned dependency ships manylinux wheels for CPython 3.11 on linux/amd64,
# so no compiler or -dev packages are installed.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# The sources are installed from /src (a regular, non-editable install) and then
# removed, so nothing in the working directory shadows the installed packages.
WORKDIR /src

# 1. Third-party dependencies, in their own layer: rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# 2. featurestream itself. The Avro contracts (featurestream/events/schemas/*.avsc)
#    are package data and are installed with the package.
COPY README.md ./
COPY featurestream ./featurestream
COPY featurestream_app ./featurestream_app
COPY streams ./streams
COPY producers ./producers
COPY serving ./serving
# `python -I` keeps /src off sys.path: the check sees the installed package.
RUN pip install --no-cache-dir . \
    && python -I -c "from featurestream.events import load_contracts; assert load_contracts()" \
    && rm -rf /src

# 3. The Feast repository, run from /app (FEATURESTREAM_REPO_PATH). Its registry
#    (feature_repo/data/registry.db) is written by `featurestream apply`; compose
#    mounts a shared volume there, created with this directory's owner.
WORKDIR /app
COPY feature_repo ./feature_repo

RUN groupadd --system --gid 10001 featurestream \
    && useradd --system --uid 10001 --gid featurestream --create-home \
        --home-dir /home/featurestream --shell /usr/sbin/nologin featurestream \
    && mkdir -p /app/feature_repo/data /var/lib/featurestream \
    && chown featurestream:featurestream /app/feature_repo/data /var/lib/featurestream

ENV FEATURESTREAM_REPO_PATH=/app/feature_repo \
    FEATURESTREAM_STATE_DIR=/var/lib/featurestream \
    FEATURESTREAM_SERVE_HOST=0.0.0.0 \
    FEATURESTREAM_SERVE_PORT=6566

# Numeric, so runtimes can verify the image runs as non-root (runAsNonRoot).
USER 10001:10001
EXPOSE 6566

ENTRYPOINT ["featurestream"]
CMD ["--help"]
