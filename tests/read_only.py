"""A folder that cannot be written, even by root (tests here often run as root, where chmod is ignored)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@contextlib.contextmanager
def read_only_folder(path: Path):
    """Inside the block nothing can be created, removed or changed under `path` (files and folders).

    As root, chmod is ignored, so the immutable attribute (chattr +i) is used; without it (no
    chattr, or a filesystem without the attribute) the test is skipped.
    """
    entries = [path, *sorted(path.rglob("*"))]
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        done = subprocess.run(["chattr", "+i", *map(str, entries)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["chattr", "-i", *map(str, entries)], capture_output=True)
            pytest.skip(f"chattr +i is not supported here: {done.stderr.decode().strip()}")
        try:
            yield path
        finally:
            subprocess.run(["chattr", "-i", *map(str, entries)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in entries}
        for p in entries:
            p.chmod(modes[p] & ~0o222)
        try:
            yield path
        finally:
            for p in reversed(entries):
                p.chmod(modes[p])
