"""Plain-Python transcription of RLtools' ``gather_batch_step`` (internals 4.4), the test oracle.

It consumes the same per-row uniforms as the Cython kernel (``memrl._core._sampling``) with the
same column layout, and must produce bit-identical batches. Written for reading, not speed.
"""
from __future__ import annotations

import numpy as np

from memrl.replay import ReplayBuffer, SamplingConfig


def uniform_index(u: float, n: int) -> int:
    """An integer in {0..n-1} from a uniform u in [0, 1)."""
    return min(max(int(u * n), 0), n - 1)


def segment_length(L: int, config: SamplingConfig, coin: float, u: float) -> int:
    """L with the nominal probability (if enabled), else uniform on {1..L-1}."""
    if L == 1:
        return 1
    if config.enable_nominal_sequence_length_probability and coin < config.nominal_sequence_length_probability:
        return L
    return 1 + uniform_index(u, L - 1)


def gather_reference(
    buffer: ReplayBuffer, L: int, B: int, config: SamplingConfig, uniforms: np.ndarray
) -> dict[str, np.ndarray]:
    """Returns the batch arrays (same names as ``SequenceBatch``) for ``uniforms`` (B, U)."""
    O, A = buffer.observation_dim, buffer.action_dim
    out = {
        "observations": np.zeros((L + 1, B, O), np.float32),
        "actions": np.zeros((L + 1, B, A), np.float32),
        "rewards": np.zeros((L, B), np.float32),
        "terminated": np.zeros((L, B), np.float32),
        "reset": np.zeros((L, B), np.uint8),
        "final": np.zeros((L, B), np.uint8),
        "target_reset": np.zeros((L + 1, B), np.uint8),
        "padding": np.zeros((L + 1, B), np.uint8),
        "transition_index": np.zeros((L + 1, B), np.int64),
        "stream": np.zeros(B, np.int64),
        "n_segments": np.zeros(B, np.int64),
    }
    capacity = buffer.capacity
    max_episode_length = buffer.max_episode_length or 0
    for b in range(B):
        u = uniforms[b]
        stream = uniform_index(u[0], buffer.n_streams)
        position = int(buffer.position[stream])
        full = bool(buffer.full[stream])
        if full:
            eligible = capacity - max_episode_length if config.always_sample_from_initial_state else capacity
        else:
            eligible = position
        if eligible <= 0:
            raise ValueError(f"stream {stream} holds no transitions")
        out["stream"][b] = stream

        out["reset"][0, b] = 1
        out["target_reset"][0, b] = 1
        length = segment_length(L, config, u[1], u[2]) if config.random_seq_length else L
        step_in_segment = 0
        n_started = 0
        previous_truncated, previous_padding = False, True
        index = 0
        for s in range(L + 1):
            if previous_truncated:  # padding slot
                previous_truncated, previous_padding = False, True
                out["padding"][s, b] = 1
                if s < L:
                    out["reset"][s, b] = 1
                continue
            if previous_padding:  # a new segment starts here
                if s < L:
                    out["reset"][s, b] = 1
                out["target_reset"][s, b] = 1
                offset = uniform_index(u[3 + 3 * n_started], eligible)
                index = (position + max_episode_length + offset) % capacity if full else offset
                if config.always_sample_from_initial_state:
                    index = int(buffer.episode_start[stream, index])
                coin, length_u = u[4 + 3 * n_started], u[5 + 3 * n_started]
                n_started += 1

            out["observations"][s, b] = buffer.observation[stream, index]
            out["actions"][s, b] = buffer.action[stream, index]
            out["transition_index"][s, b] = index
            if s < L:
                out["rewards"][s, b] = buffer.reward[stream, index]
                out["terminated"][s, b] = buffer.terminated[stream, index]

            truncated = bool(buffer.episode_end[stream, index])
            next_index = (index + 1) % capacity if full else index + 1
            if next_index == position:
                truncated = True
            if s == L - 1:
                truncated = True
            if config.random_seq_length:
                if step_in_segment == length - 1:
                    truncated = True
                    length = segment_length(L, config, coin, length_u)
                step_in_segment = 0 if truncated else step_in_segment + 1

            if truncated and s < L:
                out["final"][s, b] = 1
                out["n_segments"][b] += 1
                out["observations"][s + 1, b] = buffer.next_observation[stream, index]
                out["actions"][s + 1, b] = 0
                out["transition_index"][s + 1, b] = index
            index = next_index
            previous_padding = False
            previous_truncated = truncated
    return out
