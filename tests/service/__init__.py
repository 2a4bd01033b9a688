"""Tests of the service: catalog, artifacts, jobs, workers, HTTP API and CLI, on SQLite and PostgreSQL."""
