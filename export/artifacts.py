"""Artifacts are written into a staging folder beside their destination and published by one rename, so the
repository never picks up a half-written or unvalidated export."""

from __future__ import annotations

import json
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


def cached(report: Path, fingerprint: str) -> dict | None:
    """The report of a previous run with this fingerprint, or None (missing, or made from another recipe)."""
    if report.exists():
        data = json.loads(report.read_text())
        if data.get("fingerprint") == fingerprint:
            return data
    return None


def install(repository: Path, artifacts: Path, files, what: str, optional=()) -> list[Path]:
    """Copy validated artifacts (model, filename) into the repository's version folders; ``optional`` filenames are
    skipped when absent (built only where they can be validated, e.g. fp16 on a GPU host)."""
    from tritonrepo.paths import require

    require(artifacts / "validation.json", f"validated {what} artifacts (run `tritonrepo export {what.lower()}`)")
    placed = []
    for model, filename in files:
        if filename in optional and not (artifacts / filename).exists():
            continue
        dest = repository / model / "1" / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifacts / filename, dest)
        placed.append(dest)
    return placed
