"""ragkeeper agent API: FastAPI + Pydantic AI over the knowledge store.

Public surface: :func:`create_app` (tests, the local-stack launcher), :class:`Settings`,
and :func:`metric_names` (the chart's tests cross-check the dashboard against it);
``__version__`` is the package metadata's version (``_version.py``).
"""

from ._version import __version__
from .app import create_app, request_shutdown
from .metrics import REGISTRY, metric_names
from .settings import Settings

__all__ = [
    "REGISTRY",
    "Settings",
    "__version__",
    "create_app",
    "metric_names",
    "request_shutdown",
]
