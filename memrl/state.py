"""A trainer's whole state as checkpoint arrays and JSON meta, and back (the format is
``memrl.checkpoint``'s; what goes in it is decided here).

``training_state(trainer)`` gives everything needed to continue a run bit for bit: the networks'
parameters and Adam moments (``<network>/params``, ``adam_m``, ``adam_v`` and ``adam_t``), the
temperature's, the replay buffer (``replay/...``), the environments (``env<i>/...``, when they can
be saved), every random generator, the rollout (observations, actions, reset flags, episode
steps and returns, GRU states), the running metrics, the configuration, the seed and the step.
``restore_training_state`` checks the architecture and copies it all back into a trainer built
from the same configuration, in place.

Environments that cannot be saved (Gymnasium's, in general) are recreated instead: on restore
each open episode ends there as truncated (its transitions stay in the replay) and each
environment starts a new episode from a seed derived from its own and the step, so resuming the
same checkpoint twice gives the same run.
"""
from __future__ import annotations

import json

import numpy as np

from memrl import __version__
from memrl.checkpoint import CheckpointError, first_difference

RNG_NAMES = ("rng_act", "rng_train", "rng_eval", "rng_probe")
ROLLOUT_ARRAYS = ("observations", "actions", "memory_reset", "episode_step", "episode_return")


def architecture(trainer) -> dict:
    """What a checkpoint must match to be loaded into ``trainer``."""
    return {"algorithm": trainer.config.algorithm,
            "networks": {name: net.config() for name, net in trainer.agent.networks().items()},
            "observation_dim": trainer.observation_dim, "action_dim": trainer.action_dim,
            "n_environments": len(trainer.envs)}


def training_state(trainer) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, JSON-serialisable meta): everything needed to continue ``trainer`` bit for bit.
    The arrays are the trainer's own (write them out before stepping on)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"memrl_version": __version__, "seed": trainer.seed, "config": trainer.config.to_dict(),
                  "architecture": architecture(trainer), "step_count": trainer.step_count,
                  "environment_spec": trainer.environment_spec()}
    for name, net in trainer.agent.networks().items():
        for part in ("params", "adam_m", "adam_v"):
            arrays[f"{name}/{part}"] = getattr(net, part)
        meta[f"{name}/adam_t"] = net.adam_t
    log_alpha = getattr(trainer.agent, "log_alpha", None)
    if log_alpha is not None:
        for part in ("params", "adam_m", "adam_v"):
            arrays[f"log_alpha/{part}"] = getattr(log_alpha, part)
        meta["log_alpha/adam_t"] = log_alpha.adam_t
    _split_tree("replay", trainer.buffer.state_dict(), arrays, meta)
    try:
        env_states = [env.state_dict() for env in trainer.envs]
    except NotImplementedError:  # e.g. Gymnasium: recreated and reset on restore instead
        env_states = None
    meta["environments_checkpointed"] = env_states is not None
    for i, state in enumerate(env_states or ()):
        _split_tree(f"env{i}", state, arrays, meta)
    for name in RNG_NAMES:
        meta[name] = getattr(trainer, name).bit_generator.state
    for name in ROLLOUT_ARRAYS:
        arrays[f"rollout/{name}"] = getattr(trainer, name)
    for k, h in enumerate(trainer.state):
        arrays[f"rollout/state{k}"] = h
    meta["metrics"] = dict(trainer.metrics.__dict__)
    return arrays, meta


def restore_training_state(trainer, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Copy ``training_state`` output into ``trainer`` (built from the same configuration), in
    place. Raises CheckpointError naming the first mismatch (architecture, array shape or dtype)."""
    difference = first_difference(jsonable(architecture(trainer)), meta.get("architecture"), "architecture",
                                  dotted=True)
    if difference:
        where, want, got = difference
        raise CheckpointError(f"checkpoint: architecture does not match this configuration: {where}: "
                              f"expected {want!r}, found {got!r}")
    for name, net in trainer.agent.networks().items():
        for part in ("params", "adam_m", "adam_v"):
            _copy_into(getattr(net, part), arrays[f"{name}/{part}"], f"{name}/{part}")
        net.adam_t = int(meta[f"{name}/adam_t"])
    log_alpha = getattr(trainer.agent, "log_alpha", None)
    if log_alpha is not None:
        for part in ("params", "adam_m", "adam_v"):
            _copy_into(getattr(log_alpha, part), arrays[f"log_alpha/{part}"], f"log_alpha/{part}")
        log_alpha.adam_t = int(meta["log_alpha/adam_t"])
    try:
        trainer.buffer.load_state_dict(_join_tree("replay", arrays, meta))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint: replay buffer: {exc}") from None
    checkpointed = meta.get("environments_checkpointed", True)
    if checkpointed:
        for i, env in enumerate(trainer.envs):
            env.load_state_dict(_join_tree(f"env{i}", arrays, meta))
    for name in RNG_NAMES:
        getattr(trainer, name).bit_generator.state = meta[name]
    for name in ROLLOUT_ARRAYS:
        _copy_into(getattr(trainer, name), arrays[f"rollout/{name}"], f"rollout/{name}")
    for k, h in enumerate(trainer.state):
        _copy_into(h, arrays[f"rollout/state{k}"], f"rollout/state{k}")
    trainer.metrics.__dict__.update(meta["metrics"])
    trainer.step_count = int(meta["step_count"])
    if not checkpointed:
        trainer.restart_episodes()


def jsonable(value):
    """``value`` as it comes back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


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
