"""Suite-wide settings: the schema cache goes to a directory of this test session (in-process
and subprocess runs alike), never to the user's cache."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix="flowrun-test-cache-")
os.environ["FLOWRUN_CACHE_DIR"] = _CACHE
atexit.register(functools.partial(shutil.rmtree, _CACHE, ignore_errors=True))
