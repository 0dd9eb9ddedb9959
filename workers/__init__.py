"""The deployable Celery app: ``celery -A workers.app worker`` and ``celery -A workers.app beat``."""
