"""The KF service: catalog, jobs, inference runtime, HTTP API and the ``kf`` command line around kf_core."""
