"""Stage 2: per-instance finetuning. Each image gets its own copy of the pretrained explainer,
finetuned for a few steps on that image alone; its mask is the explanation.

Instances are finetuned *together*: the B copies' tuned parameters are stacked along a leading
dimension and run through `torch.func.vmap(functional_call(...))`, so one batched forward and
backward serves all B instances. Because the loss is the *sum* of per-instance losses and
Adam(W) acts elementwise, every instance gets exactly the updates it would get alone. With one
instance (B = 1, the paper's loop) the copy runs plainly, without vmap.

What is tuned per instance (`scope`), and how the batch runs:

- `all` (the paper): every trainable explainer parameter. Under vmap, layers with per-instance
  weights become batched matmuls (ViT) or grouped convolutions (CNN).
- `head`: the ViT head / CNN decoder only. The backbone is frozen and the images never change,
  so its features are computed *once* per image, in one ordinary batched pass, and only the head
  runs per step (vmapped over the instances' head weights).
- `lora`: low-rank adapters (`ltx.models.lora`) on every trainable Linear / Conv2d, rank
  `lora_rank`; nothing else. The frozen weights are shared by all instances, so the base layers
  run as ordinary batched ops and only the small adapters are per instance.

Cost switches: `instance_batch_size` (how many instances run together: an int, `auto` for the
largest power of two that the memory budget holds, or None for the whole batch given),
`precision` (`bf16`: autocast around forward and loss, fp32 master weights and optimiser) and
`compile` (`torch.compile` of the per-step forward and loss, eager if compiling fails).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.func import functional_call, vmap

from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, Masks
from ltx.models.lora import add_lora, lora_parameters

log = logging.getLogger(__name__)

SELECT_BY = ("last", "loss", "pos", "neg")
SCOPES = ("all", "head", "lora")
PRECISIONS = ("32", "bf16", "auto")
AUTO = "auto"
#: `instance_batch_size=auto` never picks more than this per device type: on 2-16 CPU cores
#: throughput stops growing at about 32 instances (bench_finetune.py), so more only costs memory.
MAX_AUTO_BATCH = {"cpu": 32, "cuda": 256}
#: `auto` when the memory cannot be measured
FALLBACK_BATCH = 8
#: share of the available memory that `auto` plans for when no `memory_budget` is given
CPU_MEMORY_SHARE, CUDA_MEMORY_SHARE = 0.5, 0.85


def _positive_int(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and int(value) == value and int(value) >= 1
    except (TypeError, ValueError):
        return False


def _adamw(params: list[torch.Tensor], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused (one pass over memory per step: ~7× faster than the per-tensor loop on CPU) where
    the parameters' device and dtype allow, else the default implementation. Same update rule."""
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, **kwargs)


# --- memory: what is available, and what a call costs at its peak -------------------------------

def available_memory(device: torch.device) -> int:
    """Bytes free for new allocations: free GPU memory (plus what PyTorch caches unused), or the
    host's available RAM (`MemAvailable`)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated by tensors while `fn()` runs, above what was allocated before.

    CUDA: the caching allocator's peak statistic. CPU: the running sum of the allocations and
    frees that `torch.profiler` records (per op, so transients inside one op are not seen).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(int(torch.cuda.max_memory_allocated(device) - before), 0)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return int(peak)


# --- what runs per instance ------------------------------------------------------------------------

class _FromFeatures(nn.Module):
    """The explainer after its backbone, for scope=head (parameter names as in the explainer, prefixed)."""

    def __init__(self, explainer: Explainer) -> None:
        super().__init__()
        self.explainer = explainer

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> Masks:
        return self.explainer.decode(features, size)


@dataclass
class _Plan:
    """What one finetuning call runs: `model` via functional_call with the per-instance `tuned`
    tensors (name → one instance's starting value) and the `shared` frozen ones (all instances)."""

    model: nn.Module
    tuned: dict[str, torch.Tensor]
    shared: dict[str, torch.Tensor]
    from_features: bool  # the model takes backbone features (computed once), not images


class FinetuneModule(L.LightningModule):
    """Finetunes the explainer per instance; `predict_step` returns each instance's selected map.

    `steps=0` gives the pretrained explainer's map alone (pLTX). `select_by` says which of the
    steps+1 maps is the explanation: the last, the lowest-loss one, or the one with the best POS
    (lowest) / NEG (highest) AUC on that image (the official code's rule, `pos`), stopping an
    instance early once its POS AUC drops below `stop_below`.

    `scope` (all | head | lora, rank `lora_rank`, scale `lora_alpha / lora_rank`) says which
    parameters are tuned per instance (module docstring). `instance_batch_size` (int | 'auto' |
    None) splits the images given to `finetune` into groups finetuned together; 'auto' probes
    once per device (`probe_instance_batch_size`) against `memory_budget` GiB (None: a share of
    what is available). `precision` ('32' | 'bf16' | 'auto' = bf16 on CUDA only) and `compile`
    (bool | 'auto' = on CUDA only) trade exactness for speed; maps are returned in float32.
    """

    #: scope=head: compute the frozen backbone's features once per image (False: the plain vmap path)
    share_backbone_features = True

    def __init__(self, explained: ExplainedModel, explainer: Explainer, masking: Masking, loss: LTXLoss, *,
                 class_mode: str = "predicted", steps: int = 25, lr: float = 2e-3, weight_decay: float = 0.01,
                 select_by: str = "last", stop_below: float | None = None, scope: str = "all",
                 lora_rank: int = 8, lora_alpha: float | None = None,
                 instance_batch_size: int | str | None = None, memory_budget: float | None = None,
                 precision: str | int = "32", compile: bool | str = False) -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"finetune steps must be >= 0, got {steps}")
        if lr <= 0:
            raise ValueError(f"finetune lr must be > 0, got {lr}")
        if select_by not in SELECT_BY:
            raise ValueError(f"unknown select_by {select_by!r}: choose one of {SELECT_BY}")
        if scope not in SCOPES:
            raise ValueError(f"unknown finetune scope {scope!r}: choose one of {SCOPES}")
        if lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {lora_rank}")
        if instance_batch_size not in (None, AUTO) and not _positive_int(instance_batch_size):
            raise ValueError(f"instance_batch_size must be an int >= 1, 'auto' or null, got {instance_batch_size!r}")
        if memory_budget is not None and memory_budget <= 0:
            raise ValueError(f"memory_budget must be > 0 GiB or null, got {memory_budget}")
        precision = str(precision)
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: choose one of {PRECISIONS}")
        if compile not in (True, False, AUTO):
            raise ValueError(f"compile must be true, false or 'auto', got {compile!r}")
        self.explained = explained
        self.explainer = explainer.train()
        self.masking = masking
        self.loss = loss
        self.class_mode = class_mode
        self.steps = steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.select_by = select_by
        self.stop_below = stop_below
        self.scope = scope
        self.lora_rank = int(lora_rank)
        self.lora_alpha = float(2 * lora_rank if lora_alpha is None else lora_alpha)
        self.instance_batch_size = instance_batch_size if instance_batch_size in (None, AUTO) else int(instance_batch_size)
        self.memory_budget = memory_budget
        self.precision = precision
        self.compile = compile
        # Plain dicts (not registered submodules): derived structures, never saved or moved by Lightning.
        self._lora: dict[str, Any] = {}
        self._head: dict[str, _FromFeatures] = {}
        self._auto_batch: dict[str, int] = {}
        self._compiled: dict[Any, Callable | None] = {}
        self.auto_probe: dict[str, Any] = {}  # the last `auto` probe's numbers, for logs and benchmarks

    # --- which parameters, run how ------------------------------------------------------------------

    def _is_tuned(self, name: str, param: torch.nn.Parameter) -> bool:
        """Whether the explainer's own parameter `name` is finetuned per instance (lora: none are)."""
        if not param.requires_grad or self.scope == "lora":
            return False
        return self.scope == "all" or not name.startswith("backbone.")

    def _lora_model(self) -> nn.Module:
        """The explainer with adapters (built once; it shares every tensor with the explainer)."""
        key = (id(self.explainer), self.lora_rank, self.lora_alpha)
        if self._lora.get("key") != key:
            self._lora = {"key": key, "model": add_lora(self.explainer, self.lora_rank, self.lora_alpha, seed=0)}
        return self._lora["model"]

    def _plan(self, device: torch.device) -> _Plan:
        named = {n: p.detach() for n, p in self.explainer.named_parameters()}
        buffers = {n: b.detach() for n, b in self.explainer.named_buffers()}
        if self.scope == "lora":
            model = self._lora_model()
            tuned = {n: p.detach().to(device) for n, p in lora_parameters(model).items()}
            return _Plan(model, tuned, {**named, **buffers}, from_features=False)
        trainable = dict(self.explainer.named_parameters())
        tuned = {n: t for n, t in named.items() if self._is_tuned(n, trainable[n])}
        shared = {**{n: t for n, t in named.items() if n not in tuned}, **buffers}
        if self.scope == "head" and self.share_backbone_features:
            if getattr(self._head.get("model"), "explainer", None) is not self.explainer:
                self._head = {"model": _FromFeatures(self.explainer)}
            prefix = lambda d: {f"explainer.{n}": t for n, t in d.items()}
            return _Plan(self._head["model"], prefix(tuned), prefix(shared), from_features=True)
        return _Plan(self.explainer, tuned, shared, from_features=False)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen backbone's features, once per image (scope=head), as `Explainer.forward` computes them."""
        with torch.no_grad():
            return self.explainer.features(images)

    def _step_function(self, plan: _Plan, batch: int, size: tuple[int, int]) -> Callable:
        """(tuned, shared, inputs, images, classes) → (masks, per-instance loss terms)."""
        model = plan.model
        extra = (size,) if plan.from_features else ()

        def forward(tuned: dict, shared: dict, inputs: torch.Tensor) -> Masks:
            if batch == 1:  # one copy, run plainly: the paper's loop
                return functional_call(model, {**{n: p[0] for n, p in tuned.items()}, **shared}, (inputs, *extra))

            def one(params: dict, x: torch.Tensor) -> Masks:
                return functional_call(model, {**params, **shared}, (x[None], *extra))

            out = vmap(one, in_dims=(0, 0))(tuned, inputs)
            return Masks(out.mask[:, 0], out.coarse[:, 0])

        def step(tuned: dict, shared: dict, inputs: torch.Tensor, images: torch.Tensor,
                 classes: torch.Tensor) -> tuple[Masks, dict[str, torch.Tensor]]:
            masks = forward(tuned, shared, inputs)
            return masks, self.loss(self.explained, self.masking, images, masks, classes)

        return step

    def _uses(self, switch: bool | str, device: torch.device) -> bool:
        return switch is True or switch == "bf16" or (switch == AUTO and device.type == "cuda")

    def _autocast(self, device: torch.device):
        if self._uses(self.precision, device):
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _compiled_step(self, plan: _Plan, batch: int, size: tuple[int, int], eager: Callable) -> Callable | None:
        """`torch.compile`d step, made once per (model, batch size, input size); None if off or failed."""
        key = (id(plan.model), self.scope, batch == 1, size)
        if key not in self._compiled:
            try:
                self._compiled[key] = torch.compile(eager)
            except Exception as err:  # noqa: BLE001  (compile backends fail in many ways)
                warnings.warn(f"torch.compile unavailable ({type(err).__name__}: {err}); finetuning eagerly",
                              stacklevel=3)
                self._compiled[key] = None
        return self._compiled[key]

    # --- finetuning -----------------------------------------------------------------------------------

    def _score(self, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor,
               loss: torch.Tensor) -> torch.Tensor:
        """Per-instance selection score of maps (B, H, W), lower is better."""
        if self.select_by == "loss":
            return loss.detach().float()
        from ltx.metrics import per_image_auc

        auc = per_image_auc(self.explained, images, maps.detach().float(), classes, kind=self.select_by)
        return auc if self.select_by == "pos" else -auc

    @torch.enable_grad()  # also under `trainer.predict`, which runs without grad
    def finetune(self, images: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Finetune one copy per image; returns `maps` (B, H, W), the selected `step`, its `loss`, and
        `failed` (a non-finite loss stopped that instance; its map and loss are NaN).

        The images are finetuned `instance_batch_size` at a time (all together if None)."""
        size = self.resolve_instance_batch_size(images, classes)
        if len(images) <= size:
            return self._finetune(images, classes, self.steps)
        parts = [self._finetune(i, c, self.steps) for i, c in zip(images.split(size), classes.split(size))]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _finetune(self, images: torch.Tensor, classes: torch.Tensor, steps: int, *,
                  eager: bool = False) -> dict[str, torch.Tensor]:
        """Finetune B copies on B images together (the instance batch)."""
        batch, device, size = images.shape[0], images.device, tuple(images.shape[-2:])
        plan = self._plan(device)
        tuned = {n: t.unsqueeze(0).repeat(batch, *[1] * t.dim()).requires_grad_(True) for n, t in plan.tuned.items()}
        optimizer = _adamw(list(tuned.values()), lr=self.lr, weight_decay=self.weight_decay) if tuned else None
        with self._autocast(device):
            inputs = self._features(images) if plan.from_features else images
        step_fn = self._step_function(plan, batch, size)
        compiled = None if eager or not self._uses(self.compile, device) else self._compiled_step(
            plan, batch, size, step_fn)

        best_maps = torch.zeros(batch, *size, device=device)
        best_score = torch.full((batch,), float("inf"), dtype=torch.float64, device=device)
        best_step = torch.zeros(batch, dtype=torch.long, device=device)
        best_loss = torch.zeros(batch, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        failed = torch.zeros(batch, dtype=torch.bool, device=device)
        for step in range(steps + 1):
            train = step < steps and optimizer is not None
            if train:
                optimizer.zero_grad(set_to_none=True)
            masks, terms = self._run_step(step_fn, compiled, train, tuned, plan.shared, inputs, images, classes)
            if compiled is not None and self.compile is False:  # compiling failed: eager from here on
                compiled = None
            failed = self._mark_failed(failed, terms["loss"].detach(), step)
            if self.select_by == "last":
                better = ~failed
            else:  # only instances still running are scored (a POS test is 10 forward passes each)
                active = ~done & ~failed
                score = torch.full_like(best_score, float("inf"))
                if active.any():
                    score[active] = self._score(images[active], masks.mask[active, 0], classes[active],
                                                terms["loss"][active]).to(score.dtype)
                better = (score < best_score) & active
                best_score = torch.where(better, score, best_score)
            best_maps[better] = masks.mask[better, 0].detach().float()
            best_step[better] = step
            best_loss[better] = terms["loss"].detach().float()[better]
            if self.stop_below is not None and self.select_by == "pos":
                done |= best_score < self.stop_below
            if bool((done | failed).all()):
                break
            if train:
                for t in tuned.values():  # a failed copy stops: no update, and its NaNs reach no optimiser state
                    if t.grad is not None:
                        t.grad[failed] = 0
                optimizer.step()
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

    def _run_step(self, step_fn: Callable, compiled: Callable | None, train: bool, tuned: dict, shared: dict,
                  inputs: torch.Tensor, images: torch.Tensor, classes: torch.Tensor):
        """Forward + loss (+ backward when `train`), compiled if asked; a compiled step that fails
        (forward or backward) is redone eagerly and compiling is switched off, with a warning."""
        device = images.device
        if compiled is not None:
            try:
                with self._autocast(device):
                    masks, terms = compiled(tuned, shared, inputs, images, classes)
                if train:
                    terms["loss"].sum().backward()
                return masks, terms
            except Exception as err:  # noqa: BLE001  (inductor/dynamo raise many kinds)
                warnings.warn(f"torch.compile failed ({type(err).__name__}: {str(err)[:300]}); finetuning eagerly",
                              stacklevel=3)
                self.compile = False
                for t in tuned.values():
                    t.grad = None
        with self._autocast(device):
            masks, terms = step_fn(tuned, shared, inputs, images, classes)
        if train:
            terms["loss"].sum().backward()
        return masks, terms

    # --- how many instances at once -------------------------------------------------------------------

    def resolve_instance_batch_size(self, images: torch.Tensor, classes: torch.Tensor) -> int:
        """The instance batch size for these images: the set one, the probed one ('auto', once per
        device), or all of them (None)."""
        if self.instance_batch_size is None:
            return max(len(images), 1)
        if self.instance_batch_size != AUTO:
            return int(self.instance_batch_size)
        key = str(images.device)
        if key not in self._auto_batch:
            self._auto_batch[key] = self.probe_instance_batch_size(images, classes)
        return self._auto_batch[key]

    @torch.enable_grad()
    def probe_instance_batch_size(self, images: torch.Tensor, classes: torch.Tensor, *,
                                  budget: int | None = None, cap: int | None = None) -> int:
        """The largest power of two B ≤ `cap` (default `MAX_AUTO_BATCH` of the device type) whose
        finetuning fits `budget` bytes.

        Measures the peak memory of one finetuning step with 1 and with 2 instances (copies of the
        first image, eagerly), fits peak(B) = fixed + B · per_instance, and solves for the budget
        (default: `memory_budget` GiB, else 85 % of free GPU memory / 50 % of available RAM). On
        CUDA the choice is then tried once, halving on out-of-memory. The numbers are kept in
        `auto_probe`.
        """
        device = images.device
        if budget is None:
            share = CUDA_MEMORY_SHARE if device.type == "cuda" else CPU_MEMORY_SHARE
            budget = int(self.memory_budget * 2**30) if self.memory_budget else int(share * available_memory(device))
        cap = cap or MAX_AUTO_BATCH.get(device.type, MAX_AUTO_BATCH["cuda"])
        one_image, one_class = images[:1], classes[:1]

        def run(b: int) -> None:
            self._finetune(one_image.expand(b, -1, -1, -1).contiguous(), one_class.expand(b).contiguous(), 1,
                           eager=True)

        try:
            peaks = [peak_memory(lambda b=b: run(b), device) for b in (1, 2)]
        except RuntimeError as err:  # e.g. another profiler is already running
            fallback = min(FALLBACK_BATCH, cap)
            warnings.warn(f"instance_batch_size=auto: could not measure memory ({err}); using {fallback}",
                          stacklevel=2)
            self.auto_probe = {"device": str(device), "budget": budget, "instance_batch_size": fallback}
            return fallback
        per_instance = max(peaks[1] - peaks[0], 1)
        fixed = max(peaks[0] - per_instance, 0)
        fits = max((budget - fixed) // per_instance, 1)
        chosen = 2 ** int(math.log2(min(fits, cap)))
        while device.type == "cuda" and chosen > 1:
            try:
                run(chosen)
                break
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                chosen //= 2
        self.auto_probe = {"device": str(device), "budget": budget, "fixed": fixed, "per_instance": per_instance,
                               "instance_batch_size": chosen}
        log.info("finetune instance_batch_size=auto: %d (%.1f MiB per instance, %.1f MiB fixed, budget %.1f GiB, %s)",
                 chosen, per_instance / 2**20, fixed / 2**20, budget / 2**30, device)
        return chosen

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode)
        result = self.finetune(images, classes)
        return {"index": batch["index"], "classes": classes, "labels": batch["label"], **result}
