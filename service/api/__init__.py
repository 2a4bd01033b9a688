"""The HTTP edge: middleware, authentication, multipart uploads, Prometheus metrics and the routes."""
