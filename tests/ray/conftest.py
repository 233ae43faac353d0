"""Ray reads these when it is imported (collection imports it): keep every Ray process of these tests on
127.0.0.1 and off the usage-stats reporter. Only Ray reads them; other tests are not affected."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
