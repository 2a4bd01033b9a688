"""Compatibility shim: RQ jobs queued before the ``service.jobs`` package stored ``service.execute.run_job`` as
their function name, and a worker must still find it. New jobs name :func:`service.jobs.run.run_job`.

A package rather than a module so that git sees ``service/execute.py`` as renamed to ``service/jobs/run.py``.
"""

from __future__ import annotations

from service.jobs.run import run_job

__all__ = ["run_job"]
