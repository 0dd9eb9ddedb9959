# The image for workers, beat and Flower (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py ./
COPY resilience_tasks ./resilience_tasks
COPY workers ./workers
RUN pip install --no-cache-dir ".[ops]" \
    && useradd --create-home --uid 10001 app
USER app
