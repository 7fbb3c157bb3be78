"""Profiles on disk (``perf/profiles/<hardware>/<model>.json``, and ``joint/<models>.json`` for services measured
together): one reader and one writer, with a schema version.

A model profile reads into a ``Profile``: its config variants (``Swept``), each with its perf_analyzer rows
(``PerfRow``), and the best variant within the p95 bound (``Best``). A joint profile, and the capacity runs of
``plan --verify`` in either kind, stay plain records (perf/capacity.py writes them).

A file written before the version existed (no ``schema`` key) is schema 1, read as it is. A file from a newer
tritonrepo, one that is not JSON, or one without what its kind needs (or with a field this version does not know) is
refused with the reason: a planner that read it wrong would size a fleet on numbers it misunderstood.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from tritonrepo.errors import TritonRepoError

from .perf_analyzer import PerfRow

SCHEMA = 1  # bump when a field changes meaning; read() then migrates older files or refuses them


class ProfileError(TritonRepoError):
    """A profile file that cannot be read as this version writes them."""


@dataclass(frozen=True)
class Swept:
    """One config variant of a sweep: its name, the variant's fields (tuning.Variant as a dict; Model Analyzer's
    instance group and batch size for an import) and its measurements in the order taken."""

    variant: str
    rows: tuple[PerfRow, ...]
    config: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Best:
    """The row a profile records as a variant's best within its p95 bound (sweep.best)."""

    variant: str
    concurrency: float = 0.0
    request_rate: float = 0.0
    load: str = ""  # "c4", "poisson 300/s"
    infer_per_s: float
    p95_ms: float


@dataclass(frozen=True)
class Profile:
    """A model's sweep on one hardware: every variant's rows, the best within ``p95_bound_ms`` and the untuned
    config's, with where and when it was measured (``provenance``)."""

    variants: tuple[Swept, ...]
    model: str = ""  # the entry perf_analyzer drove
    swept: str = ""  # the model whose config varied (the entry's encoder for an ensemble)
    target: str = ""
    provenance: dict = field(default_factory=dict)
    inputs: str = ""
    p95_bound_ms: float | None = None
    measurement_ms: int | None = None
    wall_s: float | None = None
    best: Best | None = None
    untuned: Best | None = None
    gain_vs_untuned: float | None = None  # best over untuned throughput, both within the bound
    proxy: str | None = None  # measured with a stand-in for the target's config (gpu_profile): not that config's
    rates_remeasured: dict | None = None  # the open-loop rows' own provenance when only they were measured again
    capacity_runs: tuple[dict, ...] = ()  # plan --verify's measured capacities (perf/capacity.py)
    source: str | None = None  # an import: where it came from
    note: str | None = None

    @property
    def machine(self) -> dict:
        return self.provenance.get("machine") or {}

    def variant(self, name: str) -> Swept | None:
        return next((v for v in self.variants if v.variant == name), None)

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        """The profile a dict holds; ValueError naming what is missing, unknown or malformed."""
        if "variants" not in data:
            raise ValueError("no variants")
        if unknown := sorted(set(data) - {f.name for f in dataclasses.fields(cls)} - {"schema"}):
            raise ValueError(f"fields this version does not know: {', '.join(unknown)}")
        values = {k: v for k, v in data.items() if k != "schema"}
        values["variants"] = tuple(_swept(v) for v in data["variants"])
        for key in ("best", "untuned"):
            if values.get(key) is not None:
                values[key] = _record(Best, values[key], key)
        values["capacity_runs"] = tuple(data.get("capacity_runs") or ())
        return cls(**values)

    def to_dict(self) -> dict:
        """As written on disk: every field set (optional ones left out while unset), with the schema."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "variants":
                value = [{"variant": v.variant, "config": v.config, "rows": [dataclasses.asdict(r) for r in v.rows]}
                         for v in value]
            elif isinstance(value, Best):
                value = dataclasses.asdict(value)
            elif f.name == "capacity_runs":
                value = list(value)
            if value not in (None, (), [], {}, "") or f.name in ("best", "untuned", "gain_vs_untuned", "variants"):
                out[f.name] = value
        return out | {"schema": SCHEMA}


def _record(kind, data, what: str):
    if not isinstance(data, dict):
        raise ValueError(f"{what}: not an object")
    try:
        return kind(**data)
    except TypeError as e:  # a field missing or unknown
        raise ValueError(f"{what}: {e}") from e


def _swept(data) -> Swept:
    if not isinstance(data, dict) or "variant" not in data:
        raise ValueError(f"a variant without a name: {str(data)[:80]}")
    unknown = set(data) - {"variant", "rows", "config"}
    if unknown:
        raise ValueError(f"variant {data['variant']!r}: fields this version does not know: {sorted(unknown)}")
    name = data["variant"]
    rows = tuple(_record(PerfRow, r, f"variant {name!r}, row {i}") for i, r in enumerate(data.get("rows", [])))
    return Swept(variant=name, rows=rows, config=data.get("config") or {})


def _load(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"{path}: cannot read the profile: {e}") from e
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile is a JSON object, not {type(data).__name__}")
    schema = data.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or not 1 <= schema <= SCHEMA:
        raise ProfileError(f"{path}: profile schema {schema!r}; this tritonrepo reads schema 1 to {SCHEMA}: upgrade "
                           "it, or sweep again")
    return data


def read(path: Path) -> Profile:
    """A model profile (``<hardware>/<model>.json``)."""
    try:
        return Profile.from_dict(_load(path))
    except ValueError as e:
        raise ProfileError(f"{path}: not a model profile: {e}") from e


def read_joint(path: Path) -> dict:
    """A joint profile (``<hardware>/joint/<models>.json``): the models measured together and their runs."""
    data = _load(path)
    if missing := [k for k in ("models", "runs") if k not in data]:
        raise ProfileError(f"{path}: not a joint profile: no {', '.join(missing)}")
    return data


def write(path: Path, profile: Profile | dict) -> Path:
    """Write a profile (a joint one as its dict) with the current schema, atomically (a reader never sees half a
    file)."""
    data = profile.to_dict() if isinstance(profile, Profile) else {**profile, "schema": SCHEMA}
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(data, indent=2))
    part.replace(path)
    return path
