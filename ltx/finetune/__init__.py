"""LTX's second stage as an engine: per-instance finetuning of the pretrained explainer.

Each image gets its own copy of the explainer, finetuned for a few steps on that image alone; its
mask is the explanation. Instances are finetuned *together*: the B copies' tuned parameters are
stacked along a leading dimension, and one batched forward and backward serves all B instances:
each layer holding a tuned parameter runs as one batched kernel (`stacked`), or, for a layer that
has none, `torch.func.vmap(functional_call(...))` runs the whole explainer. Because the loss is the *sum* of
per-instance losses and Adam(W) acts elementwise, every instance gets exactly the updates it would
get alone: in float64 the maps agree with one-by-one finetuning to rounding (tested); in float32
the batched sums' other order rounds differently and finetuning amplifies it (README). With one
instance (B = 1, the paper's loop) the copy runs plainly.

- `settings`: what a finetuning run is asked for (`FinetuneSettings`, checked once).
- `plan`: which tensors are tuned per instance (`scope`: all | head | lora) and what runs them.
- `stacked`: per-instance layers as batched kernels (Linear, Conv2d, norms, broadcast tokens).
- `memory`: the memory available and a call's peak, for `instance_batch_size=auto`.
- `loop`: `Finetuner`, the selection loop over steps (and its precision / compile switches).

`ltx.methods.ltx.LTX` is the method face of the engine, `ltx.lit.finetune.FinetuneModule` its
Lightning face.
"""

from ltx.finetune.loop import Finetuner
from ltx.finetune.settings import FinetuneSettings

__all__ = ["FinetuneSettings", "Finetuner"]
