"""Detections over HTTP: one engine behind a bounded queue, a JSON API, a page, metrics.

- uploads.py: an uploaded file's format by its bytes, its size from its header, decoding.
- engine_worker.py: the engine's thread, its bounded queue, batching, deadlines.
- metrics.py: the Prometheus metrics of one server.
- app.py: the Starlette application (routes, limits, token, the page in page/).
- server.py: the settings checked, then uvicorn until SIGTERM.
- ray_deployment.py: the same application as a Ray Serve deployment (optional).
"""
