"""Tuned deployments: the best variant a measured sweep found, written back through the specs.

``tritonrepo perf apply PROFILE`` (or ``perf sweep --apply``) records a profile's best variant in
``perf/tuned/<target>.json`` (``perf/sweep.record_best``); ``with_tuning`` (the registry's ``all_specs()`` calls it)
applies every recorded variant over the spec's deployment for that target, so ``tritonrepo render`` writes the tuned
``configs/<target>.pbtxt`` and ``render --check`` keeps them in step.
Only measured targets get entries: a tuned file names the profile it came from and what it measured.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from .paths import ROOT
from .specs import AnySpec, Batching, Deployment, ModelSpec

TUNED = ROOT / "perf" / "tuned"


@dataclass(frozen=True, kw_only=True)
class Variant:
    """One point of a sweep grid: what changes in a model's deployment."""

    instances: int
    max_queue_delay_us: int
    max_batch_size: int | None = None  # None: keep the spec's
    preferred_batch_sizes: tuple[int, ...] | None = None  # None: keep the spec's; the batcher waits (up to the
    # queue delay) to form one of these sizes
    parameters: tuple[tuple[str, str], ...] = ()  # merged over the spec's (e.g. intra_op_threads)
    dynamic: bool = True  # False: no dynamic batching (each request runs alone)
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        extra = "".join(f"-{k}={v}" for k, v in self.parameters)
        mb = f"-mb{self.max_batch_size}" if self.max_batch_size else ""
        pref = f"-p{','.join(map(str, self.preferred_batch_sizes))}" if self.preferred_batch_sizes else ""
        return f"i{self.instances}-d{self.max_queue_delay_us}{mb}{pref}{extra}"

    def apply(self, dep: Deployment) -> Deployment:
        max_batch = self.max_batch_size or dep.batching.max_batch_size
        if self.dynamic:
            preferred = dep.batching.preferred_batch_sizes if self.preferred_batch_sizes is None \
                else self.preferred_batch_sizes
            batching = dataclasses.replace(dep.batching, max_queue_delay_us=self.max_queue_delay_us,
                                           max_batch_size=max_batch, preferred_batch_sizes=preferred)
        else:
            batching = Batching(max_batch_size=max_batch, dynamic=False)
        if self.instances == 1:  # one instance behind a bounded queue stalls (specs.ONE_INSTANCE_QUEUE)
            batching = dataclasses.replace(batching, max_queue_size=0, queue_timeout_us=0)
        params = dict(dep.parameters) | dict(self.parameters)
        return dataclasses.replace(dep, count=self.instances, batching=batching, parameters=tuple(params.items()))

    def to_dict(self) -> dict:
        """As a profile and perf/tuned/ store it (JSON: lists, not tuples); ``from_dict`` reads it back."""
        d = dataclasses.asdict(self)
        preferred = d["preferred_batch_sizes"]
        return d | {"parameters": [list(p) for p in self.parameters],
                    "preferred_batch_sizes": list(preferred) if preferred is not None else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Variant":
        preferred = d.get("preferred_batch_sizes")
        return cls(**{**d, "parameters": tuple(tuple(p) for p in d.get("parameters", ())),
                      "preferred_batch_sizes": tuple(preferred) if preferred is not None else None})


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """How one model is swept (perf/sweep.py): declared by its family (export/family.py)."""

    swept: str  # the model whose config varies (a composing model of an ensemble, or the model itself)
    entry: str  # the model perf_analyzer calls
    input_tensor: str | tuple[str, ...]  # several for models with several inputs (the reranker's query, passage)
    inputs: str  # name of the real input set (perf/sweep.py write_inputs)
    variants: tuple[Variant, ...]
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    p95_bound_ms: float = 100.0
    # Then the open-loop capacity (``capacity_search``: the highest Poisson rate served within the bound, what
    # independent users see and what the planner and ``best`` trust) of the untuned config and of the
    # ``rate_variants`` variants with the most closed-loop throughput, in at most ``rate_probes`` runs each (0: none).
    rate_probes: int = 4
    rate_variants: int = 3
    # the swept model's spec when it is not the repository's (perf/gpu_profile.py: the PyTorch GPU runtime)
    spec: ModelSpec | None = None


def grid(instances, delays, threads) -> tuple[Variant, ...]:
    """Every combination of instance count, queue delay (us) and ONNX Runtime intra-op threads."""
    return tuple(Variant(instances=i, max_queue_delay_us=d, parameters=(("intra_op_threads", str(t)),))
                 for i, d, t in itertools.product(instances, delays, threads))


# The untuned starting point every sweep is measured against: one instance, no dynamic batching, ONNX Runtime's
# default threads, no length sorting (what a first config.pbtxt for this model would hold).
UNTUNED = Variant(instances=1, max_queue_delay_us=0, dynamic=False, label="untuned",
                  parameters=(("intra_op_threads", "0"), ("sort_by_length", "false")))


def load(folder: Path = TUNED) -> dict[str, dict[str, Variant]]:
    """target -> model -> tuned variant."""
    out: dict[str, dict[str, Variant]] = {}
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        out[path.stem] = {model: Variant.from_dict(entry["variant"])
                          for model, entry in json.loads(path.read_text()).items()}
    return out


def with_tuning(specs: list[AnySpec], tuned: dict[str, dict] | None = None) -> list[AnySpec]:
    """Apply the tuned variants (perf/tuned/<target>.json, written from measured sweeps) over the specs' defaults."""
    tuned = load() if tuned is None else tuned
    out: list[AnySpec] = []
    for s in specs:
        if isinstance(s, ModelSpec):
            changed = {t: v.apply(s.deployment(t)) for t, per_model in tuned.items() if (v := per_model.get(s.name))}
            if changed:
                s = dataclasses.replace(s, deployments=s.deployments | changed)
        out.append(s)
    return out
