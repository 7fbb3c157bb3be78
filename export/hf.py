"""What the Hugging Face fine-tuning recipes (NER, reranker) share: the training loop with resumable checkpoints,
the export of a model's logits to ONNX, and the export + validation skeleton of the trained model."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from tritonrepo.errors import ValidationError

from .artifacts import publish_validated, up_to_date

log = logging.getLogger(__name__)

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def recipe_fingerprint(version: int, cfg, data: Path) -> str:
    """A training recipe's cache key: its settings (not where it reads or writes, nor its thread count), the start
    of the backbone's config and weights, and the training data."""
    from tritonrepo.paths import require

    recipe = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()
              if k not in ("backbone", "out_dir", "threads", "checkpoint_every") and v is not None}  # unset: no key
    h = hashlib.sha256(json.dumps([version, recipe], sort_keys=True).encode())
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        if (cfg.backbone / name).exists():
            with open(cfg.backbone / name, "rb") as f:
                h.update(f.read(1 << 20))
    h.update(require(data, f"training data {data.name}").read_bytes())
    return h.hexdigest()[:16]


def start_training(cfg, fingerprint: str, force: bool) -> Path:
    """Offline hub, torch threads (``cfg.threads``, 0 = torch's default) and seed (the new head and dropout: a rerun
    reproduces the model); returns the folder where training runs and keeps its checkpoint, beside ``cfg.out_dir``
    (``force`` starts from scratch, not from the last checkpoint)."""
    import shutil

    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = cfg.out_dir.with_name(f"{cfg.out_dir.name}.train-{fingerprint}")
    if force:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    return work


def stage_onnx(model_dir: Path, out_dir: Path, export_onnx, opset: int, int8_block_size: int):
    """A staging folder beside ``out_dir`` holding the model's tokenizer.json, its fp32 ONNX graph
    (``export_onnx(model_dir, path, opset)``) and the int8 graph quantized from it. Returns (folder, fp32, int8)."""
    import shutil

    from tritonrepo.paths import require

    from .artifacts import staging_dir
    from .quantize import int8_blocks

    work = staging_dir(out_dir)
    fp32, int8 = work / "model.fp32.onnx", work / "model.int8.onnx"
    shutil.copy(require(model_dir / "tokenizer.json", f"the trained model's tokenizer.json in {model_dir}"),
                work / "tokenizer.json")
    log.info("exporting ONNX fp32")
    export_onnx(model_dir, fp32, opset)
    log.info("quantizing to int8 (8-bit weight blocks of %d, int8 compute)", int8_block_size)
    int8_blocks(fp32, int8, int8_block_size)
    return work, fp32, int8


def export_trained(cfg, trained: dict, *, what: str, export_onnx, validate, force: bool) -> dict:
    """Export a fine-tuned model (``cfg.training.out_dir``) unless ``cfg.out_dir`` holds it already (same
    fingerprint): stage its fp32 and int8 ONNX graphs, run ``validate(model_dir, fp32, int8)`` -> (fp32 Checks, int8
    Checks, report fields), and publish only when every check of both graphs passed. Returns the report."""
    fingerprint = cfg.fingerprint(trained)
    if report := up_to_date(cfg.out_dir, fingerprint, force, what):
        return report
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    model_dir = cfg.training.out_dir
    work, fp32, int8 = stage_onnx(model_dir, cfg.out_dir, export_onnx, cfg.opset, cfg.int8_block_size)
    fp32_checks, int8_checks, fields = validate(model_dir, fp32, int8)
    failures = [f"{c.artifact}: {f}" for c in (fp32_checks, int8_checks) for f in c.failures]
    if failures:  # one error for both graphs; nothing reaches the repository
        raise ValidationError(f"{what.lower()} export", failures)
    report = {"fingerprint": fingerprint, "model": str(model_dir), **fields, "fp32": fp32_checks.metrics,
              "int8": int8_checks.metrics | {"method": f"MatMulNBits bits=8 block={cfg.int8_block_size} "
                                                       "accuracy_level=4"},
              "seconds": round(time.perf_counter() - t0, 1)}
    return publish_validated(work, cfg.out_dir, report, what)


class Fit:
    """The training loop of both recipes: ``cfg.epochs`` epochs of ``per_epoch`` steps (at most ``cfg.max_steps``
    when set), AdamW (no decay on biases and norms), linear warmup then decay, gradients clipped at 1.0, and an atomic
    checkpoint (model, optimizer, scheduler, torch RNG, step, seconds) every ``cfg.checkpoint_every`` steps; built
    over an existing checkpoint, it resumes from it, so a killed run continues to the same weights."""

    def __init__(self, model, cfg, *, per_epoch: int, checkpoint: Path, what: str):
        import torch
        from transformers import get_linear_schedule_with_warmup

        total = int(per_epoch * cfg.epochs)
        total = min(total, cfg.max_steps) if cfg.max_steps else total
        groups = [{"params": [p for n, p in model.named_parameters() if not n.endswith(NO_DECAY)],
                   "weight_decay": cfg.weight_decay},
                  {"params": [p for n, p in model.named_parameters() if n.endswith(NO_DECAY)], "weight_decay": 0.0}]
        self.model, self.total, self.per_epoch, self.what = model, total, per_epoch, what
        self.path, self.every = checkpoint, cfg.checkpoint_every
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(cfg.warmup * total), total)
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

    def run(self, epoch_batches, loss, *, progress: bool = True) -> None:
        """Train to the last step: ``epoch_batches(epoch)`` lists an epoch's batches (the same ones again on resume,
        which continues inside its epoch) and ``loss(batch)`` is a batch's training loss."""
        from tqdm import tqdm

        bar = tqdm(total=self.total, initial=self.step, desc=f"{self.what} fine-tuning", unit="step",
                   disable=not progress)
        while self.step < self.total:
            epoch, offset = divmod(self.step, self.per_epoch)
            for batch in epoch_batches(epoch)[offset:]:
                value = loss(batch)
                self.update(value)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{value.item():.3f}")
                if self.step >= self.total:
                    break
        bar.close()

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
                   opset: int = 17, field: str = "logits") -> None:
    """A Hugging Face model's ``.logits`` (or another output ``field``, e.g. ``last_hidden_state``) as an ONNX graph
    over int64 inputs [batch, sequence] (dynamic axes).
    Load the model with ``attn_implementation="eager"``: a plain MatMul/Softmax graph that ONNX Runtime fuses at load
    on any version."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return getattr(self.model(**dict(zip(input_names, inputs))), field)

    sample = tuple(torch.ones(2, 8, dtype=torch.long) for _ in input_names)
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), sample, str(path), input_names=list(input_names), output_names=[output_name],
                          opset_version=opset, dynamic_axes={**{n: axes for n in input_names}, output_name: output_axes},
                          dynamo=False)
