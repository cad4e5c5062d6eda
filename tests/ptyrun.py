"""Run a command on a real pseudo-terminal (24x80) and collect everything it wrote."""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Poke = Callable[[subprocess.Popen[bytes], bytes], None]


def run_in_pty(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    poke: Poke | None = None,
    timeout: float = 60,
) -> tuple[int, bytes]:
    """(exit code, output). The output is drained all along (a full pty would block the
    child); `poke(proc, output_so_far)` is called between reads, so a test can act once the
    child got far enough. A child still running after `timeout` is killed."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(
        list(argv), cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=dict(env), close_fds=True
    )
    os.close(slave)  # the child holds the only slave end, so EOF comes when it exits
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if poke is not None:
                poke(proc, b"".join(chunks))
            ready, _, _ = select.select([master], [], [], 0.01)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # Linux reports EIO once the slave side is closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        else:
            proc.kill()
    finally:
        os.close(master)
    return proc.wait(timeout=30), b"".join(chunks)
