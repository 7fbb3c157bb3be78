"""Artifacts are written into a staging folder beside their destination and published by one rename, so the
repository never picks up a half-written or unvalidated export."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


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


def up_to_date(out_dir: Path, fingerprint: str, force: bool, what: str) -> dict | None:
    """The validation report of an earlier export of this recipe in ``out_dir`` (None if forced, absent or stale)."""
    report = None if force else cached(out_dir / "validation.json", fingerprint)
    if report:
        log.info("%s artifacts up to date in %s", what, out_dir)
    return report


def publish_validated(work: Path, out_dir: Path, report: dict, what: str) -> dict:
    """Write the validation report beside the staged artifacts, then publish them in one rename."""
    (work / "validation.json").write_text(json.dumps(report, indent=2))
    publish(work, out_dir)
    log.info("%s export validated: fp32 %s | int8 %s", what, report["fp32"], report["int8"])
    return report


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
