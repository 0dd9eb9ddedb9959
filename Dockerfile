# The image for workers, beat and Flower (docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
# beat_schedule.py is part of the package (pyproject's py-modules): the installed app runs from
# any directory.
COPY pyproject.toml README.md beat_schedule.py ./
COPY resilience_tasks ./resilience_tasks
COPY workers ./workers
RUN pip install --no-cache-dir ".[ops]" \
    && useradd --create-home --uid 10001 app
USER app
# A worker consumes every resource queue and its team's control queue without -Q. Run exactly
# one beat beside the workers (docker-compose.yml gives both commands).
CMD ["celery", "-A", "workers.app", "worker", "-E", "-l", "INFO"]
