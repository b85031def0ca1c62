"""The agent's version, read from the installed package's metadata.

The number is written once, in ``services/agent/pyproject.toml``; the OpenAPI
document and the exported trace spans report what this module reads.
"""

from __future__ import annotations

from importlib.metadata import version

__version__ = version("ragkeeper-agent")
