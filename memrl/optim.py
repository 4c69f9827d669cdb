"""Adam settings (plain Python: reading a configuration loads no compiled code).

The update, over one flat parameter buffer, is ``memrl._core._adam``'s (Kingma & Ba 2015, with
RLtools' options):

    g <- clip(g, -c, c)                          (clip > 0)
    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t) ;  v_hat = max(v / (1 - b2^t), v_hat_floor)
    p <- p - lr * f * m_hat / (sqrt(v_hat) + eps) - lr * weight_decay * p * [not a bias]

with ``f = bias_lr_factor`` on biases (1 elsewhere). ``AdamConfig.rltools`` is RLtools'
``DEFAULT_PARAMETERS_TENSORFLOW``: TensorFlow's eps 1e-7 and a floor (EPSILON_SQRT) of 1e-7 on
the bias-corrected second moment, so no step exceeds lr / 3.16e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

from memrl._checks import check_number


@dataclass
class AdamConfig:
    """Adam settings. Defaults are TensorFlow's (eps 1e-7), which RLtools uses.

    ``v_hat_floor`` > 0 reproduces RLtools' floor on the bias-corrected second moment (1e-7).
    ``weight_decay`` is decoupled (AdamW) and skips biases; ``clip`` > 0 clamps each gradient
    entry to [-clip, clip]; ``bias_lr_factor`` scales the learning rate of biases.
    Raises ValueError naming the field for a value out of range.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    v_hat_floor: float = 0.0
    weight_decay: float = 0.0
    clip: float = 0.0
    bias_lr_factor: float = 1.0

    @classmethod
    def tensorflow(cls, lr: float = 1e-3, **kw) -> "AdamConfig":
        return cls(lr=lr, eps=1e-7, **kw)

    @classmethod
    def pytorch(cls, lr: float = 1e-3, **kw) -> "AdamConfig":
        return cls(lr=lr, eps=1e-8, **kw)

    @classmethod
    def rltools(cls, lr: float = 1e-3, **kw) -> "AdamConfig":
        return cls(lr=lr, eps=1e-7, v_hat_floor=1e-7, **kw)

    def __post_init__(self):
        self.validate()

    def validate(self, name: str = "optimizer") -> None:
        for field, lo, hi in (("lr", 0.0, None), ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0), ("eps", 0.0, None),
                              ("v_hat_floor", 0.0, None), ("weight_decay", 0.0, None), ("clip", 0.0, None),
                              ("bias_lr_factor", 0.0, None)):
            check_number(f"{name}.{field}", getattr(self, field), lo, hi, open_high=hi is not None)

    @property
    def masks_biases(self) -> bool:
        """Whether the step treats biases differently (bias_lr_factor, weight decay)."""
        return self.bias_lr_factor != 1.0 or self.weight_decay != 0.0

    def apply(self, params, grads, m, v, t, is_bias=None) -> None:
        """One step at step count ``t`` (>= 1) over flat buffers, in place (float32 or float64)."""
        from memrl._core import _adam

        _adam.adam_step(params, grads, m, v, t, self.lr, self.beta1, self.beta2, self.eps, self.v_hat_floor,
                        self.weight_decay, self.clip, is_bias if self.masks_biases else None, self.bias_lr_factor)
