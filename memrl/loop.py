"""The training loop: a state you step, RLtools-style, and ``train`` that runs it with loop steps.

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
acting, batches and noise, evaluation, probe, agent), so the same seed gives the same run bit
for bit. ``train`` composes the loop steps of ``memrl.hooks`` (evaluation, checkpoints,
progress, policy export) around ``Trainer.step()`` for a whole run in a run directory
(``memrl.run``).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from memrl.agent import TrainingDiverged, make_agent
from memrl.checkpoint import CheckpointError, save_checkpoint
from memrl.config import Config, preset
from memrl.envs import build_environment, environment_spec
from memrl.evaluation import count_probe, evaluate
from memrl.hooks import Checkpoint, Clock, Evaluate, ExportPolicy, Hook, LoopStep, Report, peak_rss_mb
from memrl.replay import ReplayBuffer, SequenceSampler
from memrl.run import RESUME_CHANGEABLE, RunDirectory, RunDirectoryError, find_checkpoint, resume_config
from memrl.state import restore_training_state, training_state

__all__ = ["Trainer", "TrainResult", "train", "as_config", "RESUME_CHANGEABLE"]


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
        self._env_seeds = env_seq.generate_state(cfg.n_environments)
        self.envs = [build_environment(cfg, int(s)) for s in self._env_seeds]
        env = self.envs[0]
        self.observation_dim, self.action_dim = env.observation_dim, env.action_dim
        self.agent = make_agent(cfg, env, int(agent_seq.generate_state(1)[0]))  # the action space decides the head
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
        self._acting = self.agent.acting(self.observations, self.state, self.memory_reset, self.action_noise,
                                         self.actions)
        critic_batches = [self.samplers[0].batch] * 2 if cfg.shared_batch else [s.batch for s in self.samplers[:2]]
        critic_noise = [self.critic_noise[0]] * 2 if cfg.shared_batch else self.critic_noise
        self.agent.bind(critic_batches, critic_noise, self.samplers[0 if cfg.shared_batch else 2].batch,
                        self.actor_noise)
        self._lr_schedule = any(o.scheduled for o in (cfg.actor_optimizer, cfg.critic_optimizer, cfg.alpha_optimizer))
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
        """One loop step (act, store, train as scheduled); returns True when training is done.
        Raises TrainingDiverged naming the step if a loss, gradient or action is not finite."""
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
            self.agent.random_actions(self._uniform, self.actions)
        else:
            if cfg.memory_reset_interval is not None:
                np.remainder(self.episode_step, cfg.memory_reset_interval, out=self._steps_mod)
                np.equal(self._steps_mod, 0, out=self._wipe)
                np.logical_or(self.memory_reset, self._wipe, out=self.memory_reset, casting="unsafe")
            self.rng_act.standard_normal(out=self.action_noise, dtype=np.float32)
            if not self._acting.run():  # act, in place, and clear memory_reset
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
        if self._lr_schedule:
            agent.set_learning_rates(step)
        if cfg.shared_batch:
            self.samplers[0].sample(rng)
        if train_critic:
            # Each critic gets its own batch and noise (one of each with shared_batch), drawn in this order.
            for i in range(2):
                if not cfg.shared_batch:
                    self.samplers[i].sample(rng)
                if not cfg.shared_batch or i == 0:
                    rng.standard_normal(out=self.critic_noise[i], dtype=np.float32)
            losses = agent.update_critics(update_targets)  # the targets' Polyak step in the same call
            self.metrics.critic_loss += sum(losses)
            self.metrics.critic_updates += 2
        elif update_targets:
            agent.update_targets()
        if train_actor:
            if not cfg.shared_batch:
                self.samplers[2].sample(rng)
            rng.standard_normal(out=self.actor_noise, dtype=np.float32)
            self.metrics.actor_loss += agent.update_actor()
            self.metrics.actor_updates += 1

    def learning_rates(self) -> dict[str, float]:
        """``{"actor_lr" | "critic_lr" | "alpha_lr": rate}`` of the next updates, for each optimizer
        with a learning-rate schedule (``AdamConfig.final_lr``; alpha's only where a temperature is
        learned); empty without schedules. Evaluation records carry them."""
        cfg = self.config
        optimizers = [("actor", cfg.actor_optimizer), ("critic", cfg.critic_optimizer)]
        if cfg.algorithm == "sac" and cfg.adaptive_alpha:
            optimizers.append(("alpha", cfg.alpha_optimizer))
        return {f"{name}_lr": settings.lr_at(self.step_count) for name, settings in optimizers if settings.scheduled}

    # -- environments, checkpoints ---------------------------------------------------------------

    def environment_spec(self) -> dict:
        """The environment as an exported policy needs it (``memrl.envs.environment_spec``)."""
        return environment_spec(self.config, self.envs[0])

    def restart_episodes(self) -> None:
        """End every open episode as truncated (its transitions stay in the replay) and start a
        new one in each environment from a seed derived from its original one and the step
        (after restoring a checkpoint that could not hold the environments)."""
        for i, env in enumerate(self.envs):
            if self.episode_step[i] > 0:
                self.buffer.mark_episode_end(i)
            seed = int(np.random.SeedSequence([int(self._env_seeds[i]), self.step_count]).generate_state(1)[0])
            obs, _ = env.reset(seed=seed)
            self.observations[i] = obs
            self.episode_step[i] = 0
            self.episode_return[i] = 0.0
            self.memory_reset[i] = 1

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """Everything needed to continue bit for bit: (arrays, JSON meta) (``memrl.state``)."""
        return training_state(self)

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Restore ``state_dict()`` output into this trainer, in place (``memrl.state``)."""
        restore_training_state(self, arrays, meta)

    def save(self, path: str) -> None:
        """Write the whole training state to ``path`` atomically (no pickle)."""
        save_checkpoint(path, *training_state(self))

    @classmethod
    def load(cls, source: str, config: Config | None = None) -> "Trainer":
        """A trainer continuing from a checkpoint: the file ``source``, or the newest loadable
        checkpoint of the run directory ``source`` (its own configuration unless ``config``).
        Raises CheckpointError for a file that is not a loadable training checkpoint, and
        RunDirectoryError for a missing path or a run directory without one."""
        path, arrays, meta = find_checkpoint(source)
        with _inconsistent_contents(path):
            trainer = cls(config if config is not None else Config.from_dict(meta["config"]), int(meta["seed"]))
            restore_training_state(trainer, arrays, meta)
        return trainer

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self, n_episodes: int | None = None, rng: np.random.Generator | None = None) -> dict:
        """Deterministic-policy evaluation (``memrl.evaluation.evaluate``), and the count probe on
        the memory task.

        ``n_episodes`` defaults to ``config.n_evaluation_episodes``. Without ``rng`` the episodes'
        seeds (and the probe's inputs) come from the run's own evaluation streams, which advance,
        as the training loop's evaluations do; with ``rng`` they come from it alone, and the run's
        streams are untouched. Raises ValueError for ``n_episodes`` < 1."""
        cfg = self.config
        if n_episodes is None:
            n_episodes = cfg.n_evaluation_episodes
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
            raise ValueError(f"n_episodes: expected a positive integer, got {n_episodes!r}")
        result = evaluate(self.agent, lambda seed: build_environment(cfg, seed), int(n_episodes),
                          self.rng_eval if rng is None else rng, memory_reset_interval=cfg.memory_reset_interval)
        if cfg.environment == "memory" and cfg.n_probes > 0:
            probe = count_probe(self.agent, self.envs[0], cfg.n_probes, self.rng_probe if rng is None else rng,
                                cfg.probe_sequence_length or cfg.sequence_length)
            result.update(probe_correct=probe["correct"], probe_total=probe["total"], probe_lines=probe["lines"])
        return result


@dataclass
class TrainResult:
    trainer: Trainer
    evaluations: list
    elapsed_s: float


def train(config: Config | str | None = None, seed: int | None = None, *, log_dir: str | None = None,
          resume: bool = False, overwrite: bool = False, print_fn: Callable[[str], None] | None = print,
          hooks: Sequence[Hook] = (), evaluate_at_end: bool = True,
          progress: Callable[[Trainer, float, "dict | None"], None] | None = None,
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
    run = RunDirectory(log_dir) if log_dir is not None else None
    records: list[dict] = []
    saved_clock = None
    if resume:
        trainer, saved_clock = _resumed_trainer(run, config, seed)
        seed = trainer.seed
        records = [r for r in run.read_metrics() if r["step"] < trainer.step_count]
    else:
        if config is None:
            raise ValueError("config: expected a Config or a preset name (or resume=True with log_dir)")
        seed = 0 if seed is None else seed
        trainer = Trainer(config, seed)  # before touching the directory: a bad setting leaves nothing behind
        if run is not None:
            run.prepare_new(overwrite)
    config = trainer.config
    if saved_clock is not None:  # the wall and evaluation seconds when the checkpoint was written
        clock = Clock(*saved_clock)
    elif records:  # a checkpoint written before memrl saved the clock: as of the last evaluation kept
        clock = Clock(records[-1]["elapsed_s"],
                      records[-1]["elapsed_s"] - records[-1].get("train_elapsed_s", records[-1]["elapsed_s"]))
    else:
        clock = Clock()
    metrics_file = None
    if run is not None:
        run.write_config(seed, config.to_dict())
        metrics_file = open(run.metrics_path, "w")
    try:
        evaluations = Evaluate(config.evaluation_interval, clock, records=records, metrics_file=metrics_file,
                               hooks=hooks, print_fn=print_fn)
        steps: list[LoopStep] = [evaluations]
        if run is not None and config.checkpoint_interval is not None:
            steps.append(Checkpoint(run.checkpoints(config.keep_checkpoints), config.checkpoint_interval, clock))
        if progress is not None:
            steps.append(Report(progress, progress_interval, clock, evaluations))
        if run is not None:
            steps.append(ExportPolicy(run.policy_path, seed))
        first_step, first_seconds = trainer.step_count, clock.training()
        while not trainer.done:
            for step in steps:
                step.before_step(trainer)
            trainer.step()
            for step in steps:
                step.after_step(trainer)
        for step in steps:
            if evaluate_at_end or step is not evaluations:
                step.finish(trainer)
    finally:
        if metrics_file is not None:
            metrics_file.close()
    if print_fn is not None:
        rate = (trainer.step_count - first_step) / max(clock.training() - first_seconds, 1e-9)
        print_fn(f"Total time: {clock.elapsed():.1f} s ({rate:.0f} steps/s training), "
                 f"peak memory {peak_rss_mb():.1f} MB")
    return TrainResult(trainer, evaluations.records, clock.elapsed())


def _resumed_trainer(run: RunDirectory | None, config, seed) -> tuple[Trainer, tuple[float, float] | None]:
    """The trainer of ``run``'s newest loadable checkpoint, with ``config``'s changeable settings,
    and the run's (wall, evaluation) seconds saved with it (None in checkpoints that predate them)."""
    if run is None:
        raise ValueError("resume: needs log_dir (the run directory to continue)")
    path, arrays, meta = run.latest_checkpoint()
    with _inconsistent_contents(path):
        saved, saved_seed, step = Config.from_dict(meta["config"]), int(meta["seed"]), int(meta["step_count"])
    if seed is not None and seed != saved_seed:
        raise RunDirectoryError(f"seed: the run in {run.path!r} has seed {saved_seed}, got {seed}")
    trainer = Trainer(saved if config is None else resume_config(saved, as_config(config), step), saved_seed)
    with _inconsistent_contents(path):
        restore_training_state(trainer, arrays, meta)
        clock = meta.get("clock")
        clock = None if clock is None else (float(clock["elapsed_s"]), float(clock["evaluating_s"]))
    return trainer, clock


@contextlib.contextmanager
def _inconsistent_contents(path: str):
    """A checkpoint whose (checksummed) contents do not make a training state raises
    CheckpointError naming the file, whatever went wrong reading it."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: inconsistent contents ({type(error).__name__}: {error})") \
            from error
