"""What the Hugging Face fine-tuning recipes (NER, reranker) share: the optimizer loop with resumable checkpoints,
and the export of a model's logits to ONNX."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def work_dir(out_dir: Path, fingerprint: str, force: bool) -> Path:
    """The folder where a recipe's training runs and keeps its checkpoint, beside ``out_dir``; ``force`` starts from
    scratch, not from the last checkpoint."""
    import shutil

    work = out_dir.with_name(f"{out_dir.name}.train-{fingerprint}")
    if force:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    return work


class Fit:
    """AdamW (no decay on biases and norms), linear warmup then decay, gradients clipped at 1.0, and an atomic
    checkpoint (model, optimizer, scheduler, torch RNG, step, seconds) every ``every`` steps; built over an existing
    checkpoint, it resumes from it, so a killed run continues to the same weights."""

    def __init__(self, model, *, lr: float, weight_decay: float, warmup: float, total: int, checkpoint: Path,
                 every: int, what: str):
        import torch
        from transformers import get_linear_schedule_with_warmup

        groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(NO_DECAY)],
                   "weight_decay": weight_decay},
                  {"params": [p for n, p in model.named_parameters() if n.endswith(NO_DECAY)], "weight_decay": 0.0}]
        self.model, self.total, self.path, self.every = model, total, checkpoint, every
        self.optimizer = torch.optim.AdamW(groups, lr=lr)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(warmup * total), total)
        self.step, self._spent = 0, 0.0
        if checkpoint.exists():
            state = torch.load(checkpoint, weights_only=False)
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self._spent = state["step"], state["seconds"]
            if "rng" in state:  # dropout continues with the masks an uninterrupted run would draw
                torch.set_rng_state(state["rng"])
            log.info("resuming %s training at step %d/%d from %s", what, self.step, total, checkpoint)
        self._t0 = time.perf_counter()
        model.train()

    @property
    def seconds(self) -> float:
        return self._spent + time.perf_counter() - self._t0

    def update(self, loss) -> None:
        import torch

        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.step % self.every == 0 or self.step == self.total:
            self.save()

    def save(self) -> None:
        import torch

        tmp = self.path.with_suffix(".tmp")
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "step": self.step, "rng": torch.get_rng_state(),
                    "seconds": self.seconds}, tmp)
        tmp.replace(self.path)  # atomic: a kill mid-save leaves the previous checkpoint


def logits_to_onnx(model, path: Path, input_names: tuple[str, ...], output_name: str, output_axes: dict,
                   opset: int = 17) -> None:
    """A Hugging Face model's ``.logits`` as an ONNX graph over int64 inputs [batch, sequence] (dynamic axes).
    Load the model with ``attn_implementation="eager"``: a plain MatMul/Softmax graph that ONNX Runtime fuses at load
    on any version."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(input_names, inputs))).logits

    sample = tuple(torch.ones(2, 8, dtype=torch.long) for _ in input_names)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), sample, str(path), input_names=list(input_names), output_names=[output_name],
                          opset_version=opset, dynamic_axes={**{n: axes for n in input_names}, output_name: output_axes},
                          dynamo=False)
