"""Exported policies: a trained actor in one file, run with NumPy alone.

``export_policy`` writes the actor's layer configuration and parameters in the safe checkpoint
format (:mod:`memrl.checkpoint`, nothing executes on load). :class:`Policy` loads that file and
acts step by step, carrying the GRU states between calls, without importing ``memrl.nn`` or the
compiled kernels (``memrl._core``), so it runs wherever NumPy does.

Arithmetic is in the dtype the parameters were exported in (float32 for actors trained by memrl,
as in training); observations are cast to it. Layer formulas are those of the training kernels:

    dense:  y = act(x W^T + b)
    GRU:    r = sigma(W_ir x + b_ir + W_hr h + b_hr)      z = sigma(W_iz x + b_iz + W_hz h + b_hz)
            n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h

with gates "exact" (sigmoid, tanh) or "fast" (RLtools' Pade approximations). A SAC actor outputs
[mean | log-std] (B, 2A), a TD3 actor the action's pre-activation (B, A); the deterministic action
is ``tanh(mean)``. A discrete SAC actor outputs C = sum(nvec) logits (one softmax per action
component); its deterministic action is each component's argmax (``memrl.discrete_sac``).

Files record their environment (``memrl.envs.environment_spec``): the observation space's parts
(raw observations, e.g. a Discrete index or a Tuple, are encoded as in training:
``memrl.spaces``), the action space (actions come back in the environment's units), and the
history inputs: a policy trained with the previous action and reward as inputs
(``memrl.envs.history``) tracks its own previous actions and takes the previous reward from the
caller, ``act(obs, reward=r)``; both are zero on an episode's first step.
"""
from __future__ import annotations

import math
import os

import numpy as np

from memrl._checks import check_int
from memrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from memrl.spaces import ActionDecoder, ObservationEncoder, action_encoding_size, encode_previous_action

POLICY_KIND = "memrl-policy"
POLICY_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # 1: no environment record (actions in [-1, 1]); 2: Box spaces only


# --------------------------------------------------------------------------------------------
# Activations (the same formulas as memrl/_core/_activations.pxd)
# --------------------------------------------------------------------------------------------

def fast_tanh(x: np.ndarray) -> np.ndarray:
    """RLtools' Pade tanh: x (27 + x^2) / (27 + 9 x^2) on x clamped to [-3, 3]."""
    x = np.clip(x, -3, 3)
    x2 = x * x
    return x * (27 + x2) / (27 + 9 * x2)


def fast_sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * fast_tanh(0.5 * x) + 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) = inf for very negative x gives the right limit, 0
        return 1 / (1 + np.exp(-x))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


ACTIVATIONS = {"identity": lambda x: x, "relu": relu, "tanh": np.tanh, "sigmoid": sigmoid,
               "fast_tanh": fast_tanh, "fast_sigmoid": fast_sigmoid}
GATES = {"exact": (sigmoid, np.tanh), "fast": (fast_sigmoid, fast_tanh)}


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def export_policy(path: str | os.PathLike, actor, *, action_dim: int, log_std_min: float = -20.0,
                  log_std_max: float = 2.0, memory_reset_interval: int | None = None,
                  environment: dict | None = None, meta: dict | None = None) -> None:
    """Write ``actor`` (a ``memrl.nn.Sequential``: SAC's [mean | log-std], TD3's action, or discrete
    SAC's logits, as ``environment['action_space']`` says) to one file.

    ``memory_reset_interval``: wipe each row's GRU state every that many ``act`` calls (RLtools'
    50-step memory reset), None to keep it until ``reset``. ``environment``: the environment's
    name, keywords and spaces (``memrl.loop.environment_spec``), so that ``Policy.act`` returns
    actions in the environment's units; None means actions in [-1, 1]. ``meta``: extra JSON
    stored under ``"user"`` (e.g. the training step and seed).
    """
    check_int("action_dim", action_dim, 1)
    nvec = _discrete_nvec(environment)
    if nvec is not None:
        if actor.out_dim != sum(nvec):
            raise ValueError(f"actor: expected {sum(nvec)} logits (the categories {nvec}), got {actor.out_dim} outputs")
    elif actor.out_dim not in (action_dim, 2 * action_dim):
        raise ValueError(f"actor: expected output dim action_dim = {action_dim} (deterministic, TD3) or "
                         f"2 * action_dim = {2 * action_dim} ([mean | log-std], SAC), got {actor.out_dim}")
    params = {name: np.array(view) for name, view in actor.named().items()}
    _write_policy(path, actor.config(), params, action_dim=action_dim, log_std_min=log_std_min,
                  log_std_max=log_std_max, memory_reset_interval=memory_reset_interval, environment=environment,
                  meta=meta)


def export_from_checkpoint(source: str | os.PathLike, path: str | os.PathLike) -> dict:
    """Write the actor of a training checkpoint (a file, or the newest loadable checkpoint of a
    run directory) as a policy file at ``path``; returns the checkpoint's meta (``step_count``,
    ``seed``, ``config``). NumPy only. Raises memrl.run.RunDirectoryError or CheckpointError."""
    from memrl.run import find_checkpoint

    checkpoint, arrays, meta = find_checkpoint(source)
    try:
        layers = meta["architecture"]["networks"]["actor"]
        flat = arrays["actor/params"]
        config = meta["config"]
        action_dim = int(meta["architecture"]["action_dim"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{checkpoint}: no actor in this checkpoint ({type(error).__name__}: {error})") from None
    params, offset = {}, 0
    for i, layer in enumerate(layers):
        for name, shape in _parameter_shapes(layer).items():
            size = int(np.prod(shape))
            params[f"{i}.{name}"] = flat[offset:offset + size].reshape(shape).copy()
            offset += size
    if offset != flat.size:
        raise CheckpointError(f"{checkpoint}: actor/params holds {flat.size} values, its layers need {offset}")
    _write_policy(path, layers, params, action_dim=action_dim, log_std_min=config["log_std_min"],
                  log_std_max=config["log_std_max"], memory_reset_interval=config["memory_reset_interval"],
                  environment=meta.get("environment_spec"),
                  meta={"step": meta["step_count"], "seed": meta["seed"], "algorithm": config["algorithm"],
                        "checkpoint": os.path.abspath(checkpoint)})
    return meta


def _write_policy(path, layers, params, *, action_dim, log_std_min, log_std_max, memory_reset_interval,
                  environment, meta) -> None:
    if not log_std_min < log_std_max:
        raise ValueError(f"log_std_min, log_std_max: expected min < max, got {log_std_min}, {log_std_max}")
    if memory_reset_interval is not None:
        check_int("memory_reset_interval", memory_reset_interval, 1)
    _check_parameters(layers, params)
    if environment is not None:
        _check_environment(environment, action_dim)
    policy_meta = {
        "kind": POLICY_KIND,
        "policy_version": POLICY_VERSION,
        "layers": layers,
        "observation_dim": int(layers[0]["in_dim"]),
        "action_dim": int(action_dim),
        "log_std_min": float(log_std_min),
        "log_std_max": float(log_std_max),
        "memory_reset_interval": memory_reset_interval,
        "environment": environment,
        "user": meta or {},
    }
    save_checkpoint(path, params, policy_meta)


# --------------------------------------------------------------------------------------------
# Acting
# --------------------------------------------------------------------------------------------

class Policy:
    """A loaded policy with its carried recurrent state (one row per parallel episode)."""

    def __init__(self, layers: list[dict], params: dict[str, np.ndarray], *, action_dim: int,
                 log_std_min: float = -20.0, log_std_max: float = 2.0,
                 memory_reset_interval: int | None = None, environment: dict | None = None,
                 meta: dict | None = None):
        _check_parameters(layers, params)
        check_int("action_dim", action_dim, 1)
        if memory_reset_interval is not None:
            check_int("memory_reset_interval", memory_reset_interval, 1)
        for name, value in (("log_std_min", log_std_min), ("log_std_max", log_std_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
                raise ValueError(f"{name}: expected a finite number, got {value!r}")
        if not log_std_min < log_std_max:
            raise ValueError(f"log_std_min, log_std_max: expected min < max, got {log_std_min}, {log_std_max}")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"meta: expected a dict, got {type(meta).__name__}")
        if environment is not None:
            _check_environment(environment, action_dim)
        self.environment = environment
        """The training environment: ``name``, ``kwargs``, ``observation_shape``, the spaces
        (``observation_space``, ``action_space``; version-2 files: ``action_shape``,
        ``action_dtype``, ``action_low``, ``action_high`` only) and ``history_inputs``; None for
        files written before memrl recorded it (actions then stay in [-1, 1])."""
        self._decoder = None
        if environment is not None:
            space = environment.get("action_space") or {
                "kind": "box", "shape": environment["action_shape"], "dtype": environment["action_dtype"],
                "low": environment["action_low"], "high": environment["action_high"]}
            self._decoder = ActionDecoder(space)
        self.discrete = self._decoder is not None and self._decoder.discrete
        self.action_nvec = list(self._decoder.nvec) if self.discrete else None
        history = (environment or {}).get("history_inputs") or {}
        self.previous_action_input = bool(history.get("previous_action", False))
        self.previous_reward_input = bool(history.get("previous_reward", False))
        parts = (environment or {}).get("observation_space")
        self._encoder = ObservationEncoder(parts) if parts and not (
            len(parts) == 1 and parts[0]["kind"] == "box") else None
        self.layers = layers
        self.params = params
        self.dtype = params["0.W" if layers[0]["type"] == "dense" else "0.W_ih"].dtype
        self.observation_dim = layers[0]["in_dim"]
        """The actor's input width: the encoded observation plus the history inputs."""
        self.action_dim = action_dim
        self._history_size = (action_encoding_size(self.action_nvec, action_dim) if self.previous_action_input else 0) \
            + int(self.previous_reward_input)
        self.environment_observation_dim = self.observation_dim - self._history_size
        if self._encoder is not None and self._encoder.size != self.environment_observation_dim:
            raise ValueError(f"environment['observation_space']: encodes {self._encoder.size} inputs, the actor reads "
                             f"{self.environment_observation_dim} besides its history inputs")
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.memory_reset_interval = memory_reset_interval
        self.meta = meta or {}
        out_dim = _out_dim(layers[-1])
        if self.discrete:
            if out_dim != sum(self.action_nvec):
                raise ValueError(f"layers: expected {sum(self.action_nvec)} logits (categories {self.action_nvec}), "
                                 f"got output dim {out_dim}")
        elif out_dim not in (action_dim, 2 * action_dim):
            raise ValueError(f"layers: expected output dim {action_dim} or {2 * action_dim}, got {out_dim}")
        self.stochastic = self.discrete or out_dim == 2 * action_dim
        self.recurrent = [i for i, layer in enumerate(layers) if layer["type"] == "gru"]
        self.state: list[np.ndarray] | None = None  # one (B, H) array per GRU layer
        self.steps_since_reset: np.ndarray | None = None  # (B,) act calls since each row's GRU state was zeroed
        self.episode_steps: np.ndarray | None = None  # (B,) act calls since each row's episode started
        self.previous_action: np.ndarray | None = None  # (B, action_dim) the last agent actions

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Policy":
        """Read a file written by :func:`export_policy` (``policy.npz`` of a run directory).

        Raises CheckpointError if ``path`` is not a policy file, saying what to do when it is a
        training checkpoint or a run directory (``python -m memrl export PATH -o policy.npz``).
        """
        path = os.fspath(path)
        if os.path.isdir(path):
            inside = os.path.join(path, "policy.npz")
            hint = f"load {inside!r}, or " if os.path.exists(inside) else ""
            raise CheckpointError(f"policy {path}: a directory, expected a policy file; {hint}export one from the run's "
                                  f"newest checkpoint with: python -m memrl export {path} -o policy.npz")
        params, meta = load_checkpoint(path)
        if not isinstance(meta, dict) or meta.get("kind") != POLICY_KIND:
            if isinstance(meta, dict) and "architecture" in meta and "config" in meta:
                raise CheckpointError(f"policy {path}: a training checkpoint, expected a policy file; export its actor "
                                      f"with: python -m memrl export {path} -o policy.npz")
            found = (repr(meta["kind"]) if "kind" in meta else "no such key") if isinstance(meta, dict) \
                else type(meta).__name__
            raise CheckpointError(f"policy {path}: meta['kind']: expected {POLICY_KIND!r}, found {found}")
        version = meta.get("policy_version")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise CheckpointError(f"policy {path}: policy_version: expected one of {list(READABLE_VERSIONS)}, "
                                  f"found {version!r}")
        try:
            return cls(meta["layers"], params, action_dim=meta["action_dim"], log_std_min=meta["log_std_min"],
                       log_std_max=meta["log_std_max"], memory_reset_interval=meta["memory_reset_interval"],
                       environment=meta.get("environment"), meta=meta.get("user"))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            raise CheckpointError(f"policy {path}: inconsistent contents ({type(error).__name__}: {error})") from error

    @property
    def batch_size(self) -> int | None:
        return None if self.steps_since_reset is None else len(self.steps_since_reset)

    def reset(self, batch_size: int = 1) -> None:
        """Start ``batch_size`` fresh episodes: every GRU state zero, no previous action or reward."""
        check_int("batch_size", batch_size, 1)
        self.state = [np.zeros((batch_size, self.layers[i]["hidden_dim"]), self.dtype) for i in self.recurrent]
        self.steps_since_reset = np.zeros(batch_size, np.int64)
        self.episode_steps = np.zeros(batch_size, np.int64)
        self.previous_action = np.zeros((batch_size, self.action_dim), self.dtype)

    def reset_rows(self, mask) -> None:
        """Start new episodes in the rows where ``mask`` (B,) is true (episodes that ended): their
        GRU states zero, no previous action or reward."""
        mask = np.asarray(mask)
        if self.steps_since_reset is None:
            raise RuntimeError("reset_rows: no batch yet; call reset(batch_size) or act first")
        if mask.dtype != np.bool_ or mask.shape != (self.batch_size,):
            raise ValueError(f"mask: expected a bool array of shape ({self.batch_size},), "
                             f"got {mask.dtype.name} {mask.shape}")
        self._wipe(mask)
        self.episode_steps[mask] = 0

    def _wipe(self, mask) -> None:
        """Zero the GRU states of ``mask``'s rows (an episode start, or the memory reset interval)."""
        for h in self.state:
            h[mask] = 0
        self.steps_since_reset[mask] = 0

    def act(self, observation, noise: np.ndarray | None = None, *, reward=None, normalized: bool = False):
        """Actions for a batch of observations, in the environment's units; advances the GRU states.

        ``observation``: one observation as the environment gives it (e.g. (3,) for Pendulum-v1,
        flat (O,) too for Box spaces, an index for a Discrete space, a tuple for a Tuple space),
        or a batch of them ((B, ...) arrays; a list of tuples). Returns one action shaped as the
        environment's action space (dtype included), or (B, ...) for a batch:

        * continuous agents: the normalised action ``a`` in [-1, 1] mapped to
          ``clip(offset + scale * a, low, high)`` with the recorded bounds, exactly as training
          applied it; deterministic ``tanh(mean)`` unless ``noise`` (standard normal, (A,) or
          (B, A)) is given: then ``tanh(mean + exp(clip(log_std)) * noise)``, as in training;
        * discrete agents: ``start + index`` per component, the index the argmax of its logits,
          or, with ``noise`` (standard normal, (K,) or (B, K)), the inverse-CDF sample at
          ``Phi(noise)``, as training's rollouts sample.

        ``normalized=True`` returns the agent's own action rows instead ((A,) or (B, A), the
        parameters' dtype: ``a`` in [-1, 1], or the category indices); so do files without an
        environment record.

        ``reward``: for a policy trained with the previous reward as an input, the reward the
        environment returned for the previous action (a number, or (B,)); ignored on an
        episode's first step (the input is zero there), required otherwise. The previous action
        input is tracked here (the action this method returned).

        Observations are cast to the parameters' dtype. Without an earlier ``reset(B)``, the first
        call starts B episodes; afterwards the batch size must stay B until ``reset``. Raises
        ValueError for shapes, values outside the observation space, non-finite observations or
        rewards, a missing reward, or noise given to a TD3 policy.
        """
        x, single = self._encode_observations(observation)
        B, A = x.shape[0], self.action_dim
        if self.batch_size is not None and B != self.batch_size:
            raise ValueError(f"observation: expected batch size {self.batch_size} (the current episodes), got {B}; "
                             f"call reset({B}) to start new ones")
        if noise is not None and not self.stochastic:
            raise ValueError("noise: this policy is deterministic (a TD3 actor has no log-std output)")
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float64)
            want = (A,) if single else (B, A)
            if noise.shape != want:
                raise ValueError(f"noise: expected shape {want} (one value per action), got {noise.shape}")
            noise = noise.reshape(B, A)
        if self.batch_size is None:
            self.reset(B)
        if self._history_size:
            x = np.concatenate([x, self._history_inputs(B, reward, single)], axis=1)
        if self.memory_reset_interval is not None:
            self._wipe(self.steps_since_reset >= self.memory_reset_interval)
        out = self._forward(x)
        self.steps_since_reset += 1
        self.episode_steps += 1
        if self.discrete:
            action = _categorical_actions(out, self.action_nvec, noise).astype(self.dtype)
        elif noise is None:
            action = np.tanh(out[:, :A])
        else:
            log_std = np.clip(out[:, A:].astype(np.float64), self.log_std_min, self.log_std_max)
            action = np.tanh(out[:, :A].astype(np.float64) + np.exp(log_std) * noise).astype(self.dtype)
        self.previous_action[...] = action
        if not normalized and self._decoder is not None:
            action = self.environment_action(action)
        return action[0] if single else action

    def _encode_observations(self, observation) -> tuple[np.ndarray, bool]:
        """(x (B, environment_observation_dim) in the parameters' dtype, whether one observation)."""
        O = self.environment_observation_dim
        if self._encoder is not None:
            parts = self._encoder.parts
            if len(parts) == 1 and parts[0]["kind"] == "discrete":
                array = np.asarray(observation)
                single, rows = array.ndim == 0, list(np.asarray(observation).reshape(-1))
            elif len(parts) == 1:
                array, shape = np.asarray(observation), tuple(parts[0]["shape"])
                single = array.shape == shape
                if not single and array.shape[1:] != shape:
                    raise ValueError(f"observation: expected shape {shape} or (B, *{shape}), got {array.shape}")
                rows = [array] if single else list(array)
            else:
                single = isinstance(observation, tuple)
                rows = [observation] if single else list(observation)
            x = np.stack([self._encoder.encode(row) for row in rows]).astype(self.dtype)
            return x, single
        x = np.asarray(observation)
        obs_shape = tuple(self.environment["observation_shape"]) if self.environment else (O,)
        one = (obs_shape, (O,))
        single = x.shape in one
        if single:
            x = x.reshape(1, -1)
        elif x.ndim >= 2 and x.shape[1:] in one:
            x = x.reshape(x.shape[0], -1)
        else:
            shapes = [obs_shape, ("B", *obs_shape)]
            if obs_shape != (O,):
                shapes += [(O,), ("B", O)]
            listed = " or ".join(str(s).replace("'", "") for s in shapes)
            raise ValueError(f"observation: expected shape {listed}, got {np.shape(observation)}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"observation: expected numbers, got dtype {x.dtype}")
        x = x.astype(self.dtype, copy=False)
        if not np.isfinite(x).all():
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise ValueError(f"observation: expected finite values, got {x[bad]} at index {bad}")
        return x, single

    def _history_inputs(self, B: int, reward, single: bool) -> np.ndarray:
        """[encode(previous action), previous reward] (B, history size); zero on first steps."""
        extra = np.zeros((B, self._history_size), self.dtype)
        first = self.episode_steps == 0
        if self.previous_action_input:
            width = self._history_size - int(self.previous_reward_input)
            for b in range(B):  # continuous agents act in [-1, 1], every memrl environment's bounds
                if not first[b]:
                    encode_previous_action(self.previous_action[b], self.action_nvec, -1.0, 1.0, extra[b, :width])
        if self.previous_reward_input:
            if reward is None:
                if not first.all():
                    raise ValueError("reward: expected the reward of the previous action (this policy takes the "
                                     "previous reward as an input), got None")
            else:
                values = np.asarray(reward, np.float64)
                if values.shape not in ((), (B,)) or (single and values.shape != ()):
                    raise ValueError(f"reward: expected a number{'' if single else f' or shape ({B},)'}, "
                                     f"got shape {values.shape}")
                if not np.isfinite(values).all():
                    raise ValueError(f"reward: expected finite values, got {values}")
                extra[:, -1] = np.where(first, 0.0, np.broadcast_to(values, (B,)))
        return extra

    def environment_action(self, action: np.ndarray):
        """The agent's actions (B, A) -> (B, *action_shape) in the environment's units and dtype
        (``memrl.spaces.ActionDecoder``, as memrl's Gymnasium adapter applies it while training:
        ``clip(offset + scale * clip(a, -1, 1), low, high)`` in float64, or ``start + index``).
        Unchanged without an environment record."""
        action = np.asarray(action)
        if self._decoder is None:
            return action
        return np.stack([np.asarray(self._decoder.decode(row)) for row in action])

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """One step through every layer; updates the GRU states in place."""
        k = 0
        for i, layer in enumerate(self.layers):
            p = {name: self.params[f"{i}.{name}"] for name in _parameter_shapes(layer)}
            if layer["type"] == "dense":
                x = ACTIVATIONS[layer["activation"]](x @ p["W"].T + p["b"])
            else:
                h = self.state[k]
                x = gru_step(x, h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"], gates=layer["gates"])
                h[...] = x
                k += 1
        return x


def _categorical_actions(logits: np.ndarray, nvec: list[int], noise: np.ndarray | None) -> np.ndarray:
    """Per component: the first argmax of its logits, or the inverse-CDF sample of its softmax at
    ``Phi(noise)`` (``memrl._core._categorical``'s rule, in float64)."""
    B = logits.shape[0]
    out = np.zeros((B, len(nvec)), np.float64)
    offset = 0
    for k, n in enumerate(nvec):
        z = logits[:, offset:offset + n].astype(np.float64)
        if noise is None:
            out[:, k] = np.argmax(z, axis=1)
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            cum = np.cumsum(e, axis=1)
            u = np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in noise[:, k]]) * cum[:, -1]
            out[:, k] = np.minimum((u[:, None] >= cum).sum(axis=1), n - 1)
        offset += n
    return out


def _discrete_nvec(environment: dict | None) -> list[int] | None:
    space = (environment or {}).get("action_space") if isinstance(environment, dict) else None
    if isinstance(space, dict) and space.get("kind") in ("discrete", "multi_discrete"):
        return [int(n) for n in space["nvec"]]
    return None


def gru_step(x, h, W_ih, W_hh, b_ih, b_hh, *, gates: str = "exact") -> np.ndarray:
    """One GRU step: x (B, I), h (B, H) -> h' (B, H); gate order r, z, n."""
    gate, candidate = GATES[gates]
    H = h.shape[1]
    gx = x @ W_ih.T + b_ih
    gh = h @ W_hh.T + b_hh
    r = gate(gx[:, :H] + gh[:, :H])
    z = gate(gx[:, H:2 * H] + gh[:, H:2 * H])
    n = candidate(gx[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1 - z) * n + z * h


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def _parameter_shapes(layer: dict) -> dict[str, tuple[int, ...]]:
    if layer["type"] == "dense":
        return {"W": (layer["out_dim"], layer["in_dim"]), "b": (layer["out_dim"],)}
    H, I = layer["hidden_dim"], layer["in_dim"]
    return {"W_ih": (3 * H, I), "W_hh": (3 * H, H), "b_ih": (3 * H,), "b_hh": (3 * H,)}


def _out_dim(layer: dict) -> int:
    return layer["out_dim"] if layer["type"] == "dense" else layer["hidden_dim"]


def _check_parameters(layers: list[dict], params: dict[str, np.ndarray]) -> None:
    """Layer configs chain and are known; parameters are exactly those the configs need."""
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"layers: expected a non-empty list of layer configs, got {layers!r}")
    expected = {}
    for i, layer in enumerate(layers):
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind == "dense":
            if layer.get("activation") not in ACTIVATIONS:
                raise ValueError(f"layers[{i}].activation: expected one of {sorted(ACTIVATIONS)}, "
                                 f"got {layer.get('activation')!r}")
        elif kind == "gru":
            if layer.get("gates") not in GATES:
                raise ValueError(f"layers[{i}].gates: expected one of {sorted(GATES)}, got {layer.get('gates')!r}")
        else:
            raise ValueError(f"layers[{i}].type: expected 'dense' or 'gru', got {kind!r}")
        for key, low in (("in_dim", 0), ("out_dim", 1), ("hidden_dim", 1)):
            if key in layer and (type(layer[key]) is not int or layer[key] < low):
                raise ValueError(f"layers[{i}].{key}: expected an integer >= {low}, got {layer[key]!r}")
        if i > 0 and layer["in_dim"] != _out_dim(layers[i - 1]):
            raise ValueError(f"layers[{i}].in_dim: expected {_out_dim(layers[i - 1])} (output of layers[{i - 1}]), "
                             f"got {layer['in_dim']}")
        for name, shape in _parameter_shapes(layer).items():
            expected[f"{i}.{name}"] = shape
    if set(params) != set(expected):
        raise ValueError(f"params: expected names {sorted(expected)}, got {sorted(params)}")
    dtypes = {params[name].dtype for name in expected}
    if len(dtypes) != 1 or next(iter(dtypes)) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"params: expected one dtype, float32 or float64, got {sorted(map(str, dtypes))}")
    for name, shape in expected.items():
        if params[name].shape != shape:
            raise ValueError(f"params[{name!r}]: expected shape {shape}, got {params[name].shape}")
        if not np.isfinite(params[name]).all():
            raise ValueError(f"params[{name!r}]: expected finite values")


def _check_environment(environment, action_dim: int) -> None:
    """An environment record names its action space consistently with the actor."""
    if not isinstance(environment, dict):
        raise ValueError(f"environment: expected a dict, got {type(environment).__name__}")
    space = environment.get("action_space")
    if space is not None:
        if not isinstance(space, dict) or space.get("kind") not in ("box", "discrete", "multi_discrete"):
            raise ValueError(f"environment['action_space']: expected a memrl.spaces action description, got {space!r}")
        decoder = ActionDecoder(space)
        if decoder.action_dim != action_dim:
            raise ValueError(f"environment['action_space']: expected {action_dim} action entries, got {space!r}")
        if decoder.discrete and (len(space["start"]) != action_dim or min(decoder.nvec) < 1):
            raise ValueError(f"environment['action_space']: expected {action_dim} positive category counts and "
                             f"starts, got {space!r}")
        if decoder.discrete:
            return
    for key in ("observation_shape", "action_shape", "action_dtype", "action_low", "action_high"):
        if key not in environment:
            raise ValueError(f"environment[{key!r}]: missing")
    size = int(np.prod(environment["action_shape"]))
    if size != action_dim:
        raise ValueError(f"environment['action_shape']: expected {action_dim} entries, got {environment['action_shape']}")
    for key in ("action_low", "action_high"):
        bound = np.asarray(environment[key], np.float64)
        if bound.shape != (action_dim,) or not np.isfinite(bound).all():
            raise ValueError(f"environment[{key!r}]: expected {action_dim} finite numbers, got {environment[key]!r}")
    np.dtype(environment["action_dtype"])
