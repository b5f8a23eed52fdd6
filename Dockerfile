# One image for the API and the worker (docker-compose.yml picks the command).
FROM python:3.12-slim

# Production unless told otherwise: run outside compose, the image refuses the development
# secrets rather than starting with them.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SWITCHBOARD_ENV=production
WORKDIR /app
# libmagic, with which python-magic tells an upload's kind from its bytes (media/inspect.py):
# Debian's `file` package brings it, whatever the release names the library's package.
RUN apt-get update \
    && apt-get install -y --no-install-recommends file \
    && rm -rf /var/lib/apt/lists/*
# Exactly the versions `make lock` pinned, each checked against its hash (a dependency missing
# from the file fails the build): the same build every time, nothing for development.
COPY constraints.txt ./
RUN pip install --require-hashes -r constraints.txt
COPY pyproject.toml README.md ./
COPY domain domain
COPY store store
COPY media media
COPY workflows workflows
COPY activities activities
COPY api api
COPY config config
# The web pages the API serves (api/pages.py): plain HTML, CSS and ES modules (the demo
# page is not served in production).
COPY web web
# Every top-level module (worker.py, settings.py, …): tests/test_compose.py checks none is missed.
# The processes run from here (WORKDIR), so the application itself needs no install.
COPY *.py ./
RUN useradd --system --uid 10001 switchboard
USER switchboard
# The API; the worker's Temporal SDK metrics (SWITCHBOARD_WORKER_METRICS_ADDRESS).
EXPOSE 8000 9464
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
