"""The plain-Python peer of the shell batch in `bench/shell.py`: a `ThreadPoolExecutor` of 8
threads running `subprocess.run([*COMMAND, item], capture_output=True)` per line of a file, the
least any Python runner that keeps each command's output does per item.

    python bench/shell_peer.py items.txt true
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        items = fh.read().split()
    command = sys.argv[2:]

    def one(item: str) -> int:
        return subprocess.run([*command, item], capture_output=True, check=True).returncode

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as ex:
        codes = list(ex.map(one, items))
    print(f"{len(codes)} commands, {sum(codes)} failed")


if __name__ == "__main__":
    main()
