"""Replay ring buffers and the sampler that cuts them into padded sequence windows for recurrent nets.

``ReplayBuffer`` keeps one ring per stream (one stream = one environment instance).
``SequenceSampler`` fills a preallocated ``SequenceBatch`` exactly as RLtools' ``gather_batch_step``
does (``include/rl_tools/rl/components/off_policy_runner/operations_generic.h``; internals 4.3/4.4):

Each batch row picks a stream uniformly, then fills a window of ``L + 1`` time slots with one or
more *segments* of consecutive transitions of one episode, each followed by a *padding slot*
holding the segment's final ``next_observation`` with action 0. Per row, starting at slot 0:

1. A slot right after a segment's final step is its padding slot: ``padding`` is set there,
   and ``reset`` (the online nets start afresh at the next segment).
2. Otherwise, if a new segment starts here, set ``reset`` and ``target_reset`` and draw the start:
   ``offset ~ U{0..eligible-1}`` with ``eligible`` = the stream's position if it never wrapped,
   else the capacity (minus ``max_episode_length`` when sampling from initial states);
   ``index = offset`` if not wrapped, else ``(position + max_episode_length + offset) % capacity``.
   With ``always_sample_from_initial_state`` the index becomes its episode's first transition.
3. Copy the transition's observation, action, reward and terminated flag into the slot.
4. The segment ends here if the transition is the last of its episode, or it is the newest
   transition of the stream, or the slot is ``L - 1``, or (``random_seq_length``) the segment
   reached its drawn length; only in that last case is a new length drawn. Lengths are ``L`` with
   probability ``nominal_sequence_length_probability`` (if enabled), else uniform on {1..L-1}.
5. On a segment end, mark ``final`` and write the padding slot; otherwise continue with the next
   transition.

A window thus holds segments each followed by its padding slot. If slot ``L - 1`` is a padding
slot, slot ``L`` starts one more segment that has no room to continue (as in RLtools): it holds a
real observation and action with ``target_reset`` set, no final step and no padding slot. No loss
reads it (targets are read right after final steps), but target nets do see it.

Why a segment never reads overwritten or unwritten data: a segment only moves forward in time
from its start and stops at the newest transition, so it never crosses the write position
(from the newest transition to the oldest). Every slot below ``position`` (or every slot once the
ring wrapped) holds a written transition. With ``always_sample_from_initial_state`` the start
offset skips the ``max_episode_length`` oldest transitions, so the episode start of any eligible
transition is at most ``max_episode_length - 1`` steps older and still stored; ``add`` therefore
refuses episodes longer than ``max_episode_length``.

Deviations from RLtools: padding slots get reward 0 and terminated 0 (RLtools leaves stale values;
both are masked). RLtools' draws come from one mt19937 stream; here each row reads a fixed block
of uniforms (see ``memrl._core._sampling``), so batches are deterministic per NumPy seed but not
equal to RLtools' batches.
"""
from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import numpy.typing as npt

from memrl._checks import check_int as _check_int
from memrl._core._ring import RingWriter, WriteStatus
from memrl._core._sampling import SequenceGatherer, n_uniforms
from memrl.config import SamplingConfig

_BUFFER_ARRAYS = (
    "observation", "action", "next_observation", "reward", "terminated", "episode_end",
    "episode_start", "position", "full", "episode_length", "n_added",
)


class ReplayBuffer:
    """One ring buffer of transitions per stream (environment), in contiguous arrays.

    Arrays (S = n_streams, C = capacity), allocated once and only ever written in place:

    * ``observation``, ``next_observation`` (S, C, O) and ``action`` (S, C, A): float32;
    * ``reward`` (S, C) float32; ``terminated`` (S, C) uint8 (the episode terminated here: no
      bootstrap) and ``episode_end`` (S, C) uint8: the last transition of its episode (a
      termination, a truncation by a time limit, or an
      episode the training loop ended with ``mark_episode_end``);
    * ``episode_start`` (S, C) int64: ring index of the first transition of each transition's
      episode;
    * per stream: ``position`` (next slot to write), ``full`` (the ring wrapped),
      ``episode_length`` (transitions in the open episode) and ``n_added`` (all transitions
      ever added).

    ``max_episode_length`` bounds episode lengths (``add`` raises beyond it); sampling from
    initial states relies on that bound. ``None`` means unbounded (then sequences cannot be
    sampled from initial states).
    """

    def __init__(
        self,
        capacity: int,
        observation_dim: int,
        action_dim: int,
        n_streams: int = 1,
        max_episode_length: int | None = None,
    ) -> None:
        self.capacity = _check_int("capacity", capacity, 1)
        self.observation_dim = _check_int("observation_dim", observation_dim, 1)
        self.action_dim = _check_int("action_dim", action_dim, 1)
        self.n_streams = _check_int("n_streams", n_streams, 1)
        self.max_episode_length = (
            None if max_episode_length is None else _check_int("max_episode_length", max_episode_length, 1)
        )
        S, C, O, A = self.n_streams, self.capacity, self.observation_dim, self.action_dim
        self.observation = np.zeros((S, C, O), dtype=np.float32)
        self.action = np.zeros((S, C, A), dtype=np.float32)
        self.next_observation = np.zeros((S, C, O), dtype=np.float32)
        self.reward = np.zeros((S, C), dtype=np.float32)
        self.terminated = np.zeros((S, C), dtype=np.uint8)
        self.episode_end = np.zeros((S, C), dtype=np.uint8)
        self.episode_start = np.zeros((S, C), dtype=np.int64)
        self.position = np.zeros(S, dtype=np.int64)
        self.full = np.zeros(S, dtype=np.uint8)
        self.episode_length = np.zeros(S, dtype=np.int64)
        self.n_added = np.zeros(S, dtype=np.int64)
        # Staging row for ``add`` (checked before anything is written; no allocation per call).
        self._staged = np.zeros(2 * O + A, dtype=np.float32)
        self._staged_observation = self._staged[:O]
        self._staged_action = self._staged[O:O + A]
        self._staged_next_observation = self._staged[O + A:]
        self._writer = RingWriter(self.observation, self.action, self.next_observation, self.reward,
                                  self.terminated, self.episode_end, self.episode_start, self.position, self.full,
                                  self.episode_length, self.n_added, self._staged, self.max_episode_length or 0)

    # ------------------------------------------------------------------ writing
    def add(
        self,
        stream: int,
        observation: npt.ArrayLike,   # (O,)
        action: npt.ArrayLike,        # (A,)
        reward: float,
        next_observation: npt.ArrayLike,  # (O,)
        terminated: bool,
        truncated: bool,
    ) -> None:
        """Append one transition to ``stream``'s ring (overwriting its oldest once full).

        ``terminated`` or ``truncated`` closes the episode. Raises ValueError on a wrong shape,
        a non-finite value, or an episode longer than ``max_episode_length``; the buffer is left
        unchanged then.
        """
        if type(stream) is not int:
            stream = operator.index(stream)
        if not 0 <= stream < self.n_streams:
            raise ValueError(f"stream: expected an integer in [0, {self.n_streams}), got {stream!r}")
        O, A = self.observation_dim, self.action_dim
        for name, value, dim in (("observation", observation, O), ("action", action, A),
                                 ("next_observation", next_observation, O)):
            shape = value.shape if type(value) is np.ndarray else np.shape(value)
            if shape != (dim,):
                raise ValueError(f"{name}: expected shape ({dim},), got {shape}")
        reward = float(reward)
        if not math.isfinite(reward):
            raise ValueError(f"reward: expected a finite number, got {reward}")
        # Stage the row; the compiled writer checks it and writes the buffer only if it passes.
        try:
            self._staged_observation[...] = observation
            self._staged_action[...] = action
            self._staged_next_observation[...] = next_observation
        except RuntimeWarning as warning:  # float32 overflow, with warnings turned into errors
            raise ValueError(
                f"observation, action, next_observation: expected finite float32 values ({warning})"
            ) from None
        status = self._writer.write(stream, reward, bool(terminated), bool(truncated))
        if status == WriteStatus.NONFINITE_ROW:
            for name, value in (("observation", observation), ("action", action),
                                ("next_observation", next_observation)):
                if not np.isfinite(np.asarray(value, dtype=np.float32)).all():
                    raise ValueError(f"{name}: expected finite float32 values, got {value}")
            raise ValueError("observation, action, next_observation: expected finite float32 values")
        if status == WriteStatus.NONFINITE_REWARD:
            raise ValueError(f"reward: expected a finite float32 value, got {reward}")
        if status == WriteStatus.EPISODE_TOO_LONG:
            raise ValueError(
                f"stream {stream}: the open episode already has {int(self.episode_length[stream])} transitions = "
                f"max_episode_length; end it with truncated=True (or mark_episode_end) first"
            )

    def mark_episode_end(self, stream: int) -> None:
        """Make ``stream``'s newest transition the last of its episode (the loop reset its env).

        No-op when the stream is empty or its newest transition already ends an episode.
        """
        if not 0 <= stream < self.n_streams:
            raise ValueError(f"stream: expected an integer in [0, {self.n_streams}), got {stream!r}")
        if self.size(stream) == 0:
            return
        self.episode_end[stream, int(self.position[stream]) - 1] = 1
        self.episode_length[stream] = 0

    # ------------------------------------------------------------------ reading
    def size(self, stream: int) -> int:
        """Transitions currently stored in ``stream``."""
        return self.capacity if self.full[stream] else int(self.position[stream])

    def __len__(self) -> int:
        """Transitions currently stored over all streams."""
        return sum(self.size(stream) for stream in range(self.n_streams))

    def newest_index(self, stream: int) -> int:
        """Ring index of ``stream``'s newest transition (the stream must not be empty)."""
        if self.size(stream) == 0:
            raise ValueError(f"stream: stream {stream} holds no transitions")
        return (int(self.position[stream]) - 1) % self.capacity

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Configuration and copies of all arrays."""
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "n_streams": self.n_streams,
            "max_episode_length": self.max_episode_length,
        }
        for name in _BUFFER_ARRAYS:
            state[name] = getattr(self, name).copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` by copying into the existing arrays (samplers stay valid).

        The saved capacity may differ from this buffer's when no stream ever overwrote a
        transition (its transitions then sit in ring order at indices 0..n-1 and fit here): the
        result is the buffer a run with this capacity would hold (how ``--resume --steps``
        extends a run). Raises ValueError otherwise, or on any other mismatch.
        """
        for key in ("observation_dim", "action_dim", "n_streams", "max_episode_length"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state[{key!r}]: expected {getattr(self, key)!r}, got {state[key]!r}")
        saved_capacity = state["capacity"]
        S = self.n_streams
        per_stream = {"position": (S,), "full": (S,), "episode_length": (S,), "n_added": (S,)}
        for name in _BUFFER_ARRAYS:
            target = getattr(self, name)
            shape = per_stream.get(name, (S, saved_capacity) + target.shape[2:])
            source = np.asarray(state[name])
            if source.shape != shape:
                raise ValueError(f"state[{name!r}]: expected shape {shape}, got {source.shape}")
        if saved_capacity == self.capacity:
            for name in _BUFFER_ARRAYS:
                np.copyto(getattr(self, name), state[name], casting="same_kind")
            return
        n_added = np.asarray(state["n_added"])
        if (n_added > saved_capacity).any() or (n_added > self.capacity).any():
            raise ValueError(f"state['capacity']: expected {self.capacity}, got {saved_capacity} (a buffer whose "
                             f"ring wrapped or whose {int(n_added.max())} transitions do not fit cannot change "
                             f"capacity)")
        n = int(n_added.max())
        for name in _BUFFER_ARRAYS:
            target = getattr(self, name)
            if name in per_stream:
                continue
            target[...] = 0
            np.copyto(target[:, :n], np.asarray(state[name])[:, :n], casting="same_kind")
        self.n_added[...] = n_added
        self.episode_length[...] = state["episode_length"]
        self.position[...] = n_added % self.capacity
        self.full[...] = n_added == self.capacity

    def __repr__(self) -> str:
        return (
            f"ReplayBuffer(capacity={self.capacity}, observation_dim={self.observation_dim}, "
            f"action_dim={self.action_dim}, n_streams={self.n_streams}, "
            f"max_episode_length={self.max_episode_length}, stored={len(self)})"
        )


class SequenceBatch:
    """A batch of B windows of L steps plus one padding slot, time-major, filled in place.

    Window slots ``s = 0..L``:

    * ``observations`` (L+1, B, O), ``actions`` (L+1, B, A): float32; a padding slot (right
      after a segment's final step) holds that transition's ``next_observation`` and action 0;
    * ``rewards``, ``terminated`` (L, B) float32 (0 at padding slots);
    * ``reset`` (L, B) uint8: the online nets restart their hidden state here (slot 0, segment
      starts and padding slots); ``final`` (L, B) uint8: a segment's final step (where losses
      are taken);
    * ``target_reset`` (L+1, B) uint8: where the target networks restart, over all slots: slot 0
      and segment starts (*not* padding slots, so a target net sees a segment and its next
      observation as one history); ``padding`` (L+1, B) uint8: the padding slots (where the
      critic targets use a fresh next action);
    * ``transition_index`` (L+1, B) int64: ring index of the transition each slot came from (for
      a padding slot, the final transition whose next observation it holds);
    * ``stream`` (B,) int64: the stream each row came from; ``n_segments`` (B,) int64: segments
      (final steps) in each row. A segment started at slot L (after a padding slot at L - 1)
      has no final step and is not counted.

    The target networks consume the *target window*: slots [0, L+1) with
    ``include_first_step_in_targets``, else [1, L+1), as the views ``target_observations``,
    ``target_actions``, ``target_window_reset`` and ``target_window_padding``. The target for
    current slot ``t`` is read at target-window position ``t + target_offset``.
    """

    def __init__(
        self, sequence_length: int, batch_size: int, observation_dim: int, action_dim: int,
        include_first_step_in_targets: bool = True,
    ) -> None:
        L, B = sequence_length, batch_size
        self.sequence_length, self.batch_size = L, B
        self.observations = np.zeros((L + 1, B, observation_dim), dtype=np.float32)
        self.actions = np.zeros((L + 1, B, action_dim), dtype=np.float32)
        self.rewards = np.zeros((L, B), dtype=np.float32)
        self.terminated = np.zeros((L, B), dtype=np.float32)
        self.reset = np.zeros((L, B), dtype=np.uint8)
        self.final = np.zeros((L, B), dtype=np.uint8)
        self.target_reset = np.zeros((L + 1, B), dtype=np.uint8)
        self.padding = np.zeros((L + 1, B), dtype=np.uint8)
        self.transition_index = np.zeros((L + 1, B), dtype=np.int64)
        self.stream = np.zeros(B, dtype=np.int64)
        self.n_segments = np.zeros(B, dtype=np.int64)

        self.include_first_step_in_targets = bool(include_first_step_in_targets)
        first = 0 if self.include_first_step_in_targets else 1
        self.target_offset = 1 - first
        # Views, created once: they follow every in-place refill.
        self.current_observations = self.observations[:L]   # (L, B, O)
        self.current_actions = self.actions[:L]             # (L, B, A)
        self.target_observations = self.observations[first:]  # (L+1 or L, B, O)
        self.target_actions = self.actions[first:]
        self.target_window_reset = self.target_reset[first:]
        self.target_window_padding = self.padding[first:]

    def __repr__(self) -> str:
        L, B, O = self.observations.shape
        return f"SequenceBatch(L={L - 1}, B={B}, O={O}, A={self.actions.shape[2]})"


class SequenceSampler:
    """Samples ``SequenceBatch``es of ``batch_size`` windows of ``sequence_length`` from a buffer.

    ``sample(rng)`` draws the uniforms from ``rng`` (a NumPy Generator) into a preallocated
    array, fills the sampler's one ``SequenceBatch`` in place (Cython kernel) and returns it: the
    batch is overwritten by the next call.
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        sequence_length: int,
        batch_size: int,
        config: SamplingConfig | None = None,
    ) -> None:
        if not isinstance(buffer, ReplayBuffer):
            raise TypeError(f"buffer: expected a ReplayBuffer, got {type(buffer).__name__}")
        L = _check_int("sequence_length", sequence_length, 1)
        B = _check_int("batch_size", batch_size, 1)
        if L > buffer.capacity:
            raise ValueError(f"sequence_length: expected at most the buffer capacity {buffer.capacity}, got {L}")
        config = SamplingConfig() if config is None else config
        if not isinstance(config, SamplingConfig):
            raise TypeError(f"config: expected a SamplingConfig, got {type(config).__name__}")
        if config.always_sample_from_initial_state and (
            buffer.max_episode_length is None or buffer.max_episode_length >= buffer.capacity
        ):
            raise ValueError(
                "config.always_sample_from_initial_state: needs buffer.max_episode_length below "
                f"buffer.capacity={buffer.capacity} (to skip possibly overwritten episode starts), "
                f"got max_episode_length={buffer.max_episode_length}"
            )
        self.buffer, self.sequence_length, self.batch_size, self.config = buffer, L, B, config
        self.batch = SequenceBatch(
            L, B, buffer.observation_dim, buffer.action_dim, config.include_first_step_in_targets
        )
        self.uniforms = np.zeros((B, n_uniforms(L)), dtype=np.float64)
        batch = self.batch
        self._gatherer = SequenceGatherer(
            buffer.observation, buffer.action, buffer.next_observation, buffer.reward,
            buffer.terminated, buffer.episode_end, buffer.episode_start, buffer.position, buffer.full,
            buffer.max_episode_length or 0,
            batch.observations, batch.actions, batch.rewards, batch.terminated,
            batch.reset, batch.final, batch.target_reset, batch.padding,
            batch.transition_index, batch.stream, batch.n_segments,
            config.always_sample_from_initial_state, config.random_seq_length,
            config.enable_nominal_sequence_length_probability,
            float(config.nominal_sequence_length_probability),
        )

    def sample(self, rng: np.random.Generator) -> SequenceBatch:
        """Draw a batch with randomness from ``rng``; returns the (reused) ``self.batch``."""
        rng.random(out=self.uniforms)
        return self._gather(self.uniforms)

    def sample_from_uniforms(self, uniforms: npt.NDArray[np.float64]) -> SequenceBatch:
        """Fill the batch from given uniforms ``(batch_size, n_uniforms(L))`` in [0, 1)."""
        uniforms = np.asarray(uniforms)
        if uniforms.shape != self.uniforms.shape:
            raise ValueError(f"uniforms: expected shape {self.uniforms.shape}, got {uniforms.shape}")
        if uniforms.size and not (uniforms.min() >= 0.0 and uniforms.max() < 1.0):  # also rejects NaN
            raise ValueError(f"uniforms: expected values in [0, 1), got range [{uniforms.min()}, {uniforms.max()}]")
        return self._gather(np.ascontiguousarray(uniforms, dtype=np.float64))

    def _gather(self, uniforms: npt.NDArray[np.float64]) -> SequenceBatch:
        status = self._gatherer.gather(uniforms)
        if status != 0:
            stream = -status - 1
            raise ValueError(
                f"buffer: stream {stream} holds no transitions (buffer holds {len(self.buffer)} in all); "
                "every stream needs at least one before sampling"
            )
        return self.batch
