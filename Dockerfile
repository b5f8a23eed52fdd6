# One image for the API and the worker (docker-compose.yml picks the command).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY domain domain
COPY store store
COPY workflows workflows
COPY activities activities
COPY api api
COPY config config
# Every top-level module (worker.py, settings.py, …): tests/test_compose.py checks none is missed.
COPY *.py ./
RUN pip install -e . && useradd --system --uid 10001 switchboard
USER switchboard
# The API; the worker's Temporal SDK metrics (SWITCHBOARD_WORKER_METRICS_ADDRESS).
EXPOSE 8000 9464
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
