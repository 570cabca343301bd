"""Prefect flows over the DVC pipeline: one task per DVC stage, ordered by dvc.yaml's graph."""
import os

# No network here: keep every library's telemetry off before it is imported.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# The process work pool the deployments in prefect.yaml run on (`python -m pipeline worker` polls it).
WORK_POOL = "dl-curriculum"
