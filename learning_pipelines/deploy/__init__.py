"""The production topology: Celery step execution, the local stack's processes, deployment checks."""
