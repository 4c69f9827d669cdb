"""Gather a batch of padded sequence windows from a replay ring buffer (RLtools ``gather_batch_step``).

Layout (C-contiguous, as ``memrl.replay.ReplayBuffer`` and ``SequenceBatch`` allocate them):
  buffer: observation / next_observation (S, C, O) float32, action (S, C, A) float32,
          reward (S, C) float32, terminated / episode_end (S, C) uint8, episode_start (S, C) int64,
          position (S,) int64, full (S,) uint8   -- S streams of capacity C;
  batch (time-major): observations (L+1, B, O), actions (L+1, B, A), rewards / terminated (L, B)
          float32, reset / final (L, B) uint8, target_reset / padding (L+1, B) uint8,
          transition_index (L+1, B) int64, stream / n_segments (B,) int64.

Randomness is an input: each batch row b reads its own row of ``uniforms`` (B, n_uniforms(L)),
floats in [0, 1) that the caller draws from a NumPy Generator. Column use per row:
  0: stream;  1, 2: first segment-length draw (mixture coin, uniform);
  3 + 3k: start offset of the k-th segment started in the window; 4 + 3k, 5 + 3k: the
  segment-length redraw (coin, uniform) if segment k is cut by its length.
A window of L + 1 slots starts at most L // 2 + 1 segments (each takes a step plus a padding slot).
A uniform u becomes an integer in {0..n-1} as ``int(u * n)`` (clamped to n - 1 against rounding).

The procedure, slot by slot, is internals section 4.4 (see ``memrl/replay.py`` for the prose and
``tests/sampling_reference.py`` for a plain-Python transcription that must match this bit for bit).
Deviation from RLtools: rewards and terminated flags at padding slots are written as 0 (RLtools
leaves stale values there; they are masked either way).

The kernel is ``noexcept nogil``: no Python objects, no allocation. It reports an empty stream by
returning ``-(stream + 1)``; the Python caller raises.
"""
from libc.stdint cimport int64_t, uint8_t


def n_uniforms(Py_ssize_t sequence_length):
    """Uniform draws a batch row consumes for windows of ``sequence_length`` steps."""
    return 3 + 3 * (sequence_length // 2 + 1)


cdef inline Py_ssize_t _uniform_index(double u, Py_ssize_t n) noexcept nogil:
    """int(u * n) for u in [0, 1), clamped to {0..n-1}."""
    cdef Py_ssize_t i = <Py_ssize_t>(u * n)
    if i >= n:
        i = n - 1
    if i < 0:
        i = 0
    return i


cdef inline Py_ssize_t _segment_length(
    Py_ssize_t L, bint enable_nominal, double nominal_probability, double coin, double u,
) noexcept nogil:
    """Target length of a segment: L with the nominal probability, else uniform on {1..L-1}."""
    if L == 1:
        return 1
    if enable_nominal and coin < nominal_probability:
        return L
    return 1 + _uniform_index(u, L - 1)


cdef class SequenceGatherer:
    """Typed views on one replay buffer and one batch, so each ``gather`` call costs no setup.

    Both the buffer's and the batch's arrays must stay the same objects for this gatherer's
    lifetime (they are filled in place, never reallocated).
    """
    cdef const float[:, :, ::1] observation
    cdef const float[:, :, ::1] action
    cdef const float[:, :, ::1] next_observation
    cdef const float[:, ::1] reward
    cdef const uint8_t[:, ::1] terminated
    cdef const uint8_t[:, ::1] episode_end
    cdef const int64_t[:, ::1] episode_start
    cdef const int64_t[::1] position
    cdef const uint8_t[::1] full

    cdef float[:, :, ::1] observations_out
    cdef float[:, :, ::1] actions_out
    cdef float[:, ::1] rewards_out
    cdef float[:, ::1] terminated_out
    cdef uint8_t[:, ::1] reset_out
    cdef uint8_t[:, ::1] final_out
    cdef uint8_t[:, ::1] target_reset_out
    cdef uint8_t[:, ::1] padding_out
    cdef int64_t[:, ::1] transition_index_out
    cdef int64_t[::1] stream_out
    cdef int64_t[::1] n_segments_out

    cdef Py_ssize_t S, C, O, A, L, B, U
    cdef Py_ssize_t max_episode_length
    cdef bint always_sample_from_initial_state, random_seq_length, enable_nominal
    cdef double nominal_probability

    def __init__(
        self,
        const float[:, :, ::1] observation, const float[:, :, ::1] action,
        const float[:, :, ::1] next_observation, const float[:, ::1] reward,
        const uint8_t[:, ::1] terminated, const uint8_t[:, ::1] episode_end,
        const int64_t[:, ::1] episode_start, const int64_t[::1] position,
        const uint8_t[::1] full, Py_ssize_t max_episode_length,
        float[:, :, ::1] observations_out, float[:, :, ::1] actions_out,
        float[:, ::1] rewards_out, float[:, ::1] terminated_out,
        uint8_t[:, ::1] reset_out, uint8_t[:, ::1] final_out,
        uint8_t[:, ::1] target_reset_out, uint8_t[:, ::1] padding_out,
        int64_t[:, ::1] transition_index_out, int64_t[::1] stream_out,
        int64_t[::1] n_segments_out,
        bint always_sample_from_initial_state, bint random_seq_length,
        bint enable_nominal_sequence_length_probability, double nominal_sequence_length_probability,
    ):
        cdef Py_ssize_t S = observation.shape[0], C = observation.shape[1]
        cdef Py_ssize_t O = observation.shape[2], A = action.shape[2]
        cdef Py_ssize_t L = rewards_out.shape[0], B = rewards_out.shape[1]
        if S < 1 or C < 1 or L < 1 or B < 1:
            raise ValueError(f"sizes: expected streams, capacity, L, B >= 1, got {S}, {C}, {L}, {B}")
        _expect("action", action.shape, (S, C, A))
        _expect("next_observation", next_observation.shape, (S, C, O))
        for name, view in (("reward", reward), ("terminated", terminated),
                           ("episode_end", episode_end), ("episode_start", episode_start)):
            _expect(name, view.shape, (S, C))
        _expect("position", position.shape, (S,))
        _expect("full", full.shape, (S,))
        _expect("observations_out", observations_out.shape, (L + 1, B, O))
        _expect("actions_out", actions_out.shape, (L + 1, B, A))
        for name, view in (("terminated_out", terminated_out), ("reset_out", reset_out),
                           ("final_out", final_out)):
            _expect(name, view.shape, (L, B))
        for name, view in (("target_reset_out", target_reset_out), ("padding_out", padding_out),
                           ("transition_index_out", transition_index_out)):
            _expect(name, view.shape, (L + 1, B))
        _expect("stream_out", stream_out.shape, (B,))
        _expect("n_segments_out", n_segments_out.shape, (B,))
        if max_episode_length < 0:
            raise ValueError(f"max_episode_length: expected >= 0, got {max_episode_length}")
        if always_sample_from_initial_state and max_episode_length >= C:
            raise ValueError(
                f"max_episode_length: sampling from initial states needs it below the capacity "
                f"{C}, got {max_episode_length}")
        if not 0.0 <= nominal_sequence_length_probability <= 1.0:
            raise ValueError(f"nominal_sequence_length_probability: expected a number in [0, 1], "
                             f"got {nominal_sequence_length_probability}")

        self.observation, self.action, self.next_observation = observation, action, next_observation
        self.reward, self.terminated, self.episode_end = reward, terminated, episode_end
        self.episode_start, self.position, self.full = episode_start, position, full
        self.observations_out, self.actions_out = observations_out, actions_out
        self.rewards_out, self.terminated_out = rewards_out, terminated_out
        self.reset_out, self.final_out = reset_out, final_out
        self.target_reset_out, self.padding_out = target_reset_out, padding_out
        self.transition_index_out = transition_index_out
        self.stream_out, self.n_segments_out = stream_out, n_segments_out
        self.S, self.C, self.O, self.A, self.L, self.B = S, C, O, A, L, B
        self.U = n_uniforms(L)
        self.max_episode_length = max_episode_length
        self.always_sample_from_initial_state = always_sample_from_initial_state
        self.random_seq_length = random_seq_length
        self.enable_nominal = enable_nominal_sequence_length_probability
        self.nominal_probability = nominal_sequence_length_probability

    def gather(self, const double[:, ::1] uniforms):
        """Fill the batch from ``uniforms`` (B, n_uniforms(L)) in [0, 1).

        Returns 0, or ``-(stream + 1)`` if a row drew a stream that holds no transitions (the
        batch is then partly filled and must not be used).
        """
        _expect("uniforms", uniforms.shape, (self.B, self.U))
        cdef Py_ssize_t b
        cdef int status = 0
        with nogil:
            for b in range(self.B):
                status = self._gather_row(b, &uniforms[b, 0])
                if status != 0:
                    break
        return status

    cdef int _gather_row(self, Py_ssize_t b, const double* u) noexcept nogil:
        """One window: segments separated by padding slots, over slots 0..L (section 4.4)."""
        cdef Py_ssize_t L = self.L, C = self.C, O = self.O, A = self.A
        cdef Py_ssize_t stream = _uniform_index(u[0], self.S)
        cdef Py_ssize_t position = self.position[stream]
        cdef bint is_full = self.full[stream] != 0
        cdef Py_ssize_t eligible
        if is_full:
            eligible = C - self.max_episode_length if self.always_sample_from_initial_state else C
        else:
            eligible = position
        if eligible <= 0:
            return -(<int>stream + 1)
        self.stream_out[b] = stream

        cdef Py_ssize_t s, i, index = 0, next_index, offset
        for s in range(L):
            self.reset_out[s, b] = 0
            self.final_out[s, b] = 0
            self.rewards_out[s, b] = 0
            self.terminated_out[s, b] = 0
        for s in range(L + 1):
            self.target_reset_out[s, b] = 0
            self.padding_out[s, b] = 0
        self.reset_out[0, b] = 1
        self.target_reset_out[0, b] = 1

        cdef Py_ssize_t segment_length = L, segment_step = 0
        if self.random_seq_length:
            segment_length = _segment_length(L, self.enable_nominal, self.nominal_probability, u[1], u[2])
        cdef Py_ssize_t n_started = 0, n_final = 0
        cdef double length_coin = 0, length_uniform = 0
        cdef bint previous_segment_end = False, previous_padding = True, segment_end

        for s in range(L + 1):
            if previous_segment_end:
                # Padding slot: already holds the final step's next observation and action 0.
                previous_segment_end = False
                previous_padding = True
                self.padding_out[s, b] = 1
                if s < L:
                    self.reset_out[s, b] = 1
                continue
            if previous_padding:
                # Segment start: draw where it begins.
                if s < L:
                    self.reset_out[s, b] = 1
                self.target_reset_out[s, b] = 1
                offset = _uniform_index(u[3 + 3 * n_started], eligible)
                if is_full:
                    index = (position + self.max_episode_length + offset) % C
                else:
                    index = offset
                if self.always_sample_from_initial_state:
                    index = self.episode_start[stream, index]
                length_coin = u[4 + 3 * n_started]
                length_uniform = u[5 + 3 * n_started]
                n_started += 1

            for i in range(O):
                self.observations_out[s, b, i] = self.observation[stream, index, i]
            for i in range(A):
                self.actions_out[s, b, i] = self.action[stream, index, i]
            self.transition_index_out[s, b] = index
            if s < L:
                self.rewards_out[s, b] = self.reward[stream, index]
                self.terminated_out[s, b] = self.terminated[stream, index]

            segment_end = self.episode_end[stream, index] != 0   # last transition of its episode
            next_index = index + 1
            if is_full and next_index == C:
                next_index = 0
            if next_index == position:                        # newest transition of the stream
                segment_end = True
            if s == L - 1:                                    # slot L must hold a padding slot
                segment_end = True
            if self.random_seq_length:
                if segment_step == segment_length - 1:        # reached the drawn length
                    segment_end = True
                    segment_length = _segment_length(
                        L, self.enable_nominal, self.nominal_probability, length_coin, length_uniform)
                if segment_end:
                    segment_step = 0
                else:
                    segment_step += 1

            if segment_end and s < L:
                self.final_out[s, b] = 1
                n_final += 1
                for i in range(O):
                    self.observations_out[s + 1, b, i] = self.next_observation[stream, index, i]
                for i in range(A):
                    self.actions_out[s + 1, b, i] = 0
                self.transition_index_out[s + 1, b] = index
            index = next_index
            previous_padding = False
            previous_segment_end = segment_end
        self.n_segments_out[b] = n_final
        return 0


cdef _expect(str name, shape, tuple expected):
    actual = tuple(shape[:len(expected)])
    if actual != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {actual}")
