"""The thin edge where resilience-tasks meets Celery: task base class, app install, poison."""
