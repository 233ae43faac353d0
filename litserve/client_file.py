"""The `client.py` that `run()` writes next to the user's script, as LitServe does."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["write_client_file"]

logger = logging.getLogger(__name__)

_TEMPLATE = """\
# Written by litserve: a minimal client for the server it started. Edit freely.
import os

import requests

headers = {{}}
if os.environ.get("LIT_SERVER_API_KEY"):
    headers["X-API-Key"] = os.environ["LIT_SERVER_API_KEY"]

response = requests.post("{url}", json={{"input": 4.0}}, headers=headers, timeout=60)
print(f"Status: {{response.status_code}}\\nResponse:\\n {{response.text}}")
"""


def write_client_file(url: str, directory: Path | None = None) -> Path | None:
    """Write client.py posting to `url` unless one exists; return its path, or None when skipped."""
    path = (directory or Path.cwd()) / "client.py"
    if path.exists():
        return None
    path.write_text(_TEMPLATE.format(url=url))
    logger.info("wrote %s; run it with: python client.py", path)
    return path
