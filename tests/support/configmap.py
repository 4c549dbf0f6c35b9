"""A ConfigMap volume as kubelet lays it out and updates it (its atomic writer):

    DIR/..2026_11_30_13_04_40.0001/admin.yaml   the files of one version
    DIR/..data -> ..2026_11_30_13_04_40.0001    the current version
    DIR/admin.yaml -> ..data/admin.yaml         what a container sees

An update writes a new timestamped directory, points a ``..data_tmp`` symlink at it,
renames that over ``..data`` (the one atomic step), adds the symlinks of new names, drops
those of names that went, and removes the old directory."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

DATA = "..data"


class ConfigMapVolume:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.versions = 0

    def write(self, files: Mapping[str, str]) -> None:
        """Publish ``files`` (name -> content) as the next version, as kubelet does."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.versions += 1
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        version = f"..{stamp}.{os.getpid()}{self.versions:04d}"
        new = self.path / version
        new.mkdir()
        for name, text in files.items():
            (new / name).write_text(text)
        data = self.path / DATA
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        os.symlink(version, tmp)
        os.rename(tmp, data)
        for name in files:
            link = self.path / name
            if not link.is_symlink():
                os.symlink(f"{DATA}/{name}", link)
        for link in self.path.iterdir():
            if not link.name.startswith(".") and link.is_symlink() and link.name not in files:
                link.unlink()
        if old is not None:
            shutil.rmtree(self.path / old, ignore_errors=True)  # a test may have removed it
