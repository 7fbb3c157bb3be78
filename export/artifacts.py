"""Artifacts are written into a staging folder beside their destination and published by one rename, so the
repository never picks up a half-written or unvalidated export."""

from __future__ import annotations

import shutil
from pathlib import Path


def staging_dir(out_dir: Path) -> Path:
    work = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def publish(work: Path, out_dir: Path) -> None:
    shutil.rmtree(out_dir, ignore_errors=True)
    work.rename(out_dir)
