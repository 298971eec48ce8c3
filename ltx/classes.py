"""What a map explains: a class c, or c against a contrast class c′ ("why c and not c′").

One place for the class modes and for the score of c (vs c′) that the loss, the methods and the
metrics all read, so a contrastive explanation is the same thing everywhere. `classes` is a (B,)
tensor of class indices (pointwise) or a (B, 2) tensor of pairs (c, c′) (contrastive); every
function below takes either:

- `class_score`: what gradient methods attribute, logit_c, or logit_c − logit_c′ (the log-odds of
  the two-class probability below, as logit_c is the log-odds scale of the pointwise softmax);
- `class_probability`: softmax over all classes at c, or the two-class softmax([logit_c, logit_c′])[0];
- `class_hit`: f's top-1 is c, or c beats c′ (argmax over the pair; a tie counts for c, as argmax
  takes the first);
- `class_cross_entropy`: the LTX loss's prediction term, CE over all logits or over the pair.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

#: class mode → (c: f's top-1 or the label, explained against a contrast class c′)
CLASS_MODES: dict[str, tuple[str, bool]] = {
    "predicted": ("predicted", False),
    "target": ("target", False),
    "contrastive": ("predicted", True),
    "contrastive_target": ("target", True),
}


def check_class_mode(class_mode: str) -> None:
    """A ValueError naming the valid class modes for an unknown one."""
    if class_mode not in CLASS_MODES:
        raise ValueError(f"unknown class_mode {class_mode!r}: choose one of {list(CLASS_MODES)}")


def is_contrastive(class_mode: str) -> bool:
    """Whether maps of `class_mode` explain a pair (c, c′)."""
    check_class_mode(class_mode)
    return CLASS_MODES[class_mode][1]


def contrast_pairs(logits: Tensor, classes: Tensor, contrast: int | None = None) -> Tensor:
    """Pairs (B, 2) of `classes` (B,) and their contrast class: f's highest-scoring other class on
    `logits` (B, C) (the runner-up where c is the top-1), or `contrast` for every image, except
    where it is c itself (there the runner-up stands in: c against c is no question)."""
    if contrast is not None and not 0 <= contrast < logits.shape[-1]:
        raise ValueError(f"contrast class {contrast} is not a class of a {logits.shape[-1]}-class model")
    others = logits.detach().scatter(1, classes[:, None], float("-inf"))
    contrasts = others.argmax(-1)
    if contrast is not None:
        contrasts = torch.where(classes == contrast, contrasts, torch.full_like(contrasts, contrast))
    return torch.stack([classes, contrasts], dim=1)


def _compared(logits: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """The logits that compete and the index of c among them: all of them and c, or the pair's two
    and 0."""
    if classes.dim() == 1:
        return logits, classes
    if classes.dim() != 2 or classes.shape[1] != 2:
        raise ValueError(f"classes must be (B,) or pairs (B, 2), got shape {tuple(classes.shape)}")
    return logits.gather(1, classes), classes.new_zeros(len(classes))


def class_score(logits: Tensor, classes: Tensor) -> Tensor:
    """(B,) logit_c, or logit_c − logit_c′ for pairs: what gradient methods attribute."""
    if classes.dim() == 1:
        return logits.gather(1, classes[:, None])[:, 0]
    pair = _compared(logits, classes)[0]
    return pair[:, 0] - pair[:, 1]


def class_probability(logits: Tensor, classes: Tensor) -> Tensor:
    """(B,) softmax probability of c over all classes, or over the pair (c, c′)."""
    compared, index = _compared(logits, classes)
    return compared.softmax(-1).gather(1, index[:, None])[:, 0]


def class_hit(logits: Tensor, classes: Tensor) -> Tensor:
    """(B,) float: 1 where c wins (f's top-1, or ahead of c′), else 0."""
    compared, index = _compared(logits, classes)
    return (compared.argmax(-1) == index).float()


def class_cross_entropy(logits: Tensor, classes: Tensor) -> Tensor:
    """(B,) −log class_probability, computed stably: CE over all logits, or over the pair."""
    return F.cross_entropy(*_compared(logits, classes), reduction="none")
