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


def runtime_version() -> str:
    """The ONNX Runtime that validates: int8 kernels give different numbers from one release to the next, so an
    export is valid for the release it was validated with (the one the serving images pin, constraints.txt)."""
    import onnxruntime

    return onnxruntime.__version__


def up_to_date(out_dir: Path, fingerprint: str, force: bool, what: str) -> dict | None:
    """The validation report of an earlier export of this recipe in ``out_dir`` (None if forced, absent, stale, or
    validated with another ONNX Runtime)."""
    report = None if force else cached(out_dir / "validation.json", fingerprint)
    if report and report.get("onnxruntime") != runtime_version():
        log.info("%s artifacts in %s were validated with ONNX Runtime %s, this is %s: validating again", what,
                 out_dir, report.get("onnxruntime"), runtime_version())
        return None
    if report:
        log.info("%s artifacts up to date in %s", what, out_dir)
    return report


def publish_validated(work: Path, out_dir: Path, report: dict, what: str) -> dict:
    """Write the validation report (with the ONNX Runtime that validated) beside the staged artifacts, then publish
    them in one rename."""
    report["onnxruntime"] = runtime_version()
    (work / "validation.json").write_text(json.dumps(report, indent=2))
    publish(work, out_dir)
    log.info("%s export validated: fp32 %s | int8 %s", what, report["fp32"], report["int8"])
    return report


def install(repository: Path, artifacts: Path, files, what: str) -> list[Path]:
    """Copy validated artifacts (model, filename) into the repository's version folders."""
    from tritonrepo.paths import require

    require(artifacts / "validation.json", f"validated {what} artifacts (run `tritonrepo export {what.lower()}`)")
    placed = []
    for model, filename in files:
        dest = repository / model / "1" / filename
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifacts / filename, dest)
        placed.append(dest)
    return placed
