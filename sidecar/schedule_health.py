"""A bridge for the cli branch only: delete it when the lead's `sidecar/service/` package
lands, and import `sidecar.service.schedules` instead (http/app.py, http/keys.py).

Until then `sidecar/service.py`, a module, hides the directory `sidecar/service/` from the
import system (a module wins over a directory without `__init__.py`), so the code moved to
`sidecar/service/schedules.py` is loaded here under its final name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "sidecar.service.schedules"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _NAME, Path(__file__).with_name("service") / "schedules.py"
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

Schedules = sys.modules[_NAME].Schedules

__all__ = ["Schedules"]
