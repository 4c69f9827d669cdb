"""What SAC and TD3 share: networks, target critics, and the compiled updates bound to a run's buffers.

An agent owns an actor, twin critics and their Polyak-averaged targets (``memrl.nn.Sequential``:
flat parameter, gradient and Adam buffers). ``bind`` builds its updates once over the trainer's
reused arrays: each critic update gets a window (``memrl.replay.SequenceBatch``) and noise of its
own, the actor update one more; afterwards ``update_critics`` and ``update_actor`` run them
(``memrl._core._update``, the one implementation, documented there with its formulas). Acting is
compiled too (``acting`` for the rollout's bound arrays, ``act`` for evaluation).

The subclasses (``memrl.sac.SAC``, ``memrl.td3.TD3``, ``memrl.discrete_sac.DiscreteSAC``) add
what differs: the actor's output and head, the critics' inputs and outputs, SAC's temperature,
TD3's target actor. Every update checks its loss and gradient; a non-finite one raises
:class:`TrainingDiverged` and changes no parameter. :func:`make_agent` picks the agent for a
configuration and an environment: the action space decides the head (discrete actions train
discrete SAC).
"""
from __future__ import annotations

import numpy as np

from memrl._core import _acting, _update
from memrl._core._update import Status
from memrl.config import Config
from memrl.nn import GRU, Dense, Sequential


class TrainingDiverged(RuntimeError):
    """A loss, a gradient or an action became NaN or infinite; the failing update changed nothing."""


def build_network(in_dim: int, out_dim: int, hidden_dim: int, num_layers: int, activation: str,
                  gates: str, recurrent: bool, *, seed: int | None, dtype=np.float32,
                  gru_layers: int | None = None) -> Sequential:
    """Recurrent: a Dense input layer, ``gru_layers`` GRUs, hidden Dense layers up to ``num_layers``,
    the output layer; ``gru_layers`` None gives RLtools' stacks: 3 = Dense-GRU-Dense,
    4 = Dense-GRU-GRU-Dense, n > 4 adds n - 4 hidden Dense layers after the GRUs. Feed-forward:
    n Dense layers. PyTorch's initialisation from ``seed`` (None: zeros, for targets that copy
    another net)."""
    H = hidden_dim
    layers = [Dense(in_dim, H, activation)]
    if recurrent:
        n_gru = gru_layers if gru_layers is not None else (1 if num_layers == 3 else 2)
        layers += [GRU(H, H, gates) for _ in range(n_gru)]
        layers += [Dense(H, H, activation) for _ in range(num_layers - 2 - n_gru)]
    else:
        layers += [Dense(H, H, activation) for _ in range(num_layers - 2)]
    layers.append(Dense(H, out_dim, "identity"))
    return Sequential(layers, dtype=dtype, seed=seed)


def optimizer(network: Sequential, settings) -> _update.Optimizer:
    """A network's flat buffers with its Adam settings (a ``memrl.optim.AdamConfig``)."""
    return _update.Optimizer(network.params, network.grads, network.adam_m, network.adam_v,
                             network.is_bias if settings.masks_biases else None, lr=settings.lr,
                             beta1=settings.beta1, beta2=settings.beta2, eps=settings.eps,
                             v_hat_floor=settings.v_hat_floor, weight_decay=settings.weight_decay,
                             clip=settings.clip, bias_lr_factor=settings.bias_lr_factor)


class Agent:
    """Actor, twin critics and target critics, and the compiled updates (see the module doc).

    ``dtype`` float32 trains; float64 agents exist for the tests' finite-difference checks.
    """

    algorithm: int
    """``memrl._core._update.Algorithm`` (SAC or TD3)."""
    actor_outputs_per_action: int
    """2 for SAC's [mean | log-std], 1 for TD3's deterministic action."""

    def __init__(self, config: Config, observation_dim: int, action_dim: int, seed: int, *, dtype=np.float32):
        cfg = self.config = config
        self.observation_dim, self.action_dim = observation_dim, action_dim
        O = observation_dim
        self.dtype = np.dtype(dtype)
        seeds = np.random.SeedSequence(seed).generate_state(3)
        net = dict(gates=cfg.gru_gates, recurrent=cfg.recurrent, dtype=self.dtype, gru_layers=cfg.gru_layers)
        critic_in, critic_out = self.critic_dims()
        self.actor = build_network(O, self.actor_outputs(), cfg.actor_hidden_dim, cfg.actor_num_layers,
                                   cfg.actor_activation, seed=int(seeds[0]), **net)
        self.critics = [build_network(critic_in, critic_out, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                      cfg.critic_activation, seed=int(s), **net) for s in seeds[1:]]
        self.target_critics = [build_network(critic_in, critic_out, cfg.critic_hidden_dim, cfg.critic_num_layers,
                                             cfg.critic_activation, seed=None, **net) for _ in self.critics]
        for target, critic in zip(self.target_critics, self.critics):
            target.copy_from(critic)
        self.target_entropy = self.default_target_entropy()
        self.settings = self._settings()
        self._critic_updates = None
        self._actor_update = None
        self._act_cache: dict[tuple, tuple] = {}

    def actor_outputs(self) -> int:
        """The actor's output width (SAC: [mean | log-std]; TD3: the action)."""
        return self.actor_outputs_per_action * self.action_dim

    def critic_dims(self) -> tuple[int, int]:
        """The critics' (input, output) widths: [observation, action] -> Q."""
        return self.observation_dim + self.action_dim, 1

    def default_target_entropy(self) -> float:
        """SAC's entropy target: ``config.target_entropy``, None meaning -action_dim."""
        cfg = self.config
        return float(-self.action_dim if cfg.target_entropy is None else cfg.target_entropy)

    def _settings(self, **extra) -> _update.Settings:
        """The typed settings of every update: built here, once, from the configuration."""
        cfg = self.config
        return _update.Settings(**extra,
            algorithm=self.algorithm, gamma=cfg.gamma, tau=cfg.tau, log_std_min=cfg.log_std_min,
            log_std_max=cfg.log_std_max, target_entropy=self.target_entropy,
            target_policy_noise=cfg.target_policy_noise, target_noise_clip=cfg.target_noise_clip,
            entropy_bonus=cfg.entropy_bonus, entropy_bonus_next_step=cfg.entropy_bonus_next_step,
            ignore_termination=cfg.ignore_termination, actor_entropy_all=cfg.actor_entropy_positions == "all",
            critic_backward_ignores_resets=cfg.rltools_critic_backward_ignores_resets,
            rltools_alpha_gradient=cfg.rltools_alpha_gradient, threads=cfg.threads,
            every_step=cfg.every_step_losses)

    # -- what the subclasses define --------------------------------------------------------------

    alpha: float | None = None
    """SAC's entropy temperature (None for TD3)."""

    def networks(self) -> dict[str, Sequential]:
        return {"actor": self.actor, "critic_0": self.critics[0], "critic_1": self.critics[1],
                "target_critic_0": self.target_critics[0], "target_critic_1": self.target_critics[1]}

    def target_policy(self) -> Sequential:
        """The network whose actions the critic targets use (SAC: the actor; TD3: the target actor)."""
        return self.actor

    def target_actor_params(self) -> np.ndarray | None:
        """TD3's target actor parameters (Polyak-averaged by the actor update); None for SAC."""
        return None

    # -- binding ---------------------------------------------------------------------------------

    def noise_shape(self, batch, target: bool) -> tuple[int, int]:
        """Rows of Gaussian noise an update needs: the target window (critic) or the window (actor)."""
        T = batch.target_observations.shape[0] if target else batch.sequence_length
        return (T * batch.batch_size, self.action_dim)

    def window(self, batch) -> _update.Window:
        """A compiled view of a ``SequenceBatch``'s arrays. float32 agents read the batch itself
        (every refill included); float64 agents get float64 copies of its current contents."""
        arrays = (batch.observations, batch.actions, batch.rewards, batch.terminated)
        if self.dtype != np.float32:
            arrays = tuple(np.ascontiguousarray(a, self.dtype) for a in arrays)
        return _update.Window(*arrays, batch.reset, batch.final, batch.target_reset, batch.padding,
                              batch.include_first_step_in_targets)

    def bind(self, critic_batches, critic_noise, actor_batch, actor_noise) -> None:
        """Build the compiled updates over these (reused) batches and noise arrays: the two critic
        updates (each its own window, noise and workspaces; they may be the same batch and noise
        with ``shared_batch``), and the actor's."""
        cfg = self.config
        batch = critic_batches[0]
        L, B = batch.sequence_length, batch.batch_size
        Lt = batch.target_observations.shape[0]
        policy = self.target_policy()
        # every-step losses of continuous agents: one-step branches of the critics off their window
        # passes (memrl._core._update binds each to its trunk's per-step states)
        branches = cfg.every_step_losses and self.algorithm != _update.Algorithm.DISCRETE_SAC

        def branch(net, rows):
            return net.new_plan(1, rows) if branches else None

        self._critic_updates = []
        optimizers = [optimizer(self.critics[i], cfg.critic_optimizer) for i in range(2)]
        optimizers.append(optimizer(self.actor, cfg.actor_optimizer))
        self._scheduled = [(settings, opt) for settings, opt in
                           zip((cfg.critic_optimizer,) * 2 + (cfg.actor_optimizer,), optimizers) if settings.scheduled]
        for i in range(2):
            targets = [self.target_critics[j].new_plan(Lt, B) for j in range(2)]
            self._critic_updates.append(_update.CriticUpdate(
                self.settings, self.window(critic_batches[i]), critic_noise[i], policy.new_plan(Lt, B), *targets,
                self.critics[i].plan(L, B), optimizers[i],
                self.target_critics[i].params, branch(self.target_critics[0], Lt * B),
                branch(self.target_critics[1], Lt * B)))
        self._actor_update = _update.ActorUpdate(
            self.settings, self.window(actor_batch), actor_noise, self.actor.plan(L, B), self.critics[0].plan(L, B),
            self.critics[1].plan(L, B), optimizers[2], self.target_actor_params(),
            branch(self.critics[0], L * B), branch(self.critics[1], L * B))

    # -- updates -----------------------------------------------------------------------------------

    def set_learning_rates(self, step: int) -> None:
        """The learning rates of the next updates, for environment step ``step``: each optimizer
        with a schedule (``AdamConfig.final_lr``) takes ``lr_at(step)``; the others keep ``lr``.
        The training loop calls it before each step's updates."""
        if self._critic_updates is None:
            raise RuntimeError("set_learning_rates: bind() the agent to its batches first")
        for settings, opt in self._scheduled:
            opt.lr = settings.lr_at(step)

    def update_critics(self, update_targets: bool = False) -> tuple[float, float]:
        """Both critic updates on their bound windows and noise, then (``update_targets``) the
        target critics' Polyak step; returns the two losses. Raises TrainingDiverged (nothing
        changed) if either loss or gradient is non-finite."""
        if self._critic_updates is None:
            raise RuntimeError("update_critics: bind() the agent to its batches first")
        c0, c1 = self.critics
        s0, l0, s1, l1 = _update.run_critic_updates(*self._critic_updates, self.alpha or 0.0, c0.adam_t + 1,
                                                    c1.adam_t + 1, bool(update_targets))
        for i, (status, loss) in enumerate(((s0, l0), (s1, l1))):
            _raise_for(status, f"critic_{i}", loss)
        c0.adam_t += 1
        c1.adam_t += 1
        return l0, l1

    def update_actor(self) -> float:
        """The actor update on its bound window and noise; returns its loss (subclasses extend it)."""
        if self._actor_update is None:
            raise RuntimeError("update_actor: bind() the agent to its batches first")
        status, loss, alpha_gradient = self._actor_update.run(self.alpha or 0.0, self.actor.adam_t + 1)
        _raise_for(status, "actor", loss)
        self.actor.adam_t += 1
        self._after_actor_update(alpha_gradient)
        return loss

    def _after_actor_update(self, alpha_gradient: float) -> None:
        pass

    def critic_gradient(self, i: int) -> float:
        """Critic i's loss on its bound window and noise, its gradient left in ``critics[i].grads``;
        nothing is applied (for finite-difference tests). Raises TrainingDiverged if non-finite."""
        status, loss = self._critic_updates[i].gradient(self.alpha or 0.0)
        _raise_for(status, f"critic_{i}", loss)
        return loss

    def actor_gradient(self) -> tuple[float, float]:
        """The actor's loss on its bound window and noise, its gradient left in ``actor.grads``,
        and the temperature's gradient; nothing is applied (for tests)."""
        status, loss, alpha_gradient = self._actor_update.gradient(self.alpha or 0.0)
        _raise_for(status, "actor", loss)
        return loss, alpha_gradient

    def update_targets(self) -> None:
        """The target critics' Polyak step alone (steps that train no critic)."""
        for target, critic in zip(self.target_critics, self.critics):
            target.polyak_from(critic, self.config.tau)

    # -- acting ------------------------------------------------------------------------------------

    def acting(self, observations: np.ndarray, state: list[np.ndarray], reset: np.ndarray, noise: np.ndarray,
               actions: np.ndarray) -> _acting.Acting:
        """The compiled policy step bound to these arrays: ``run()`` writes the exploring actions
        for ``observations`` (N, O) into ``actions`` (N, A), advancing ``state`` and clearing
        ``reset`` (N,) uint8; ``run(explore=False)`` the deterministic ones."""
        cfg = self.config
        return _acting.Acting(self.actor.step_plan(observations.shape[0], state), observations, reset, noise,
                              actions, algorithm=self.algorithm, log_std_min=cfg.log_std_min,
                              log_std_max=cfg.log_std_max, exploration_noise=cfg.exploration_noise,
                              **self._acting_extra())

    def _acting_extra(self) -> dict:
        return {}

    def random_actions(self, uniforms: np.ndarray, out: np.ndarray) -> None:
        """The warm-up's uniformly random actions (N, A) into ``out`` from uniforms (N, A) in [0, 1)
        (overwritten): ``2 u - 1``, uniform on [-1, 1)."""
        np.multiply(uniforms, 2.0, out=uniforms)
        np.subtract(uniforms, 1.0, out=out, casting="same_kind")

    def act(self, observations: np.ndarray, state: list[np.ndarray], reset: np.ndarray | None = None,
            noise: np.ndarray | None = None) -> np.ndarray:
        """Actions (N, A) for observations (N, O), advancing the carried ``state`` (one (N, H)
        array per GRU); rows where ``reset`` (N,) is set start a new episode. ``noise`` (N, A)
        standard normal samples an exploring action; None acts deterministically. The result is
        a reused array, overwritten by the next call with these states."""
        N = observations.shape[0]
        key = (N,) + tuple(id(h) for h in state)
        bound = self._act_cache.get(key)
        if bound is None:
            if len(self._act_cache) >= 16:
                del self._act_cache[next(iter(self._act_cache))]
            arrays = (np.zeros((N, self.observation_dim), self.dtype), np.zeros(N, np.uint8),
                      np.zeros((N, self.action_dim), self.dtype), np.zeros((N, self.action_dim), self.dtype))
            bound = self._act_cache[key] = (*arrays, self.acting(*arrays[:1], list(state), *arrays[1:]))
        obs, flags, eps, actions, step = bound
        obs[...] = observations
        flags[...] = 0 if reset is None else reset
        if noise is not None:
            eps[...] = noise
        step.run(noise is not None)
        return actions

    def deterministic_action(self, pre: np.ndarray) -> np.ndarray:
        """Deterministic actions (N, A) from actor outputs (N, outputs) (the count probe)."""
        raise NotImplementedError


def make_agent(config: Config, env, seed: int, *, dtype=np.float32) -> Agent:
    """The agent ``config`` trains on ``env`` (memrl's environment protocol): the action space
    decides the head. Continuous actions: ``memrl.sac.SAC`` or ``memrl.td3.TD3`` by
    ``config.algorithm``; discrete ones (``env.action_nvec`` set: a Gymnasium ``Discrete`` or
    ``MultiDiscrete`` space) train ``memrl.discrete_sac.DiscreteSAC`` with any SAC configuration.
    Raises ValueError (one line) for TD3 on discrete actions."""
    from memrl.discrete_sac import DiscreteSAC
    from memrl.sac import SAC
    from memrl.td3 import TD3

    nvec = getattr(env, "action_nvec", None)
    name = getattr(env, "name", None) or config.environment
    if nvec is not None:
        if config.algorithm != "sac":
            raise ValueError(f"algorithm: {config.algorithm!r} needs a continuous (Box) action space, but {name} has "
                             f"discrete actions (categories {list(nvec)}); train it with a SAC preset (discrete SAC)")
        return DiscreteSAC(config, env.observation_dim, nvec, seed, dtype=dtype)
    agent_class = SAC if config.algorithm == "sac" else TD3
    return agent_class(config, env.observation_dim, env.action_dim, seed, dtype=dtype)


def _raise_for(status: Status, network: str, loss: float) -> None:
    if status == Status.NONFINITE_LOSS:
        raise TrainingDiverged(f"{network}: loss is {loss}")
    if status == Status.NONFINITE_GRADIENT:
        raise TrainingDiverged(f"{network} gradient has non-finite entries")
