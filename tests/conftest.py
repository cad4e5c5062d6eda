"""Suite-wide settings: the schema cache goes to a directory of this test session (in-process
and subprocess runs alike), never to the user's cache."""

from __future__ import annotations

import os
import tempfile

os.environ["FLOWRUN_CACHE_DIR"] = tempfile.mkdtemp(prefix="flowrun-test-cache-")
