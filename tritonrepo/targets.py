"""Hardware targets. Each model spec says how it is deployed on each one; Triton picks the target's config at start
with ``--model-config-name=<target>`` (configs/<target>.pbtxt in every model folder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    device: str  # "cpu" or "gpu"
    gpu: str | None = None
    compute_capability: str | None = None  # names TensorRT plans (cc_model_filenames)
    gpu_memory_gib: int | None = None
    example_instances: tuple[str, ...] = ()

    @property
    def is_gpu(self) -> bool:
        return self.device == "gpu"

    @property
    def plan_filename(self) -> str:
        """The TensorRT plan built for this GPU: ``model.sm86.plan`` for compute capability 8.6."""
        return "model.sm{}{}.plan".format(*self.compute_capability.split("."))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(name="cpu", device="cpu", example_instances=("c7i.xlarge", "ml.c7i.xlarge")),
        Target(name="t4", device="gpu", gpu="NVIDIA T4", compute_capability="7.5", gpu_memory_gib=16,
               example_instances=("g4dn.xlarge", "ml.g4dn.xlarge")),
        Target(name="a10g", device="gpu", gpu="NVIDIA A10G", compute_capability="8.6", gpu_memory_gib=24,
               example_instances=("g5.xlarge", "ml.g5.xlarge")),
        Target(name="l4", device="gpu", gpu="NVIDIA L4", compute_capability="8.9", gpu_memory_gib=24,
               example_instances=("g6.xlarge", "ml.g6.xlarge")),
        Target(name="a100", device="gpu", gpu="NVIDIA A100", compute_capability="8.0", gpu_memory_gib=40,
               example_instances=("p4d.24xlarge", "ml.p4d.24xlarge")),
        Target(name="h100", device="gpu", gpu="NVIDIA H100", compute_capability="9.0", gpu_memory_gib=80,
               example_instances=("p5.48xlarge", "ml.p5.48xlarge")),
    )
}

GPU_TARGETS = tuple(name for name, t in TARGETS.items() if t.is_gpu)
DEFAULT_TARGET = "cpu"
