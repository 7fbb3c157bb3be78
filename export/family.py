"""What a model family declares, at the end of its own module (``FAMILY`` in ``export/<name>.py``): the specs of its
models, how it is exported, validated and installed, what it serves, how it is swept, evaluated and profiled on a GPU.
The registry (``families.py``) collects every module's declaration: adding a built-in family adds no line anywhere
else."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from tritonrepo.errors import TritonRepoError
from tritonrepo.specs import AnySpec
from tritonrepo.tuning import SweepPlan


@dataclass(frozen=True, kw_only=True)
class GpuProfile:
    """What perf/gpu_profile.py sweeps on a lent GPU host, with the encoder run by PyTorch (``torch_encoder``)."""

    plan: str  # the family's sweep plan profiled there (its fp32 entry)
    checkpoint: Path  # the encoder's checkpoint folder: its config.json gives the architecture
    head: str  # torch_encoder's output head: mean_pool_l2 (embeddings) or logits


@dataclass(frozen=True, kw_only=True)
class Family:
    name: str
    order: int  # build, listing and GPU-profile order (a GPU budget cut drops the last)
    recipe: type  # the export config dataclass; its defaults are the full recipe, its ``out_dir`` the artifacts
    exporter: Callable  # (config, force=...) -> report: train if needed, export, validate; cached by fingerprint
    installer: Callable  # (repository, artifacts folder) -> installed paths
    serves: tuple[str, ...]  # the models clients call; a server loads them with what they need (with_dependencies)
    specs: tuple[AnySpec, ...] = ()  # every model of the family, untuned (the registry applies perf/tuned/)
    plans: Mapping[str, SweepPlan] = field(default_factory=dict)  # sweep plans by name (`tritonrepo perf sweep`)
    # the real inputs its plans name (``SweepPlan.inputs``): (plan, limit, repository) -> at most ``limit`` rows, one
    # batch-1 request each (tensor name -> str, bytes, list of ints or array: perf/perf_analyzer.py write_rows)
    inputs: Mapping[str, Callable[[SweepPlan, int, Path], list[dict]]] = field(default_factory=dict)
    evaluation: str | None = None  # the `tritonrepo eval` that scores what it serves (several families may share one)
    gpu_profile: GpuProfile | None = None

    def config(self):
        return self.recipe()

    def configured(self, out: Path | None = None, **training):
        """The full recipe with these training options (None: the recipe's) and, given ``out``, the trained model and
        its export in ``out/model`` and ``out/export``: what `tritonrepo export NAME` runs with its options."""
        given = {name: value for name, value in training.items() if value is not None}
        config = self.config()
        if not given and out is None:
            return config
        if not hasattr(config, "training"):
            raise TritonRepoError(f"{self.name} trains no model: {_flags([*given, *(['out'] if out else [])])} "
                                  "do not apply")
        unknown = [name for name in given if name not in {f.name for f in fields(config.training)}]
        if unknown:
            raise TritonRepoError(f"{self.name}'s training has no {_flags(unknown)}")
        trained = replace(config.training, **given)
        if out is None:
            return replace(config, training=trained)
        return replace(config, training=replace(trained, out_dir=out / "model"), out_dir=out / "export")

    def export(self, config=None, *, force: bool = False) -> dict:
        return self.exporter(config or self.config(), force=force)

    def install(self, repository: Path, config=None) -> list[Path]:
        return self.installer(repository, (config or self.config()).out_dir)


def _flags(names) -> str:
    """Option names as the command line spells them."""
    return ", ".join(f"--{name.replace('_', '-')}" for name in names)
