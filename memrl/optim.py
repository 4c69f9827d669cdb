"""Adam settings (plain Python: reading a configuration loads no compiled code).

The update, over one flat parameter buffer, is ``memrl._core._adam``'s (Kingma & Ba 2015, with
RLtools' options):

    g <- clip(g, -c, c)                          (clip > 0)
    m <- b1 m + (1 - b1) g ;  v <- b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t) ;  v_hat = max(v / (1 - b2^t), v_hat_floor)
    p <- p - lr * f * m_hat / (sqrt(v_hat) + eps) - lr * weight_decay * p * [not a bias]

with ``f = bias_lr_factor`` on biases (1 elsewhere). With ``final_lr`` set, ``lr`` decays
linearly over the run's environment steps (Stable-Baselines3's ``get_linear_fn`` schedule):

    lr(step) = lr (1 - f) + final_lr f,   f = min(step / decay_steps, 1)

the rate of an update made at loop step ``step`` (the same in a resumed run).

``AdamConfig.rltools`` is RLtools' ``DEFAULT_PARAMETERS_TENSORFLOW``: TensorFlow's eps 1e-7 and a
floor (EPSILON_SQRT) of 1e-7 on the bias-corrected second moment, so no step exceeds lr / 3.16e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

from memrl._checks import check_int, check_number


@dataclass
class AdamConfig:
    """Adam settings. Defaults are TensorFlow's (eps 1e-7), which RLtools uses.

    ``v_hat_floor`` > 0 reproduces RLtools' floor on the bias-corrected second moment (1e-7).
    ``weight_decay`` is decoupled (AdamW) and skips biases; ``clip`` > 0 clamps each gradient
    entry to [-clip, clip]; ``bias_lr_factor`` scales the learning rate of biases. ``final_lr``
    (None: constant) and ``decay_steps`` (environment steps) give the linear schedule of the
    module doc. Raises ValueError naming the field for a value out of range.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-7
    v_hat_floor: float = 0.0
    weight_decay: float = 0.0
    clip: float = 0.0
    bias_lr_factor: float = 1.0
    final_lr: float | None = None
    decay_steps: int = 0

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
        if self.final_lr is None:
            if self.decay_steps != 0:
                raise ValueError(f"{name}.decay_steps: only with a final_lr (a constant rate decays over no steps), "
                                 f"got {self.decay_steps!r}")
        else:
            check_number(f"{name}.final_lr", self.final_lr, 0.0, None)
            check_int(f"{name}.decay_steps", self.decay_steps, 1)

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes over the run (``final_lr`` set)."""
        return self.final_lr is not None

    def lr_at(self, step: int) -> float:
        """The learning rate of an update at environment step ``step`` (>= 0; see the module doc)."""
        if self.final_lr is None:
            return self.lr
        fraction = min(step / self.decay_steps, 1.0)
        return self.lr * (1.0 - fraction) + self.final_lr * fraction

    @property
    def masks_biases(self) -> bool:
        """Whether the step treats biases differently (bias_lr_factor, weight decay)."""
        return self.bias_lr_factor != 1.0 or self.weight_decay != 0.0

    def apply(self, params, grads, m, v, t, is_bias=None, lr: float | None = None) -> None:
        """One step at step count ``t`` (>= 1) over flat buffers, in place (float32 or float64),
        at learning rate ``lr`` (None: ``self.lr``)."""
        from memrl._core import _adam

        _adam.adam_step(params, grads, m, v, t, self.lr if lr is None else lr, self.beta1, self.beta2, self.eps,
                        self.v_hat_floor, self.weight_decay, self.clip, is_bias if self.masks_biases else None,
                        self.bias_lr_factor)
