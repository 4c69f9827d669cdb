"""Gymnasium spaces as memrl's agents see them: observation encoders, action decoders, and the JSON
descriptions an exported policy records (so that it encodes and decodes with NumPy alone).

Observations become one flat float32 vector, part by part:

* ``Box``: flattened (row-major), cast to float32;
* ``Discrete(n, start)``: the one-hot vector of ``x - start`` (n entries);
* ``MultiDiscrete(nvec, start)``: one one-hot vector per component (flattened row-major),
  concatenated (``sum(nvec)`` entries);
* ``Tuple`` of these (nested Tuples too): the parts' encodings concatenated in order.

Actions, as the agents emit them (one float row of ``action_dim`` entries):

* a bounded floating-point ``Box``: the agent's action in [-1, 1]^A (A = the flattened size),
  clipped and mapped affinely onto ``[low, high]`` (``clip(offset + scale * a, low, high)``,
  ``offset = (high + low) / 2``, ``scale = (high - low) / 2``);
* ``Discrete(n, start)``: one category index i in {0..n-1} (K = 1 component); the environment
  gets ``start + i`` (the space's dtype, shape ());
* ``MultiDiscrete(nvec, start)``: one index per component (K = the flattened size, row-major);
  the environment gets ``start + indices`` shaped as the space.

The discrete forms are what discrete SAC acts on (``memrl.discrete_sac``): ``action_nvec`` gives
each component's category count. Any other space is refused with one line naming it
(:class:`UnsupportedSpace`, a ValueError).

Descriptions are plain JSON: an observation is a list of parts ``{"kind": "box", "shape": [...]}``,
``{"kind": "discrete", "n": n, "start": s}`` or ``{"kind": "multi_discrete", "nvec": [...],
"start": [...], "shape": [...]}``; an action ``{"kind": "box", "shape", "dtype", "low", "high"}`` or
``{"kind": "discrete" | "multi_discrete", "nvec", "start", "shape", "dtype"}`` (flattened lists).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

SUPPORTED = ("memrl supports observation spaces Box, Discrete, MultiDiscrete and Tuples of them, and action "
             "spaces Box (floating point, finite bounds), Discrete and MultiDiscrete")


class UnsupportedSpace(ValueError):
    """A Gymnasium space memrl's agents cannot observe or act in (the message names it)."""


# ---------------------------------------------------------------------------------------------
# Descriptions of Gymnasium spaces (need gymnasium's classes only to tell the spaces apart)
# ---------------------------------------------------------------------------------------------

def describe_observation_space(space: Any, where: str = "") -> list[dict]:
    """The parts of an observation space (see the module doc); UnsupportedSpace otherwise."""
    import gymnasium

    spaces = gymnasium.spaces
    if isinstance(space, spaces.Box):
        return [{"kind": "box", "shape": [int(d) for d in space.shape]}]
    if isinstance(space, spaces.Discrete):
        return [{"kind": "discrete", "n": int(space.n), "start": int(space.start)}]
    if isinstance(space, spaces.MultiDiscrete):
        return [{"kind": "multi_discrete", "nvec": np.asarray(space.nvec).reshape(-1).astype(int).tolist(),
                 "start": np.asarray(space.start).reshape(-1).astype(int).tolist(),
                 "shape": [int(d) for d in space.shape]}]
    if isinstance(space, spaces.Tuple):
        return [part for sub in space.spaces for part in describe_observation_space(sub, where)]
    raise UnsupportedSpace(f"observation_space: expected a Box, Discrete, MultiDiscrete or Tuple space, got {space} "
                           f"({type(space).__name__}){where}; {SUPPORTED}")


def describe_action_space(space: Any, where: str = "") -> dict:
    """The description of an action space (see the module doc); UnsupportedSpace otherwise."""
    import gymnasium

    spaces = gymnasium.spaces
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise UnsupportedSpace(f"action_space: expected a floating-point Box, got dtype {space.dtype} "
                                   f"({space}){where}; {SUPPORTED}")
        low = np.asarray(space.low, np.float64).reshape(-1)
        high = np.asarray(space.high, np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise UnsupportedSpace(f"action_space: expected finite bounds, got an unbounded Box {space}{where}; "
                                   f"{SUPPORTED}")
        return {"kind": "box", "shape": [int(d) for d in space.shape], "dtype": np.dtype(space.dtype).name,
                "low": low.tolist(), "high": high.tolist()}
    if isinstance(space, spaces.Discrete):
        return {"kind": "discrete", "nvec": [int(space.n)], "start": [int(space.start)], "shape": [],
                "dtype": np.dtype(space.dtype).name}
    if isinstance(space, spaces.MultiDiscrete):
        return {"kind": "multi_discrete", "nvec": np.asarray(space.nvec).reshape(-1).astype(int).tolist(),
                "start": np.asarray(space.start).reshape(-1).astype(int).tolist(),
                "shape": [int(d) for d in space.shape], "dtype": np.dtype(space.dtype).name}
    raise UnsupportedSpace(f"action_space: expected a Box, Discrete or MultiDiscrete space, got {space} "
                           f"({type(space).__name__}){where}; {SUPPORTED}")


# ---------------------------------------------------------------------------------------------
# Encoding and decoding from descriptions (NumPy only)
# ---------------------------------------------------------------------------------------------

def part_size(part: dict) -> int:
    """Encoded entries of one observation part."""
    if part["kind"] == "box":
        return int(math.prod(part["shape"]))
    if part["kind"] == "discrete":
        return int(part["n"])
    if part["kind"] == "multi_discrete":
        return int(sum(part["nvec"]))
    raise ValueError(f"observation part kind: expected 'box', 'discrete' or 'multi_discrete', got {part['kind']!r}")


class ObservationEncoder:
    """Observations of a described space -> flat float32 vectors of ``size`` entries (module doc).

    ``low`` and ``high`` (size,) are the encoded bounds (a Box's own, 0 and 1 for one-hot entries).
    ``encode(obs)`` returns a new array; ValueError names a value outside its space.
    """

    def __init__(self, parts: list[dict], low: np.ndarray | None = None, high: np.ndarray | None = None):
        if not isinstance(parts, list) or not parts:
            raise ValueError(f"parts: expected a non-empty list of observation parts, got {parts!r}")
        self.parts = parts
        self.sizes = [part_size(p) for p in parts]
        self.size = int(sum(self.sizes))
        self.single = len(parts) == 1
        self.only_box = all(p["kind"] == "box" for p in parts)
        self.low = np.zeros(self.size, np.float32) if low is None else np.asarray(low, np.float32).reshape(-1)
        self.high = np.ones(self.size, np.float32) if high is None else np.asarray(high, np.float32).reshape(-1)

    @classmethod
    def for_space(cls, space: Any, where: str = "") -> "ObservationEncoder":
        """The encoder of a Gymnasium observation space, with its bounds."""
        parts = describe_observation_space(space, where)
        encoder = cls(parts)
        lows, highs = [], []
        for sub, part in zip(_leaves(space), parts):
            if part["kind"] == "box":
                lows.append(np.asarray(sub.low, np.float32).reshape(-1))
                highs.append(np.asarray(sub.high, np.float32).reshape(-1))
            else:
                lows.append(np.zeros(part_size(part), np.float32))
                highs.append(np.ones(part_size(part), np.float32))
        encoder.low, encoder.high = np.concatenate(lows), np.concatenate(highs)
        return encoder

    def encode(self, obs: Any, out: np.ndarray | None = None) -> np.ndarray:
        """The float32 encoding (size,) of one observation (a tuple for a Tuple space)."""
        if self.single and self.only_box:
            flat = np.array(obs, dtype=np.float32).reshape(-1)
            if flat.shape[0] != self.size:
                raise ValueError(f"observation: expected {self.size} values, got {flat.shape[0]}")
            if out is not None:
                out[...] = flat
                return out
            return flat
        out = np.zeros(self.size, np.float32) if out is None else out
        values = (obs,) if self.single else _flatten_tuple(obs)
        if len(values) != len(self.parts):
            raise ValueError(f"observation: expected a tuple of {len(self.parts)} parts, got {obs!r}")
        offset = 0
        for part, size, value in zip(self.parts, self.sizes, values):
            view = out[offset:offset + size]
            kind = part["kind"]
            if kind == "box":
                flat = np.asarray(value, np.float32).reshape(-1)
                if flat.shape[0] != size:
                    raise ValueError(f"observation: expected {size} values in a Box part, got {flat.shape[0]}")
                view[...] = flat
            elif kind == "discrete":
                view[...] = 0
                view[_index(value, part["start"], part["n"])] = 1
            else:
                view[...] = 0
                values_k = np.asarray(value).reshape(-1)
                if values_k.shape[0] != len(part["nvec"]):
                    raise ValueError(f"observation: expected {len(part['nvec'])} MultiDiscrete entries, "
                                     f"got {values_k.tolist()}")
                o = 0
                for v, n, s in zip(values_k.tolist(), part["nvec"], part["start"]):
                    view[o + _index(v, s, n)] = 1
                    o += n
            offset += size
        return out


def _index(value: Any, start: int, n: int) -> int:
    v = value.item() if isinstance(value, np.ndarray) and value.size == 1 else value
    try:
        i = int(v) - start
    except (TypeError, ValueError):
        raise ValueError(f"observation: expected an integer in [{start}, {start + n}), got {value!r}") from None
    if not 0 <= i < n or int(v) != v:
        raise ValueError(f"observation: expected an integer in [{start}, {start + n}), got {value!r}")
    return i


def _flatten_tuple(obs: Any) -> list:
    if isinstance(obs, tuple):
        return [leaf for item in obs for leaf in _flatten_tuple(item)]
    return [obs]


def _leaves(space: Any) -> list:
    import gymnasium

    if isinstance(space, gymnasium.spaces.Tuple):
        return [leaf for sub in space.spaces for leaf in _leaves(sub)]
    return [space]


class ActionDecoder:
    """The agent's action rows -> the environment's actions, for a described action space.

    ``discrete``: whether the agent emits category indices (``nvec``: categories per component)
    rather than a [-1, 1] vector; ``action_dim``: the entries of one agent action.
    """

    def __init__(self, description: dict):
        self.description = d = description
        self.kind = d["kind"]
        self.shape = tuple(d["shape"])
        self.dtype = np.dtype(d["dtype"])
        self.discrete = self.kind in ("discrete", "multi_discrete")
        if self.discrete:
            self.nvec = [int(n) for n in d["nvec"]]
            self.start = [int(s) for s in d["start"]]
            self.action_dim = len(self.nvec)
        elif self.kind == "box":
            low, high = np.asarray(d["low"], np.float64), np.asarray(d["high"], np.float64)
            self.action_dim = int(low.shape[0])
            self._bounds = (low.tolist(), high.tolist(), ((high - low) / 2.0).tolist(), ((high + low) / 2.0).tolist())
        else:
            raise ValueError(f"action kind: expected 'box', 'discrete' or 'multi_discrete', got {self.kind!r}")

    def decode(self, action: Any) -> Any:
        """The environment's action for one agent action (checked: shape, finite, valid index)."""
        try:
            value = action if isinstance(action, np.ndarray) and action.dtype.kind == "f" \
                else np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"action: expected real numbers of shape ({self.action_dim},), got {action!r}") from None
        if value.shape != (self.action_dim,) and not (self.action_dim == 1 and value.shape == ()):
            raise ValueError(f"action: expected shape ({self.action_dim},), got shape {value.shape}")
        entries = value.reshape(-1).tolist()
        if self.discrete:
            out = []
            for v, n, s in zip(entries, self.nvec, self.start):
                if not (math.isfinite(v) and v == int(v) and 0 <= v < n):
                    raise ValueError(f"action: expected category indices in [0, n) for n in {self.nvec}, "
                                     f"got {entries}")
                out.append(s + int(v))
            if self.kind == "discrete":
                return self.dtype.type(out[0])
            return np.array(out, dtype=self.dtype).reshape(self.shape)
        # Per entry in Python floats (float64, the same operations NumPy would do): for the few
        # entries of an action this is several times cheaper than a chain of ufunc calls.
        out = []
        for v, lo, hi, scale, offset in zip(entries, *self._bounds):
            if not math.isfinite(v):
                raise ValueError(f"action: expected finite numbers, got {entries}")
            v = offset + scale * (-1.0 if v < -1.0 else (1.0 if v > 1.0 else v))
            out.append(lo if v < lo else (hi if v > hi else v))
        return np.array(out, dtype=self.dtype).reshape(self.shape)


def action_encoding_size(nvec: list[int] | None, action_dim: int) -> int:
    """Entries of the previous-action history input: one-hot per component for discrete actions
    (``sum(nvec)``), the [-1, 1] action itself otherwise (``action_dim``)."""
    return int(sum(nvec)) if nvec is not None else int(action_dim)


def encode_previous_action(action: np.ndarray, nvec: list[int] | None, low, high, out: np.ndarray) -> None:
    """Write the history input of the agent's ``action`` into ``out``: the one-hot vector of each
    component's index (discrete; indices are clamped into range), or the action clipped to the
    environment's declared bounds ``low``..``high`` (continuous)."""
    if nvec is None:
        np.clip(action, low, high, out=out)
        return
    out[...] = 0
    offset = 0
    for v, n in zip(np.asarray(action).reshape(-1).tolist(), nvec):
        i = int(v)
        out[offset + (0 if i < 0 else (n - 1 if i >= n else i))] = 1
        offset += n
