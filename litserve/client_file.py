"""The `client.py` that `run()` writes next to the user's script, as LitServe does."""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

__all__ = ["write_client_file"]

logger = logging.getLogger(__name__)


def write_client_file(url: str, directory: Path | None = None) -> Path | None:
    """Write client.py posting to `url` unless one exists; return its path, or None when skipped."""
    path = (directory or Path.cwd()) / "client.py"
    if path.exists():
        return None
    # The template is a data file of the package: the client's own code, kept out of the library's.
    template = resources.files("litserve").joinpath("templates/client.py.txt").read_text()
    path.write_text(template.replace("{url}", url))
    logger.info("wrote %s; run it with: python client.py", path)
    return path
