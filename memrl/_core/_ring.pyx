"""Appending one transition to a replay stream's ring: the write and its bookkeeping in C.

``memrl.replay.ReplayBuffer.add`` checks the arguments' types and shapes and stages the row
(observation | action | next_observation, float32); ``RingWriter.write`` then checks the reward,
the staged values and the episode-length bound and, only if all pass, writes the row and advances
the stream's position, ``full`` flag, open-episode length and counters (layout in ``memrl.replay``).
"""
from libc.math cimport isfinite
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy


cpdef enum WriteStatus:
    WRITTEN = 0
    NONFINITE_ROW = 1           # a staged observation, action or next observation is NaN or infinite
    EPISODE_TOO_LONG = 2        # the open episode already holds max_episode_length transitions
    NONFINITE_REWARD = 3        # the reward is not a finite float32


cdef class RingWriter:
    """Typed views on one buffer's arrays and its staging row (all reused, never reallocated)."""
    cdef float[:, :, ::1] observation
    cdef float[:, :, ::1] action
    cdef float[:, :, ::1] next_observation
    cdef float[:, ::1] reward
    cdef uint8_t[:, ::1] terminated
    cdef uint8_t[:, ::1] episode_end
    cdef int64_t[:, ::1] episode_start
    cdef int64_t[::1] position
    cdef uint8_t[::1] full
    cdef int64_t[::1] episode_length
    cdef int64_t[::1] n_added
    cdef const float[::1] staged
    cdef Py_ssize_t C, O, A, max_episode_length

    def __init__(self, float[:, :, ::1] observation, float[:, :, ::1] action, float[:, :, ::1] next_observation,
                 float[:, ::1] reward, uint8_t[:, ::1] terminated, uint8_t[:, ::1] episode_end,
                 int64_t[:, ::1] episode_start, int64_t[::1] position, uint8_t[::1] full,
                 int64_t[::1] episode_length, int64_t[::1] n_added, const float[::1] staged,
                 Py_ssize_t max_episode_length):
        cdef Py_ssize_t S = observation.shape[0]
        self.C, self.O, self.A = observation.shape[1], observation.shape[2], action.shape[2]
        if staged.shape[0] != 2 * self.O + self.A:
            raise ValueError(f"staged: expected {2 * self.O + self.A} values, got {staged.shape[0]}")
        cdef Py_ssize_t C = self.C
        for name, ok in (
                ("action", action.shape[0] == S and action.shape[1] == C),
                ("next_observation", next_observation.shape[0] == S and next_observation.shape[1] == C
                 and next_observation.shape[2] == self.O),
                ("reward", reward.shape[0] == S and reward.shape[1] == C),
                ("terminated", terminated.shape[0] == S and terminated.shape[1] == C),
                ("episode_end", episode_end.shape[0] == S and episode_end.shape[1] == C),
                ("episode_start", episode_start.shape[0] == S and episode_start.shape[1] == C),
                ("position", position.shape[0] == S), ("full", full.shape[0] == S),
                ("episode_length", episode_length.shape[0] == S), ("n_added", n_added.shape[0] == S)):
            if not ok:
                raise ValueError(f"{name}: expected {S} streams of capacity {C} like observation")
        self.observation, self.action, self.next_observation = observation, action, next_observation
        self.reward, self.terminated, self.episode_end = reward, terminated, episode_end
        self.episode_start, self.position, self.full = episode_start, position, full
        self.episode_length, self.n_added, self.staged = episode_length, n_added, staged
        self.max_episode_length = max_episode_length  # 0: unbounded

    def write(self, Py_ssize_t stream, float reward, bint terminated, bint truncated):
        """Append the staged row to ``stream`` (0 <= stream < S, checked by the caller).

        Returns a ``WriteStatus`` value (an int): WRITTEN, or why nothing was written (NONFINITE_ROW,
        EPISODE_TOO_LONG, NONFINITE_REWARD).
        """
        return self._write(stream, reward, terminated, truncated)

    cdef int _write(self, Py_ssize_t stream, float reward, bint terminated, bint truncated) noexcept:
        cdef Py_ssize_t i, O = self.O, A = self.A, n = 2 * O + A, position, length, start
        cdef bint ended = terminated or truncated
        if not isfinite(reward):
            return NONFINITE_REWARD
        for i in range(n):
            if not isfinite(self.staged[i]):
                return NONFINITE_ROW
        length = self.episode_length[stream]
        if self.max_episode_length and length >= self.max_episode_length:
            return EPISODE_TOO_LONG
        position = self.position[stream]
        if length == 0:
            start = position
        else:
            start = self.episode_start[stream, (position - 1) if position > 0 else self.C - 1]
        memcpy(&self.observation[stream, position, 0], &self.staged[0], O * sizeof(float))
        memcpy(&self.action[stream, position, 0], &self.staged[O], A * sizeof(float))
        memcpy(&self.next_observation[stream, position, 0], &self.staged[O + A], O * sizeof(float))
        self.reward[stream, position] = reward
        self.terminated[stream, position] = terminated
        self.episode_end[stream, position] = ended
        self.episode_start[stream, position] = start
        self.episode_length[stream] = 0 if ended else length + 1
        self.n_added[stream] += 1
        position += 1
        if position == self.C:
            position = 0
            self.full[stream] = 1
        self.position[stream] = position
        return WRITTEN
