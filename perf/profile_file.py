"""Profiles on disk (``perf/profiles/<hardware>/<model>.json``, and ``joint/<models>.json`` for services measured
together): one reader and one writer, with a schema version.

A file written before the version existed (no ``schema`` key) is schema 1, read as it is. A file from a newer
tritonrepo, one that is not JSON, or one without what its kind needs is refused with the reason: a planner that
read it wrong would size a fleet on numbers it misunderstood.
"""

from __future__ import annotations

import json
from pathlib import Path

from tritonrepo.errors import TritonRepoError

SCHEMA = 1  # bump when a field changes meaning; read() then migrates older files or refuses them
REQUIRED = {"model": ("variants",), "joint": ("models", "runs")}


class ProfileError(TritonRepoError):
    """A profile file that cannot be read as this version writes them."""


def read(path: Path, kind: str = "model") -> dict:
    try:
        profile = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{path}: cannot read the profile: {e}") from e
    if not isinstance(profile, dict):
        raise ProfileError(f"{path}: a profile is a JSON object, not {type(profile).__name__}")
    schema = profile.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA:
        raise ProfileError(f"{path}: profile schema {schema!r}; this tritonrepo reads schema 1 to {SCHEMA}: upgrade "
                           "it, or sweep again")
    if missing := [k for k in REQUIRED[kind] if k not in profile]:
        raise ProfileError(f"{path}: not a {kind} profile: no {', '.join(missing)}")
    return profile


def write(path: Path, profile: dict) -> Path:
    """Write ``profile`` with the current schema, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps({**profile, "schema": SCHEMA}, indent=2))
    part.replace(path)
    return path
