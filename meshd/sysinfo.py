"""Version facts answered by the control API's ``version`` call."""

from __future__ import annotations

import platform
from typing import Any

from meshd import __version__
from meshd.api import API_VERSION


def version_info() -> dict[str, Any]:
    return {"meshd": __version__, "api": API_VERSION, "python": platform.python_version()}
