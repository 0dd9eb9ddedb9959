"""The deployable Celery app: ``celery -A workers.app worker`` and ``... beat``."""
