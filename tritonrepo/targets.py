"""Hardware targets. Each model spec says how it is deployed on each one; Triton picks the target's config at start
with ``--model-config-name=<target>`` (configs/<target>.pbtxt in every model folder)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import SpecError


class Choice(str, enum.Enum):
    """A name the user types, from a closed set: equal to its string, printed as it, and parsed with an error that
    lists the choices (the CLI shows the same list)."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __repr__(self) -> str:
        return repr(self.value)

    @classmethod
    def parse(cls, text: str, where: str = ""):
        try:
            return cls(text)
        except ValueError:
            choices = ", ".join(c.value for c in cls)
            raise SpecError(f"{where + ': ' if where else ''}unknown {cls.__name__.lower()} {text!r} "
                            f"(one of: {choices})") from None


class Target(Choice):
    CPU = "cpu"
    T4 = "t4"
    A10G = "a10g"
    L4 = "l4"
    A100 = "a100"
    H100 = "h100"

    @property
    def hardware(self) -> Hardware:
        return TARGETS[self]

    @property
    def is_gpu(self) -> bool:
        return TARGETS[self].is_gpu


@dataclass(frozen=True, kw_only=True)
class Hardware:
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


TARGETS: dict[Target, Hardware] = {
    Target.CPU: Hardware(device="cpu", example_instances=("c7i.xlarge", "ml.c7i.xlarge")),
    Target.T4: Hardware(device="gpu", gpu="NVIDIA T4", compute_capability="7.5", gpu_memory_gib=16,
                        example_instances=("g4dn.xlarge", "ml.g4dn.xlarge")),
    Target.A10G: Hardware(device="gpu", gpu="NVIDIA A10G", compute_capability="8.6", gpu_memory_gib=24,
                          example_instances=("g5.xlarge", "ml.g5.xlarge")),
    Target.L4: Hardware(device="gpu", gpu="NVIDIA L4", compute_capability="8.9", gpu_memory_gib=24,
                        example_instances=("g6.xlarge", "ml.g6.xlarge")),
    Target.A100: Hardware(device="gpu", gpu="NVIDIA A100", compute_capability="8.0", gpu_memory_gib=40,
                          example_instances=("p4d.24xlarge", "ml.p4d.24xlarge")),
    Target.H100: Hardware(device="gpu", gpu="NVIDIA H100", compute_capability="9.0", gpu_memory_gib=80,
                          example_instances=("p5.48xlarge", "ml.p5.48xlarge")),
}

GPU_TARGETS = tuple(t for t in Target if t.is_gpu)
DEFAULT_TARGET = Target.CPU
