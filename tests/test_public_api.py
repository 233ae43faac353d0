"""The public door: __all__ matches the real public names, and importing has no side effects."""

from __future__ import annotations

import subprocess
import sys

import litserve


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in dir(litserve) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(litserve, name)).__name__ == "module"}
    assert sorted(litserve.__all__) == litserve.__all__
    assert set(litserve.__all__) == public - modules


def test_import_has_no_side_effects() -> None:
    code = (
        "import logging, os, sys\n"
        "before = dict(os.environ)\n"
        "import litserve\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'ipywidgets' not in sys.modules, 'ipywidgets imported'\n"
        "assert 'nest_asyncio' not in sys.modules, 'nest_asyncio imported'\n"
        "assert not logging.getLogger('litserve').handlers, 'handlers added'\n"
        "assert not logging.getLogger().handlers, 'root logging configured'\n"
        "assert dict(os.environ) == before\n"
        "import asyncio; asyncio.run(asyncio.sleep(0))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
