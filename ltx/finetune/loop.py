"""`Finetuner`: finetunes one copy of the explainer per instance and selects each instance's map."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from typing import Any

import torch
from torch import nn

from ltx.finetune.memory import largest_fitting_batch
from ltx.finetune.plan import Plan, StepFunction
from ltx.finetune.settings import AUTO, FinetuneSettings
from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.metrics import per_image_auc
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, Masks

log = logging.getLogger(__name__)


def _adamw(params: list[torch.Tensor], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused (one pass over memory per step: ~7× faster than the per-tensor loop on CPU) where
    the parameters' device and dtype allow, else the default implementation. Same update rule."""
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, **kwargs)


class Finetuner(nn.Module):
    """Per-instance finetuning of `explainer` (left untouched) for explained model `explained`.

    `finetune(images, classes)` returns each instance's selected map and how it was selected
    (`classes`: (B,), or pairs (B, 2) in a contrastive class mode, `ltx.classes`). A
    module, so that Lightning (or `.to`) moves the explained model, the explainer and the masking
    between devices together.
    """

    #: scope=head: compute the frozen trunk's features once per image (False: the plain vmap path)
    share_trunk_features = True
    #: instance batches: per-instance layers as batched kernels (False: vmap; `ltx.finetune.stacked`)
    stacked_layers = True

    def __init__(self, explained: ExplainedModel, explainer: Explainer, masking: Masking, loss: LTXLoss,
                 settings: FinetuneSettings) -> None:
        super().__init__()
        self.explained = explained
        self.explainer = explainer.train()
        self.masking = masking
        self.loss = loss
        self.settings = settings
        self.compile_failed = False  # set once compiling failed: eager from then on
        self.auto_probe: dict[str, Any] = {}  # the last `auto` probe's numbers, for logs and benchmarks
        self._auto_batch: dict[str, int] = {}  # device → probed instance batch size
        self._compiled: dict[tuple, Callable | None] = {}  # (one copy?, image size) → compiled step

    @cached_property
    def plan(self) -> Plan:
        """What is tuned and what runs it (built on first use; not a registered module: the lora copy
        shares the explainer's tensors and is never saved)."""
        s = self.settings
        return Plan(self.explainer, s.scope, s.lora_rank, s.lora_alpha, from_features=self.share_trunk_features,
                    stacked_layers=self.stacked_layers)

    # --- precision and compilation ------------------------------------------------------------------

    def _uses(self, switch: bool | str, device: torch.device) -> bool:
        return switch is True or switch == "bf16" or (switch == AUTO and device.type == "cuda")

    def _autocast(self, device: torch.device) -> AbstractContextManager:
        if self._uses(self.settings.precision, device):
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _compile_failure(self, err: Exception) -> None:
        """Compiling failed (building or running the compiled step): warn, and run eagerly from now on."""
        warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:300]}); finetuning eagerly",
                      stacklevel=4)
        self.compile_failed = True

    def _compiled_step(self, batch: int, size: tuple[int, int], eager: StepFunction,
                       device: torch.device) -> Callable | None:
        """`torch.compile`d step, made once per (one copy or several, input size); None if off or failed."""
        if self.compile_failed or not self._uses(self.settings.compile, device):
            return None
        key = (batch == 1, size)
        if key not in self._compiled:
            try:
                self._compiled[key] = torch.compile(eager)
            except Exception as err:  # noqa: BLE001  (compile backends fail in many ways)
                self._compile_failure(err)
                return None
        return self._compiled[key]

    def _run_step(self, step_fn: StepFunction, compiled: Callable | None, train: bool, tuned: dict, shared: dict,
                  inputs: torch.Tensor, images: torch.Tensor, classes: torch.Tensor
                  ) -> tuple[Masks, dict[str, torch.Tensor]]:
        """Forward + loss (+ backward when `train`), compiled if asked; a compiled step that fails
        (forward or backward) is redone eagerly."""
        device = images.device
        if compiled is not None and not self.compile_failed:
            try:
                with self._autocast(device):
                    masks, terms = compiled(tuned, shared, inputs, images, classes)
                if train:
                    terms["loss"].sum().backward()
                return masks, terms
            except Exception as err:  # noqa: BLE001  (inductor/dynamo raise many kinds)
                self._compile_failure(err)
                for t in tuned.values():
                    t.grad = None
        with self._autocast(device):
            masks, terms = step_fn(tuned, shared, inputs, images, classes)
        if train:
            terms["loss"].sum().backward()
        return masks, terms

    # --- finetuning -----------------------------------------------------------------------------------

    def _score(self, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
               loss: torch.Tensor) -> torch.Tensor:
        """Per-instance selection score of maps (B, H, W), lower is better."""
        select_by = self.settings.select_by
        if select_by == "loss":
            return loss.detach().float()
        auc = per_image_auc(self.explained, images, maps.detach().float(), classes, kind=select_by)
        return auc if select_by == "pos" else -auc

    @torch.enable_grad()  # also under `trainer.predict`, which runs without grad
    def finetune(self, images: torch.Tensor, classes: torch.Tensor, *,
                 advance: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
        """Finetune one copy per image; returns `maps` (B, H, W), the selected `step`, its `loss`, and
        `failed` (a non-finite loss stopped that instance; its map and loss are NaN). Maps and losses
        have the images' dtype (float64 images and a float64 engine, `.double()`: a float64 run).

        The images are finetuned `instance_batch_size` at a time (all together if None); `advance(n)`
        is told of each step of n instances (a progress bar's)."""
        size = self.resolve_instance_batch_size(images, classes)
        steps = self.settings.steps
        if len(images) <= size:
            return self.finetune_together(images, classes, steps, advance=advance)
        parts = [self.finetune_together(i, c, steps, advance=advance)
                 for i, c in zip(images.split(size), classes.split(size))]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    @torch.enable_grad()
    def finetune_together(self, images: torch.Tensor, classes: torch.Tensor, steps: int, *, eager: bool = False,
                          advance: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
        """Finetune B copies on B images together (one instance batch) for `steps` steps; `advance(B)`
        after each (the steps an early stop skips: at the end)."""
        s = self.settings
        batch, device, size = images.shape[0], images.device, tuple(images.shape[-2:])
        plan = self.plan
        start, shared = plan.tensors(device)
        tuned = {n: t.unsqueeze(0).repeat(batch, *[1] * t.dim()).requires_grad_(True) for n, t in start.items()}
        optimizer = _adamw(list(tuned.values()), lr=s.lr, weight_decay=s.weight_decay) if tuned else None
        with self._autocast(device):
            inputs = plan.inputs(images)
        step_fn = plan.step_function(self.explained, self.masking, self.loss, batch, size)
        compiled = None if eager else self._compiled_step(batch, size, step_fn, device)

        best_maps = torch.zeros(batch, *size, device=device, dtype=images.dtype)
        best_score = torch.full((batch,), float("inf"), dtype=torch.float64, device=device)
        best_step = torch.zeros(batch, dtype=torch.long, device=device)
        best_loss = torch.zeros(batch, device=device, dtype=images.dtype)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        failed = torch.zeros(batch, dtype=torch.bool, device=device)
        for step in range(steps + 1):
            train = step < steps and optimizer is not None
            if train:
                optimizer.zero_grad(set_to_none=True)
            masks, terms = self._run_step(step_fn, compiled, train, tuned, shared, inputs, images, classes)
            failed = self._mark_failed(failed, terms["loss"].detach(), step)
            if s.select_by == "last":
                better = ~failed
            else:  # only instances still running are scored (a POS test is 10 forward passes each)
                active = ~done & ~failed
                score = torch.full_like(best_score, float("inf"))
                if active.any():
                    score[active] = self._score(images[active], masks.mask[active, 0], classes[active],
                                                terms["loss"][active]).to(score.dtype)
                better = (score < best_score) & active
                best_score = torch.where(better, score, best_score)
            best_maps[better] = masks.mask[better, 0].detach().to(best_maps.dtype)
            best_step[better] = step
            best_loss[better] = terms["loss"].detach().to(best_loss.dtype)[better]
            if s.stop_below is not None and s.select_by == "pos":
                done |= best_score < s.stop_below
            if bool((done | failed).all()):
                break
            if train:
                if bool(failed.any()):  # a failed copy stops: no update, and its NaNs reach no optimiser state
                    for t in tuned.values():
                        if t.grad is not None:
                            t.grad[failed] = 0
                optimizer.step()
            if advance is not None and step < steps:
                advance(batch)
        if advance is not None and step < steps:  # stopped early: the skipped steps are done too
            advance(batch * (steps - step))
        best_maps[failed] = float("nan")
        best_loss[failed] = float("nan")
        return {"maps": best_maps, "step": best_step, "loss": best_loss, "failed": failed}

    @staticmethod
    def _mark_failed(failed: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Instances whose loss turned NaN/inf: each is stopped and reported, the others go on."""
        now = failed | ~torch.isfinite(loss)
        if bool((now & ~failed).any()):
            log.warning("finetuning: %d instance(s) got a non-finite loss at step %d; they stop and are marked "
                        "failed (maps NaN), the others go on", int((now & ~failed).sum()), step)
        return now

    # --- how many instances at once -------------------------------------------------------------------

    def resolve_instance_batch_size(self, images: torch.Tensor, classes: torch.Tensor) -> int:
        """The instance batch size for these images: the set one, the probed one ('auto', once per
        device), or all of them (None)."""
        wanted = self.settings.instance_batch_size
        if wanted is None:
            return max(len(images), 1)
        if wanted != AUTO:
            return int(wanted)
        key = str(images.device)
        if key not in self._auto_batch:
            self._auto_batch[key] = self.probe_instance_batch_size(images, classes)
        return self._auto_batch[key]

    def probe_instance_batch_size(self, images: torch.Tensor, classes: torch.Tensor, *,
                                  budget: int | None = None, cap: int | None = None) -> int:
        """`ltx.finetune.memory.largest_fitting_batch` for one eager finetuning step on copies of the
        first image; the numbers are kept in `auto_probe`."""
        one_image, one_class = images[:1], classes[:1]

        def run(b: int) -> None:
            copies = one_class.expand(b, *one_class.shape[1:]).contiguous()  # a class, or a pair (c, c′)
            self.finetune_together(one_image.expand(b, -1, -1, -1).contiguous(), copies, 1, eager=True)

        self.auto_probe = largest_fitting_batch(run, images.device, memory_budget=self.settings.memory_budget,
                                                budget=budget, cap=cap)
        return self.auto_probe["instance_batch_size"]
