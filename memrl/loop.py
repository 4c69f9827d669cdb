"""The training loop: a state you step, RLtools-style, and ``train`` that runs it with hooks.

``Trainer(config, seed)`` builds environments, replay, samplers and the agent; every call of
``step()`` does one loop step and returns True once ``config.total_steps`` are done:

1. act in every environment (uniform random actions before ``n_warmup_steps``, then the
   stochastic actor with its GRU state carried through the episode) and store the transitions;
   at step ``n_warmup_steps`` every episode is ended so the actor starts on fresh episodes;
2. from ``n_warmup_steps_critic``, every ``critic_training_interval`` steps: each critic trains on
   its own fresh batch and noise (one shared batch with ``shared_batch``);
3. from ``n_warmup_steps_critic``, every ``critic_target_update_interval`` steps: Polyak targets;
4. from ``n_warmup_steps_actor``, every ``actor_training_interval`` steps: actor and alpha.

Randomness comes from NumPy generators spawned from the seed, one per purpose (environments,
acting, batches and noise, evaluation), so the same seed gives the same run bit for bit.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import resource
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from memrl import __version__
from memrl._core._sac import all_finite
from memrl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from memrl.config import Config, preset
from memrl.evaluation import count_probe, evaluate
from memrl.replay import ReplayBuffer, SequenceSampler
from memrl.run import RunDirectory, RunDirectoryError
from memrl.envs.gym import make_env
from memrl.sac import SAC, TrainingDiverged
from memrl.td3 import TD3


@dataclass
class Metrics:
    """Running sums since the last report."""

    critic_loss: float = 0.0
    critic_updates: int = 0
    actor_loss: float = 0.0
    actor_updates: int = 0
    episode_returns: list = field(default_factory=list)

    def take(self) -> dict:
        out = {"critic_loss": self.critic_loss / self.critic_updates if self.critic_updates else None,
               "actor_loss": self.actor_loss / self.actor_updates if self.actor_updates else None,
               "train_episode_return": float(np.mean(self.episode_returns)) if self.episode_returns else None}
        self.__init__()
        return out


def build_environment(config: Config, seed: int):
    """``config``'s environment, seeded. A mistake in the environment's name or keywords raises a
    one-line ValueError naming it (Gymnasium's own errors and a keyword the environment does not
    take included); a missing optional dependency raises ImportError."""
    try:
        return make_env(config.environment, **config.environment_kwargs, seed=seed)
    except TypeError as exc:
        match = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if match is None:
            raise
        accepted = _accepted_keywords(config.environment)
        hint = f" (accepted: {', '.join(accepted)})" if accepted else ""
        raise ValueError(f"environment_kwargs: {config.environment!r} takes no keyword {match.group(1)!r}{hint}") \
            from None
    except ImportError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("gymnasium"):
            raise
        raise ValueError(f"environment: {config.environment!r}: {exc}") from None


def _accepted_keywords(name: str) -> list[str]:
    from memrl.envs import ENVIRONMENTS

    factory = ENVIRONMENTS.get(name)
    if factory is None:
        return []
    return [p for p in inspect.signature(factory).parameters if p != "seed"]


def as_config(config: Config | str) -> Config:
    """A Config from a Config or a preset name (``"memory-chapter"``); TypeError otherwise."""
    if isinstance(config, str):
        return preset(config)
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a memrl.config.Config or a preset name, got {type(config).__name__}")
    return config


class Trainer:
    """Training state for one run: create from a config (or preset name) and seed, then ``step()``
    until done."""

    def __init__(self, config: Config | str, seed: int = 0):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
        self.config = cfg = as_config(config).validate()
        self.seed = int(seed)
        seq = np.random.SeedSequence(self.seed)
        env_seq, act_seq, train_seq, eval_seq, probe_seq, agent_seq = seq.spawn(6)
        env_seeds = env_seq.generate_state(cfg.n_environments)
        self.envs = [build_environment(cfg, int(s)) for s in env_seeds]
        env = self.envs[0]
        self.observation_dim, self.action_dim = env.observation_dim, env.action_dim
        agent_class = SAC if cfg.algorithm == "sac" else TD3
        self.agent = agent_class(cfg, self.observation_dim, self.action_dim, int(agent_seq.generate_state(1)[0]))
        self.fused = cfg.fused
        self.buffer = ReplayBuffer(cfg.capacity, self.observation_dim, self.action_dim,
                                   n_streams=cfg.n_environments, max_episode_length=env.episode_step_limit)
        n_samplers = 1 if cfg.shared_batch else 3
        self.samplers = [SequenceSampler(self.buffer, cfg.sequence_length, cfg.batch_size, cfg.sampling)
                         for _ in range(n_samplers)]
        self.rng_act = np.random.Generator(np.random.PCG64(act_seq))
        self.rng_train = np.random.Generator(np.random.PCG64(train_seq))
        self.rng_eval = np.random.Generator(np.random.PCG64(eval_seq))
        self.rng_probe = np.random.Generator(np.random.PCG64(probe_seq))
        N, O, A = cfg.n_environments, self.observation_dim, self.action_dim
        self.observations = np.zeros((N, O), np.float32)
        self.actions = np.zeros((N, A), np.float32)
        self.action_noise = np.zeros((N, A), np.float32)
        self.state = self.agent.actor.initial_state(N)
        self.memory_reset = np.ones(N, np.uint8)
        self._uniform = np.zeros((N, A))        # scratch: warm-up actions
        self._steps_mod = np.zeros(N, np.int64)  # scratch: episode step modulo the memory wipe
        self._wipe = np.zeros(N, bool)
        self.episode_step = np.zeros(N, np.int64)
        self.episode_return = np.zeros(N, np.float64)
        batch = self.samplers[0].batch
        self.critic_noise = [np.zeros(self.agent.noise_shape(batch, target=True), np.float32) for _ in range(2)]
        self.actor_noise = np.zeros(self.agent.noise_shape(batch, target=False), np.float32)
        self._acting = None
        if self.fused:
            self._acting = self.agent.acting(self.observations, self.state, self.memory_reset, self.action_noise,
                                             self.actions)
            critic_batches = [self.samplers[0].batch] * 2 if cfg.shared_batch else [s.batch for s in self.samplers[:2]]
            critic_noise = [self.critic_noise[0]] * 2 if cfg.shared_batch else self.critic_noise
            self.agent.fuse(critic_batches, critic_noise, self.samplers[0 if cfg.shared_batch else 2].batch,
                            self.actor_noise, threads=cfg.threads)
        self.step_count = 0
        self.metrics = Metrics()
        for i, e in enumerate(self.envs):
            obs, _ = e.reset()
            self.observations[i] = obs

    # -- one loop step ---------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.step_count >= self.config.total_steps

    def step(self) -> bool:
        """One loop step (act, store, train as scheduled); returns True when training is done."""
        if self.done:
            return True
        cfg, step = self.config, self.step_count
        if step == cfg.n_warmup_steps and step > 0:
            self._end_all_episodes()
        try:
            self._collect(random_actions=step < cfg.n_warmup_steps)
            self._train(step)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"step {step}: {exc}") from None
        self.step_count += 1
        return self.done

    def _collect(self, random_actions: bool) -> None:
        cfg = self.config
        if random_actions:
            self.rng_act.random(out=self._uniform)
            np.multiply(self._uniform, 2.0, out=self._uniform)
            np.subtract(self._uniform, 1.0, out=self.actions, casting="same_kind")
        else:
            if cfg.memory_reset_interval is not None:
                np.remainder(self.episode_step, cfg.memory_reset_interval, out=self._steps_mod)
                np.equal(self._steps_mod, 0, out=self._wipe)
                np.logical_or(self.memory_reset, self._wipe, out=self.memory_reset, casting="unsafe")
            self.rng_act.standard_normal(out=self.action_noise, dtype=np.float32)
            if self._acting is not None:
                finite = self._acting.run()  # act, in place, and clear memory_reset
            else:
                self.actions[...] = self.agent.act(self.observations, self.state, self.memory_reset, self.action_noise)
                self.memory_reset[:] = 0
                finite = all_finite(self.actions.reshape(-1))
            if not finite:
                raise TrainingDiverged("actor: non-finite actions while collecting")
        for i, env in enumerate(self.envs):
            obs = self.observations[i]
            next_obs, reward, terminated, truncated, _ = env.step(self.actions[i])
            self.episode_step[i] += 1
            self.episode_return[i] += reward
            end = terminated or truncated
            self.buffer.add(i, obs, self.actions[i], reward, next_obs, terminated, end)
            if end:
                self._new_episode(i)
            else:
                self.observations[i] = next_obs

    def _new_episode(self, i: int) -> None:
        self.metrics.episode_returns.append(float(self.episode_return[i]))
        obs, _ = self.envs[i].reset()
        self.observations[i] = obs
        self.episode_step[i] = 0
        self.episode_return[i] = 0.0
        self.memory_reset[i] = 1

    def _end_all_episodes(self) -> None:
        """RLtools ends every episode when the actor takes over from the random policy."""
        for i in range(len(self.envs)):
            if self.episode_step[i] > 0:
                self.buffer.mark_episode_end(i)
                self._new_episode(i)

    def _train(self, step: int) -> None:
        cfg, agent, rng = self.config, self.agent, self.rng_train
        train_critic = step >= cfg.n_warmup_steps_critic and step % cfg.critic_training_interval == 0
        update_targets = step >= cfg.n_warmup_steps_critic and step % cfg.critic_target_update_interval == 0
        train_actor = step >= cfg.n_warmup_steps_actor and step % cfg.actor_training_interval == 0
        if not (train_critic or train_actor):
            if update_targets:
                agent.update_targets()
            return
        shared = self.samplers[0].sample(rng) if cfg.shared_batch else None
        if train_critic:
            # Each critic gets its own batch and noise (one of each with shared_batch), drawn in
            # the same order whichever update path runs.
            batches, noises = [], []
            for i in range(2):
                batches.append(shared if shared is not None else self.samplers[i].sample(rng))
                noises.append(self.critic_noise[0 if shared is not None else i])
                if shared is None or i == 0:
                    rng.standard_normal(out=noises[i], dtype=np.float32)
            if self.fused:  # the targets' Polyak step runs inside the same compiled call
                losses = agent.update_critics_fused(update_targets)
            else:
                losses = [agent.update_critic(i, batches[i], noises[i]) for i in range(2)]
            self.metrics.critic_loss += sum(losses)
            self.metrics.critic_updates += 2
        if update_targets and not (train_critic and self.fused):
            agent.update_targets()
        if train_actor:
            batch = shared if shared is not None else self.samplers[2].sample(rng)
            rng.standard_normal(out=self.actor_noise, dtype=np.float32)
            if self.fused:
                self.metrics.actor_loss += agent.update_actor_fused()
            else:
                self.metrics.actor_loss += agent.update_actor(batch, self.actor_noise)
            self.metrics.actor_updates += 1

    # -- whole-state checkpoints ---------------------------------------------------------------

    def architecture(self) -> dict:
        """What a checkpoint must match to be loaded into this trainer."""
        return {"algorithm": self.config.algorithm,
                "networks": {name: net.config() for name, net in self.agent.networks().items()},
                "observation_dim": self.observation_dim, "action_dim": self.action_dim,
                "n_environments": len(self.envs)}

    def environment_spec(self) -> dict:
        """The environment as an exported policy needs it: name, keywords, observation shape and
        the action space in the environment's own units (memrl acts in [-1, 1] and rescales)."""
        return environment_spec(self.config, self.envs[0])

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to continue bit for bit: (arrays, JSON-serialisable meta)."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict = {"memrl_version": __version__, "seed": self.seed, "config": self.config.to_dict(),
                      "architecture": self.architecture(), "step_count": self.step_count}
        for name, net in self.agent.networks().items():
            for part in ("params", "adam_m", "adam_v"):
                arrays[f"{name}/{part}"] = getattr(net, part)
            meta[f"{name}/adam_t"] = net.adam_t
        la = getattr(self.agent, "log_alpha", None)
        if la is not None:
            for part in ("params", "adam_m", "adam_v"):
                arrays[f"log_alpha/{part}"] = getattr(la, part)
            meta["log_alpha/adam_t"] = la.adam_t
        meta["environment_spec"] = self.environment_spec()
        _split_tree("replay", self.buffer.state_dict(), arrays, meta)
        try:
            env_states = [env.state_dict() for env in self.envs]
        except NotImplementedError:  # e.g. Gymnasium: recreated and reset on load instead
            env_states = None
        meta["environments_checkpointed"] = env_states is not None
        for i, state in enumerate(env_states or ()):
            _split_tree(f"env{i}", state, arrays, meta)
        for name in ("rng_act", "rng_train", "rng_eval", "rng_probe"):
            meta[name] = getattr(self, name).bit_generator.state
        for name in ("observations", "actions", "memory_reset", "episode_step", "episode_return"):
            arrays[f"rollout/{name}"] = getattr(self, name)
        for k, h in enumerate(self.state):
            arrays[f"rollout/state{k}"] = h
        meta["metrics"] = dict(self.metrics.__dict__)
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore ``state_dict()`` output into this trainer's existing buffers (in place)."""
        difference = _first_difference(_jsonable(self.architecture()), meta.get("architecture"), "architecture")
        if difference:
            raise CheckpointError(f"checkpoint: architecture does not match this configuration: {difference}")
        for name, net in self.agent.networks().items():
            for part in ("params", "adam_m", "adam_v"):
                _copy_into(getattr(net, part), arrays[f"{name}/{part}"], f"{name}/{part}")
            net.adam_t = int(meta[f"{name}/adam_t"])
        la = getattr(self.agent, "log_alpha", None)
        if la is not None:
            for part in ("params", "adam_m", "adam_v"):
                _copy_into(getattr(la, part), arrays[f"log_alpha/{part}"], f"log_alpha/{part}")
            la.adam_t = int(meta["log_alpha/adam_t"])
        try:
            self.buffer.load_state_dict(_join_tree("replay", arrays, meta))
        except ValueError as exc:
            raise CheckpointError(f"checkpoint: replay buffer: {exc}") from None
        if meta.get("environments_checkpointed", True):
            for i, env in enumerate(self.envs):
                env.load_state_dict(_join_tree(f"env{i}", arrays, meta))
        for name in ("rng_act", "rng_train", "rng_eval", "rng_probe"):
            getattr(self, name).bit_generator.state = meta[name]
        for name in ("observations", "actions", "memory_reset", "episode_step", "episode_return"):
            _copy_into(getattr(self, name), arrays[f"rollout/{name}"], f"rollout/{name}")
        for k, h in enumerate(self.state):
            _copy_into(h, arrays[f"rollout/state{k}"], f"rollout/state{k}")
        self.metrics.__dict__.update(meta["metrics"])
        self.step_count = int(meta["step_count"])
        if not meta.get("environments_checkpointed", True):
            self._restart_episodes()

    def _restart_episodes(self) -> None:
        """After loading a checkpoint without environment states: every open episode ends as
        truncated (its transitions stay in the replay) and each environment, recreated, starts a new
        episode from a seed derived from its original one and the step (so a resume is repeatable)."""
        env_seeds = np.random.SeedSequence(self.seed).spawn(6)[0].generate_state(len(self.envs))
        for i, env in enumerate(self.envs):
            if self.episode_step[i] > 0:
                self.buffer.mark_episode_end(i)
            seed = int(np.random.SeedSequence([int(env_seeds[i]), self.step_count]).generate_state(1)[0])
            obs, _ = env.reset(seed=seed)
            self.observations[i] = obs
            self.episode_step[i] = 0
            self.episode_return[i] = 0.0
            self.memory_reset[i] = 1

    def save(self, path: str) -> None:
        """Write the whole training state to ``path`` atomically (no pickle)."""
        arrays, meta = self.state_dict()
        save_checkpoint(path, arrays, meta)

    @classmethod
    def load(cls, path: str, config: Config | None = None) -> "Trainer":
        """A trainer continuing from a checkpoint (its own configuration unless ``config``)."""
        arrays, meta = load_checkpoint(path)
        if "config" not in meta or "seed" not in meta:
            raise CheckpointError(f"{path}: not a training checkpoint (no config or seed)")
        try:
            config = config if config is not None else Config.from_dict(meta["config"])
            trainer = cls(config, int(meta["seed"]))
            trainer.load_state_dict(arrays, meta)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path}: inconsistent contents ({type(error).__name__}: {error})") \
                from error
        return trainer

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        """Deterministic-policy evaluation (and the count probe on the memory task)."""
        cfg = self.config
        result = evaluate(self.agent, lambda seed: build_environment(cfg, seed),
                          cfg.n_evaluation_episodes, self.rng_eval, memory_reset_interval=cfg.memory_reset_interval)
        if cfg.environment == "memory" and cfg.n_probes > 0:
            probe = count_probe(self.agent, self.envs[0], cfg.n_probes, self.rng_probe,
                                cfg.probe_sequence_length or cfg.sequence_length)
            result.update(probe_correct=probe["correct"], probe_total=probe["total"], probe_lines=probe["lines"])
        return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kilobytes)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _jsonable(value):
    """``value`` as it comes back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def _first_difference(expected, found, path: str) -> str | None:
    """A short description of the first place two JSON trees differ, or None."""
    if isinstance(expected, dict) and isinstance(found, dict):
        for key in sorted(set(expected) | set(found)):
            if key not in found or key not in expected:
                return f"{path}.{key}: expected {expected.get(key)!r}, found {found.get(key)!r}"
            diff = _first_difference(expected[key], found[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(expected, list) and isinstance(found, list) and len(expected) == len(found):
        for i, (e, f) in enumerate(zip(expected, found)):
            diff = _first_difference(e, f, f"{path}[{i}]")
            if diff:
                return diff
        return None
    return None if expected == found else f"{path}: expected {expected!r}, found {found!r}"


def _split_tree(prefix: str, tree: dict, arrays: dict, meta: dict) -> None:
    """Arrays of a state dict go to ``arrays``, everything else to ``meta``, under ``prefix/``."""
    for key, value in tree.items():
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}/{key}"] = value
        else:
            meta[f"{prefix}/{key}"] = value.item() if isinstance(value, np.generic) else value


def _join_tree(prefix: str, arrays: dict, meta: dict) -> dict:
    head = prefix + "/"
    tree = {k[len(head):]: v for k, v in meta.items() if k.startswith(head)}
    tree.update({k[len(head):]: v for k, v in arrays.items() if k.startswith(head)})
    return tree


def _copy_into(target: np.ndarray, source: np.ndarray, name: str) -> None:
    if source.shape != target.shape or source.dtype != target.dtype:
        raise CheckpointError(f"checkpoint array {name!r}: expected {target.dtype} {target.shape}, "
                              f"found {source.dtype} {source.shape}")
    target[...] = source


Hook = Callable[[Trainer, dict], None]
Progress = Callable[[Trainer, float, "dict | None"], None]

RESUME_CHANGEABLE = ("total_steps", "threads", "evaluation_interval", "n_evaluation_episodes", "n_probes",
                     "probe_sequence_length", "checkpoint_interval", "keep_checkpoints")
"""Fields a resumed run may change: its length, its thread count, and what it evaluates and saves
(evaluations and probes draw from their own random streams, so training is unaffected)."""


def resume_config(saved: Config, requested: Config, step: int) -> Config:
    """The configuration a run resumed at ``step`` continues with: ``saved``, with the fields of
    ``RESUME_CHANGEABLE`` taken from ``requested``. Any other difference raises RunDirectoryError
    naming the field (a resumed run must go on computing what it computed)."""
    theirs, mine = _jsonable(saved.to_dict()), _jsonable(requested.to_dict())
    for key in theirs:
        if key in RESUME_CHANGEABLE:
            continue
        difference = _first_difference(theirs[key], mine.get(key), key)
        if difference:
            difference = difference.replace(": expected ", ": the run has ", 1).replace(", found ", ", requested ", 1)
            raise RunDirectoryError(f"--resume: cannot change {difference}"
                                    f" (only {', '.join(RESUME_CHANGEABLE)} can change; start a new run directory "
                                    f"for anything else)")
    if requested.total_steps < step:
        raise RunDirectoryError(f"total_steps: the run is already at step {step}, got {requested.total_steps}")
    return saved.replace(**{key: getattr(requested, key) for key in RESUME_CHANGEABLE}).validate()


def environment_spec(config: Config, env) -> dict:
    """What an exported policy records of its environment: ``name`` and ``kwargs`` (as in the
    config), ``observation_shape``, and the action space in the environment's units
    (``action_shape``, ``action_dtype``, ``action_low``, ``action_high``, flattened). memrl's agents
    act in [-1, 1]; an action ``a`` means ``clip(offset + scale * clip(a, -1, 1), low, high)`` with
    ``offset = (high + low) / 2`` and ``scale = (high - low) / 2`` (the Gymnasium adapter's map)."""
    spec = {"name": config.environment, "kwargs": _jsonable(config.environment_kwargs)}
    gym_env = getattr(env, "env", None)  # memrl.envs.gym.GymnasiumEnv wraps a gymnasium.Env
    if gym_env is not None and hasattr(gym_env, "action_space"):
        space = gym_env.action_space
        spec.update(observation_shape=list(gym_env.observation_space.shape), action_shape=list(space.shape),
                    action_dtype=np.dtype(space.dtype).name,
                    action_low=np.asarray(space.low, np.float64).reshape(-1).tolist(),
                    action_high=np.asarray(space.high, np.float64).reshape(-1).tolist())
    else:
        spec.update(observation_shape=[int(env.observation_dim)], action_shape=[int(env.action_dim)],
                    action_dtype="float32",
                    action_low=np.asarray(env.action_low, np.float64).reshape(-1).tolist(),
                    action_high=np.asarray(env.action_high, np.float64).reshape(-1).tolist())
    return spec


@dataclass
class TrainResult:
    trainer: Trainer
    evaluations: list
    elapsed_s: float


def train(config: Config | str | None = None, seed: int | None = None, *, log_dir: str | None = None,
          resume: bool = False, overwrite: bool = False, print_fn: Callable[[str], None] | None = print,
          hooks: Sequence[Hook] = (), evaluate_at_end: bool = True, progress: Progress | None = None,
          progress_interval: int = 1000) -> TrainResult:
    """Run a whole training with evaluations every ``config.evaluation_interval`` steps.

    ``config``: a Config or a preset name; ``seed`` (default 0): the run's seed. Evaluations happen
    before the training of steps 0, interval, 2 interval, ... and once more after the last step.
    Each prints the chapter's lines, is appended to ``log_dir/metrics.jsonl`` (flushed at once)
    and passed to every hook ``hook(trainer, record)``.

    With ``log_dir``, the directory becomes a run directory (:mod:`memrl.run`): ``config.json``,
    ``metrics.jsonl``, ``checkpoints/`` (the whole training state every
    ``config.checkpoint_interval`` steps and at the last step, unless the interval is None) and,
    at the end, ``policy.npz``. A directory that already holds a run is refused unless
    ``overwrite`` (clears it) or ``resume``.

    ``resume=True`` continues the run in ``log_dir`` from its newest loadable checkpoint, bit for
    bit (environments that cannot be saved, such as Gymnasium's, are recreated and their
    interrupted episodes end as truncated). ``config`` may then be None (the saved one) or a
    configuration differing from the saved one only in ``RESUME_CHANGEABLE`` fields (a longer
    ``total_steps`` extends a finished run exactly as a longer run would have gone); ``seed``
    must be None or the saved seed. Raises RunDirectoryError (a ValueError) otherwise.

    ``progress(trainer, training_seconds, last_record)`` is called every ``progress_interval``
    steps and at the end (``training_seconds`` excludes evaluations).
    """
    from memrl.policy import export_policy

    run = RunDirectory(log_dir) if log_dir is not None else None
    kept_records: list[dict] = []
    if resume:
        if run is None:
            raise ValueError("resume: needs log_dir (the run directory to continue)")
        path, arrays, meta = run.latest_checkpoint()
        try:
            saved, saved_seed, step = Config.from_dict(meta["config"]), int(meta["seed"]), int(meta["step_count"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path}: inconsistent contents ({type(error).__name__}: {error})") \
                from error
        if seed is not None and seed != saved_seed:
            raise RunDirectoryError(f"seed: the run in {log_dir!r} has seed {saved_seed}, got {seed}")
        config = saved if config is None else resume_config(saved, as_config(config), step)
        seed = saved_seed
        trainer = Trainer(config, seed)
        try:
            trainer.load_state_dict(arrays, meta)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {path}: inconsistent contents ({type(error).__name__}: {error})") \
                from error
        kept_records = [r for r in run.read_metrics() if r["step"] < trainer.step_count]
    else:
        if config is None:
            raise ValueError("config: expected a Config or a preset name (or resume=True with log_dir)")
        seed = 0 if seed is None else seed
        trainer = Trainer(config, seed)  # before touching the directory: a bad setting leaves nothing behind
        if run is not None:
            run.prepare_new(overwrite)
    config = trainer.config
    manager = None
    if run is not None:
        if config.checkpoint_interval is not None:
            manager = run.checkpoints(config.keep_checkpoints)
        run.write_config(seed, config.to_dict())
    metrics_file = None
    if run is not None:
        metrics_file = open(run.metrics_path, "w")
        for record in kept_records:
            metrics_file.write(json.dumps(record) + "\n")
        metrics_file.flush()
    evaluations = list(kept_records)
    time_offset = kept_records[-1]["elapsed_s"] if kept_records else 0.0
    eval_offset = time_offset - kept_records[-1].get("train_elapsed_s", time_offset) if kept_records else 0.0
    start = time.perf_counter() - time_offset
    eval_time = eval_offset

    def run_evaluation():
        nonlocal eval_time
        t0 = time.perf_counter()
        result = trainer.evaluate()
        eval_time += time.perf_counter() - t0
        record = {"step": trainer.step_count, "elapsed_s": round(time.perf_counter() - start, 3),
                  "train_elapsed_s": round(time.perf_counter() - start - eval_time, 3),
                  "mean_return": result["mean_return"], "std_return": result["std_return"],
                  "mean_length": result["mean_length"], "std_length": result["std_length"],
                  "alpha": trainer.agent.alpha, "peak_rss_mb": peak_rss_mb(), **trainer.metrics.take()}
        lines = result.pop("probe_lines", None)
        if "probe_correct" in result:
            record.update(probe_correct=result["probe_correct"], probe_total=result["probe_total"])
        if print_fn is not None:
            for line in lines or ():
                print_fn(line)
            print_fn(f"Step: {trainer.step_count}/{config.total_steps} Mean return: {record['mean_return']:.6g} "
                     f"Mean episode length: {record['mean_length']:.6g}")
        evaluations.append(record)
        if metrics_file is not None:
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
        for hook in hooks:
            hook(trainer, record)

    def training_seconds():
        return time.perf_counter() - start - eval_time

    first_step, first_seconds = trainer.step_count, training_seconds()

    try:
        while not trainer.done:
            if trainer.step_count % config.evaluation_interval == 0:
                run_evaluation()
            trainer.step()
            # The last step's checkpoint comes before the final evaluation, like every other
            # checkpoint (saved after step s - 1, before the evaluation of step s), so extending a
            # finished run repeats that evaluation exactly where a longer run would make it.
            if manager is not None and (trainer.step_count % config.checkpoint_interval == 0 or trainer.done):
                manager.save(trainer.step_count, *trainer.state_dict())
            if progress is not None and trainer.step_count % progress_interval == 0:
                progress(trainer, training_seconds(), evaluations[-1] if evaluations else None)
        if evaluate_at_end and not (evaluations and evaluations[-1]["step"] == trainer.step_count):
            run_evaluation()
        if run is not None:
            export_policy(run.policy_path, trainer.agent.actor, action_dim=trainer.action_dim,
                          log_std_min=config.log_std_min, log_std_max=config.log_std_max,
                          memory_reset_interval=config.memory_reset_interval,
                          environment=trainer.environment_spec(),
                          meta={"step": trainer.step_count, "seed": seed, "algorithm": config.algorithm})
    finally:
        if metrics_file is not None:
            metrics_file.close()
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress(trainer, training_seconds(), evaluations[-1] if evaluations else None)
    if print_fn is not None:
        rate = (trainer.step_count - first_step) / max(training_seconds() - first_seconds, 1e-9)
        print_fn(f"Total time: {elapsed:.1f} s ({rate:.0f} steps/s training), peak memory {peak_rss_mb():.1f} MB")
    return TrainResult(trainer, evaluations, elapsed)
