"""Networks over the Cython kernels: layers, a sequential model, and the tanh-Gaussian head.

A :class:`Sequential` model owns four flat, contiguous buffers (``params``, ``grads``, and the
Adam moments ``adam_m``, ``adam_v``); every layer's weights are named views into them, so an
optimiser step, a Polyak update, a copy or a checkpoint is one operation on one array.

Sequences are time-major: inputs ``(T, B, I)``, outputs ``(T, B, O)``. The activations needed
for backward live in the workspace of a compiled plan (``memrl._core._network``) allocated once
per ``(T, B)`` and reused; the arrays ``forward`` returns belong to that plan and are overwritten
by the next call with the same shape (copy them to keep them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from memrl._checks import check_int
from memrl._core import ACTIVATIONS as ACTIVATION_NAMES, GATE_MODES as GATE_NAMES, _adam, _head
from memrl._core._network import LayerKind, SequencePlan, StepPlan

ACTIVATIONS = {name: code for code, name in enumerate(ACTIVATION_NAMES)}
"""Activation name -> kernel code."""
GATE_MODES = {name: code for code, name in enumerate(GATE_NAMES)}
"""GRU gate mode name -> kernel code."""
PLAN_COLUMNS = {"W": 0, "W_ih": 0, "b": 1, "b_ih": 1, "W_hh": 2, "b_hh": 3}
"""Column of each parameter's offset in the plans' offset table (``memrl._core._network``)."""
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
MAX_CACHED_SHAPES = 16


# --------------------------------------------------------------------------------------------
# Input checks (the API boundary: every message names the argument, the expected and the actual)
# --------------------------------------------------------------------------------------------

def check_array(name: str, value, dtype: np.dtype, shape: tuple, *, finite: bool = True) -> np.ndarray:
    """Return ``value`` if it is a C-contiguous ``dtype`` array of ``shape`` (None = any size)."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(value).__name__}")
    if value.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {value.dtype.name}")
    if value.ndim != len(shape) or any(e is not None and e != g for e, g in zip(shape, value.shape)):
        want = "(" + ", ".join("*" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {value.strides}")
    if finite and value.dtype.kind == "f" and value.size and not np.isfinite(value).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise ValueError(f"{name}: expected finite values, got {value[bad]} at index {bad}")
    return value


def as_mask(name: str, value, shape: tuple) -> np.ndarray | None:
    """Reset masks: None, or a bool/uint8 C-contiguous array of ``shape``, returned as uint8."""
    if value is None:
        return None
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy.ndarray of bool or uint8, got {type(value).__name__}")
    if value.dtype not in (np.bool_, np.uint8):
        raise TypeError(f"{name}: expected dtype bool or uint8, got {value.dtype.name}")
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array, got strides {value.strides}")
    return value.view(np.uint8)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

class Layer:
    """A layer: its kind and code for the kernels, parameter shapes (in the order the kernels
    read them), initialisation, and the named views it initialises."""

    in_dim: int
    out_dim: int
    kind: int
    code: int

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def bias_names(self) -> tuple[str, ...]:
        return ()

    def bind(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        self.p, self.g = params, grads


class Dense(Layer):
    """``y = act(x W^T + b)``; W (out_dim, in_dim), b (out_dim,)."""

    def __init__(self, in_dim: int, out_dim: int, activation: str = "identity"):
        _check_dim("in_dim", in_dim, allow_zero=True)
        _check_dim("out_dim", out_dim)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.in_dim, self.out_dim, self.activation = in_dim, out_dim, activation
        self.kind, self.code = int(LayerKind.DENSE), ACTIVATIONS[activation]

    def __repr__(self):
        return f"Dense({self.in_dim}, {self.out_dim}, activation={self.activation!r})"

    def config(self):
        return {"type": "dense", "in_dim": self.in_dim, "out_dim": self.out_dim, "activation": self.activation}

    def parameter_shapes(self):
        return {"W": (self.out_dim, self.in_dim), "b": (self.out_dim,)}

    def bias_names(self):
        return ("b",)

    def init(self, rng: np.random.Generator) -> None:
        bound = 1.0 / math.sqrt(self.in_dim) if self.in_dim else 0.0
        self.p["W"][...] = rng.uniform(-bound, bound, self.p["W"].shape)
        self.p["b"][...] = rng.uniform(-bound, bound, self.p["b"].shape)


class GRU(Layer):
    """PyTorch-compatible GRU layer (gate order r, z, n); ``gates`` "exact" or "fast" (RLtools)."""

    def __init__(self, in_dim: int, hidden_dim: int, gates: str = "exact"):
        _check_dim("in_dim", in_dim, allow_zero=True)
        _check_dim("hidden_dim", hidden_dim)
        if gates not in GATE_MODES:
            raise ValueError(f"gates: expected one of {sorted(GATE_MODES)}, got {gates!r}")
        self.in_dim, self.hidden_dim, self.out_dim, self.gates = in_dim, hidden_dim, hidden_dim, gates
        self.kind, self.code = int(LayerKind.GRU), GATE_MODES[gates]

    def __repr__(self):
        return f"GRU({self.in_dim}, {self.hidden_dim}, gates={self.gates!r})"

    def config(self):
        return {"type": "gru", "in_dim": self.in_dim, "hidden_dim": self.hidden_dim, "gates": self.gates}

    def parameter_shapes(self):
        H, I = self.hidden_dim, self.in_dim
        return {"W_ih": (3 * H, I), "W_hh": (3 * H, H), "b_ih": (3 * H,), "b_hh": (3 * H,)}

    def bias_names(self):
        return ("b_ih", "b_hh")

    def init(self, rng: np.random.Generator) -> None:
        # PyTorch's nn.GRU: every tensor ~ U(-1/sqrt(H), 1/sqrt(H)).
        bound = 1.0 / math.sqrt(self.hidden_dim)
        for name in ("W_hh", "W_ih", "b_hh", "b_ih"):
            self.p[name][...] = rng.uniform(-bound, bound, self.p[name].shape)



def _check_dim(name, value, allow_zero=False):
    check_int(name, value, 0 if allow_zero else 1)


def layer_from_config(cfg: dict) -> Layer:
    kind = cfg.get("type")
    if kind == "dense":
        return Dense(cfg["in_dim"], cfg["out_dim"], cfg["activation"])
    if kind == "gru":
        return GRU(cfg["in_dim"], cfg["hidden_dim"], cfg["gates"])
    raise ValueError(f"layer type: expected 'dense' or 'gru', got {kind!r}")


# --------------------------------------------------------------------------------------------
# Flat parameter buffers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    layer: int
    name: str
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class Sequential:
    """Layers applied in order to time-major sequences, with one flat buffer per parameter role.

    ``params``, ``grads``, ``adam_m`` and ``adam_v`` are contiguous 1-D arrays; ``named()`` gives
    views ("0.W", "1.W_ih", ...). ``grads`` accumulate across backward calls until
    ``zero_grad()``.

    Recurrent state has one meaning in ``forward``, ``step`` and the exported NumPy
    :class:`memrl.policy.Policy`: a reset means "a new episode starts here", and a row that
    resets at step t enters step t from the ZERO state. ``h0`` (``forward`` only) is the state
    before step 0 (zeros if not given); it is never used again after step 0.
    """

    def __init__(self, layers: Sequence[Layer], *, dtype=np.float32, seed: int | None = 0):
        layers = list(layers)
        if not layers:
            raise ValueError("layers: expected at least one layer, got none")
        for i, (a, b) in enumerate(zip(layers, layers[1:])):
            if a.out_dim != b.in_dim:
                raise ValueError(f"layers[{i + 1}]: expected in_dim {a.out_dim} (output of layers[{i}]), "
                                 f"got {b.in_dim}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype.name}")
        self.layers = layers
        self.in_dim, self.out_dim = layers[0].in_dim, layers[-1].out_dim
        self.slots: list[Slot] = []
        offset = 0
        for i, layer in enumerate(layers):
            for name, shape in layer.parameter_shapes().items():
                self.slots.append(Slot(i, name, tuple(shape), offset))
                offset += math.prod(shape)
        self.size = offset
        self.params = np.zeros(self.size, self.dtype)
        self.grads = np.zeros(self.size, self.dtype)
        self.adam_m = np.zeros(self.size, self.dtype)
        self.adam_v = np.zeros(self.size, self.dtype)
        self.adam_t = 0
        self.is_bias = np.zeros(self.size, np.uint8)
        for i, layer in enumerate(layers):
            mine = [s for s in self.slots if s.layer == i]
            layer.bind({s.name: self._view(self.params, s) for s in mine},
                       {s.name: self._view(self.grads, s) for s in mine})
            for s in mine:
                if s.name in layer.bias_names():
                    self.is_bias[s.offset:s.offset + s.size] = 1
        self.recurrent = [i for i, layer in enumerate(layers) if isinstance(layer, GRU)]
        # The compiled plans' inputs: [kind, in_dim, out_dim, code] per layer, and the offsets of
        # each layer's parameters in the flat buffers ([W | W_ih, b | b_ih, W_hh, b_hh]).
        self.layer_table = np.array([[layer.kind, layer.in_dim, layer.out_dim, layer.code] for layer in layers],
                                    np.int32)
        self.offset_table = np.full((len(layers), 4), -1, np.int64)
        for slot in self.slots:
            self.offset_table[slot.layer, PLAN_COLUMNS[slot.name]] = slot.offset
        self._plans: dict[tuple[int, int], SequencePlan] = {}
        self._forwarded: set[tuple[int, int]] = set()
        self._custom_h0: set[tuple[int, int]] = set()
        self._step_plans: dict[tuple, StepPlan] = {}
        if seed is not None:
            self.init(seed)

    # -- parameters ---------------------------------------------------------------------------

    @staticmethod
    def _view(flat, slot):
        return flat[slot.offset:slot.offset + slot.size].reshape(slot.shape)

    def named(self, which: str = "params") -> dict[str, np.ndarray]:
        """Views of one flat buffer ("params", "grads", "adam_m", "adam_v") by "layer.name"."""
        flat = getattr(self, which)
        return {f"{s.layer}.{s.name}": self._view(flat, s) for s in self.slots}

    def init(self, seed: int) -> None:
        """Initialise every layer PyTorch-style from ``seed`` (deterministic)."""
        rng = np.random.default_rng(seed)
        for layer in self.layers:
            layer.init(rng)
        self.adam_m[:] = 0
        self.adam_v[:] = 0
        self.adam_t = 0

    def zero_grad(self) -> None:
        self.grads[:] = 0

    def copy_from(self, other: "Sequential") -> None:
        """Copy another model's parameters (same architecture) into this one."""
        if other.config() != self.config():
            raise ValueError("other: expected a model with the same architecture")
        self.params[:] = other.params

    def config(self) -> list[dict]:
        return [layer.config() for layer in self.layers]

    @classmethod
    def from_config(cls, config: list[dict], *, dtype=np.float32, seed: int | None = 0) -> "Sequential":
        return cls([layer_from_config(c) for c in config], dtype=dtype, seed=seed)

    def __repr__(self):
        return f"Sequential([{', '.join(map(repr, self.layers))}], dtype={self.dtype.name}, size={self.size})"

    # -- sequences ----------------------------------------------------------------------------

    def new_plan(self, T: int, B: int) -> SequencePlan:
        """A compiled forward/backward plan of shape (T, B) with a workspace of its own, bound to
        this model's parameters and gradients (not shared with ``forward``: for the updates)."""
        return SequencePlan(T, B, self.layer_table, self.offset_table, self.params, self.grads)

    def plan(self, T: int, B: int) -> SequencePlan:
        """The plan ``forward`` and ``backward`` use for shape (T, B) (cached, up to 16 shapes)."""
        plan = self._plans.get((T, B))
        if plan is None:
            if len(self._plans) >= MAX_CACHED_SHAPES:
                evicted = next(iter(self._plans))
                del self._plans[evicted]
                self._forwarded.discard(evicted)
                self._custom_h0.discard(evicted)
            plan = self._plans[(T, B)] = self.new_plan(T, B)
        return plan

    def forward(self, x: np.ndarray, reset: np.ndarray | None = None,
                h0: Sequence[np.ndarray | None] | None = None, *, check: bool = True) -> np.ndarray:
        """Run ``x`` (T, B, in_dim) through every layer; returns (T, B, out_dim).

        ``reset`` (T, B) bool/uint8: where ``reset[t, b]`` is true a new episode starts at step t
        in sample b, and every recurrent layer enters step t from zeros (at t = 0 too).
        ``h0``: a list with one (B, H) array (dtype of the model) or None per recurrent layer:
        the state before step 0 (None = zeros), used by the rows that do not reset at step 0
        and never after. ``forward(x, reset, h0)`` equals a loop of :meth:`step` over t from a
        copy of ``h0`` with ``reset[t]``. After ``backward``, :meth:`initial_state_grads` gives
        dL/dh0: it flows only through step 0's row (exactly zero for rows with ``reset[0, b]``),
        never through a later reset. ``check=False`` skips the finiteness scan, not the shape and
        dtype checks. Raises TypeError/ValueError naming ``x``, ``reset`` or ``h0[k]``.
        """
        if check:
            check_array("x", x, self.dtype, (None, None, self.in_dim))
            h0 = self._check_h0(h0, x.shape[1])
        elif (x.dtype != self.dtype or x.ndim != 3 or x.shape[2] != self.in_dim
              or not x.flags.c_contiguous):
            check_array("x", x, self.dtype, (None, None, self.in_dim), finite=False)
        T, B = x.shape[:2]
        reset = as_mask("reset", reset, (T, B))
        plan = self.plan(T, B)
        if h0 is not None or (T, B) in self._custom_h0:
            plan.set_initial_states(list(h0) if h0 is not None else [])
            (self._custom_h0.add if h0 is not None else self._custom_h0.discard)((T, B))
        plan.forward(x, reset)
        self._forwarded.add((T, B))
        return plan.output

    def backward(self, dy: np.ndarray, *, need_dx: bool = True, check: bool = True,
                 ignore_resets: bool = False) -> np.ndarray | None:
        """Backpropagate dy (T, B, out_dim) through the last forward of that shape.

        ACCUMULATES into ``grads``; returns dx (T, B, in_dim) (a workspace array) or None.
        ``ignore_resets`` reproduces an RLtools quirk (backpropagating as if the window were one
        continuous sequence); it is not the gradient of the forward.
        """
        if check or dy.dtype != self.dtype or dy.ndim != 3 or not dy.flags.c_contiguous:
            check_array("dy", dy, self.dtype, (None, None, self.out_dim), finite=check)
        T, B = dy.shape[:2]
        if (T, B) not in self._forwarded:
            raise RuntimeError(f"backward: no forward pass with (T, B) = ({T}, {B}) to backpropagate through")
        plan = self._plans[(T, B)]
        plan.backward(dy, need_dx, ignore_resets)
        return plan.input_grad if need_dx else None

    def initial_state_grads(self, T: int, B: int) -> list[np.ndarray]:
        """dL/dh0 (B, H) of each recurrent layer from the last backward with shape (T, B).

        Only step 0's starting state depends on h0, so rows that reset at step 0 get exactly 0.
        Workspace arrays: overwritten by the next backward of that shape.
        """
        return list(self._plans[(T, B)].initial_state_grads)

    def _check_h0(self, h0, B):
        if h0 is None:
            return None
        if len(h0) != len(self.recurrent):
            raise ValueError(f"h0: expected {len(self.recurrent)} initial states (one per GRU), got {len(h0)}")
        return [None if h is None else check_array(f"h0[{k}]", h, self.dtype, (B, self.layers[i].hidden_dim))
                for k, (i, h) in enumerate(zip(self.recurrent, h0))]

    # -- one step at a time (acting) -----------------------------------------------------------

    def initial_state(self, batch_size: int) -> list[np.ndarray]:
        """Zero carried states, one (B, H) array per recurrent layer."""
        _check_dim("batch_size", batch_size)
        return [np.zeros((batch_size, self.layers[i].hidden_dim), self.dtype) for i in self.recurrent]

    def step(self, x: np.ndarray, state: list[np.ndarray], reset: np.ndarray | None = None,
             *, check: bool = True) -> np.ndarray:
        """Advance carried ``state`` (in place) by one step of x (B, in_dim); returns (B, out_dim).

        Rows where ``reset`` (B,) is true start a new episode: their states are zeroed first.
        A loop of ``step`` over t from a copy of ``h0``, passing ``reset[t]``, gives the outputs of
        ``forward(x, reset, h0)`` (same semantics, up to the last bit of rounding: the two paths
        order their products differently).
        """
        if check:
            check_array("x", x, self.dtype, (None, self.in_dim))
        B = x.shape[0]
        reset = as_mask("reset", reset, (B,))
        if check:
            if len(state) != len(self.recurrent):
                raise ValueError(f"state: expected {len(self.recurrent)} arrays (one per GRU), got {len(state)}")
            for k, i in enumerate(self.recurrent):
                check_array(f"state[{k}]", state[k], self.dtype, (B, self.layers[i].hidden_dim))
        plan = self.step_plan(B, state)
        if x.dtype != self.dtype or x.shape != (B, self.in_dim) or not x.flags.c_contiguous:
            check_array("x", x, self.dtype, (B, self.in_dim), finite=False)
        plan.step(x, reset)
        return plan.output

    def step_plan(self, B: int, state: list[np.ndarray]) -> StepPlan:
        """The cached compiled step for B rows advancing these ``state`` arrays (in place)."""
        key = (B,) + tuple(id(h) for h in state)
        plan = self._step_plans.get(key)
        if plan is None:
            if len(self._step_plans) >= MAX_CACHED_SHAPES:
                del self._step_plans[next(iter(self._step_plans))]
            plan = self._step_plans[key] = StepPlan(B, self.layer_table, self.offset_table, self.params, list(state))
        return plan

    # -- optimisation -----------------------------------------------------------------------

    def adam_step(self, optimizer) -> None:
        """One Adam step (a ``memrl.optim.AdamConfig``) on ``params`` from ``grads`` (moments and
        step count kept here)."""
        self.adam_t += 1
        optimizer.apply(self.params, self.grads, self.adam_m, self.adam_v, self.adam_t, self.is_bias)

    def polyak_from(self, source: "Sequential", tau: float) -> None:
        """params <- (1 - tau) params + tau source.params."""
        _adam.polyak(self.params, source.params, tau)


# --------------------------------------------------------------------------------------------
# Tanh-Gaussian head
# --------------------------------------------------------------------------------------------

class TanhGaussianHead:
    """SAC's sample-and-squash output: (N, 2A) [mean | log-std] -> actions (N, A) and log pi (N,).

    Noise ``eps`` (N, A) comes from the caller (None = deterministic ``tanh(mean)``), so a
    training step is reproducible and its gradient exact. Workspaces per N are reused.
    """

    def __init__(self, action_dim: int, *, log_std_min: float = -20.0, log_std_max: float = 2.0,
                 dtype=np.float32):
        _check_dim("action_dim", action_dim)
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min, log_std_max: expected min < max, got {log_std_min}, {log_std_max}")
        self.action_dim, self.log_std_min, self.log_std_max = action_dim, log_std_min, log_std_max
        self.dtype = np.dtype(dtype)
        self._ws: dict[int, dict] = {}

    def _workspace(self, N):
        ws = self._ws.get(N)
        if ws is None:
            A = self.action_dim
            ws = self._ws[N] = {"a": np.zeros((N, A), self.dtype), "logp": np.zeros(N, self.dtype),
                                "dpre": np.zeros((N, 2 * A), self.dtype)}
        return ws

    def forward(self, pre: np.ndarray, eps: np.ndarray | None, *, check: bool = True):
        """Returns (actions (N, A), log_prob (N,)), both workspace arrays."""
        if check:
            check_array("pre", pre, self.dtype, (None, 2 * self.action_dim))
            if eps is not None:
                check_array("eps", eps, self.dtype, (pre.shape[0], self.action_dim))
        ws = self._workspace(pre.shape[0])
        ws["pre"], ws["eps"] = pre, eps
        _head.forward(pre, eps, ws["a"], ws["logp"], self.log_std_min, self.log_std_max)
        return ws["a"], ws["logp"]

    def backward(self, da: np.ndarray | None, dlogp: np.ndarray | None, *, check: bool = True) -> np.ndarray:
        """dL/dpre (N, 2A) from dL/da (N, A) and dL/dlog_prob (N,) of the last forward of size N."""
        N = (da if da is not None else dlogp).shape[0]
        ws = self._ws.get(N)
        if ws is None or "pre" not in ws:
            raise RuntimeError(f"backward: no forward pass with N = {N}")
        if check:
            if da is not None:
                check_array("da", da, self.dtype, (N, self.action_dim))
            if dlogp is not None:
                check_array("dlogp", dlogp, self.dtype, (N,))
        _head.backward(ws["pre"], ws["eps"], ws["a"], da, dlogp, ws["dpre"], self.log_std_min, self.log_std_max)
        return ws["dpre"]
