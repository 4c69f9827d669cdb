"""ReplayBuffer and SequenceSampler: invariants of sampled windows, Cython vs reference, statistics.

Every transition carries a unique id t (1, 2, ...): observation = (t, ...), next_observation =
(t + 0.5, ...), action = (t, ...), reward = t. A slot whose observation is not an integer is
therefore a padding slot, and any id can be traced back to the log of what was written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from memrl.replay import ReplayBuffer, SamplingConfig, SequenceBatch, SequenceSampler

from sampling_reference import gather_reference


@dataclass
class Record:
    stream: int
    episode: int
    step: int  # index within the episode
    terminated: bool
    last: bool = False  # last transition of its episode (set when the episode ends)


@dataclass
class Scenario:
    buffer: ReplayBuffer
    records: dict[int, Record] = field(default_factory=dict)  # id -> record
    ids: list[list[int]] = field(default_factory=list)  # per stream, in order added


def fill(capacity, n_streams, max_episode_length, episodes_per_stream, obs_dim=2, action_dim=2):
    """A buffer filled stream by stream; each episode is (length, ending) with ending in
    {"truncated", "terminated", "marked", "open"} ("open" only for the last episode)."""
    buffer = ReplayBuffer(capacity, obs_dim, action_dim, n_streams=n_streams,
                          max_episode_length=max_episode_length)
    scenario = Scenario(buffer, ids=[[] for _ in range(n_streams)])
    next_id = 1
    for stream, episodes in enumerate(episodes_per_stream):
        for episode, (length, ending) in enumerate(episodes):
            for step in range(length):
                last = step == length - 1
                terminated = last and ending == "terminated"
                truncated = last and ending == "truncated"
                t = float(next_id)
                buffer.add(stream, np.full(obs_dim, t), np.full(action_dim, t, np.float32), t,
                           np.full(obs_dim, t + 0.5, np.float32), terminated, truncated)
                scenario.records[next_id] = Record(stream, episode, step, terminated, last and ending != "open")
                scenario.ids[stream].append(next_id)
                next_id += 1
            if ending == "marked":
                buffer.mark_episode_end(stream)
    return scenario


@st.composite
def scenarios(draw):
    n_streams = draw(st.integers(1, 3))
    capacity = draw(st.integers(2, 30))
    max_episode_length = draw(st.integers(1, capacity - 1))
    episodes_per_stream = []
    for _ in range(n_streams):
        total_target = draw(st.integers(1, 3 * capacity))  # up to ~3 wrap-arounds
        episodes, total = [], 0
        while total < total_target:
            length = draw(st.integers(1, max_episode_length))
            ending = draw(st.sampled_from(["truncated", "terminated", "marked"]))
            episodes.append([length, ending])
            total += length
        if draw(st.booleans()):
            episodes[-1][1] = "open"
        episodes_per_stream.append(episodes)
    return fill(capacity, n_streams, max_episode_length, episodes_per_stream)


configs = st.builds(
    SamplingConfig,
    include_first_step_in_targets=st.booleans(),
    always_sample_from_initial_state=st.booleans(),
    random_seq_length=st.booleans(),
    enable_nominal_sequence_length_probability=st.booleans(),
    nominal_sequence_length_probability=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
)


def check_window(scenario: Scenario, batch: SequenceBatch, b: int, config: SamplingConfig) -> None:
    """All invariants of one sampled row, derived from the ids rather than from the masks."""
    buffer = scenario.buffer
    L = batch.sequence_length
    stream = int(batch.stream[b])
    stored_ids = set(scenario.ids[stream][-buffer.capacity:])  # written and not overwritten
    newest_id = scenario.ids[stream][-1]
    ids = batch.observations[:, b, 0]
    padding = ids != np.floor(ids)

    # Slot kinds, from the ids: runs of real transitions between padding slots are segments.
    segments, start = [], None
    for s in range(L + 1):
        if not padding[s] and start is None:
            start = s
        if padding[s]:
            assert start is not None, f"slot {s}: padding slot without a segment before it"
            segments.append((start, s - 1))
            start = None
    stub = start  # a segment started at slot L has no room for padding
    if stub is not None:
        assert stub == L, f"segment starting at slot {stub} has no padding slot"
    assert padding[0] == False  # noqa: E712

    expect_reset = np.zeros(L, np.uint8)
    expect_final = np.zeros(L, np.uint8)
    expect_next_reset = np.zeros(L + 1, np.uint8)
    expect_next_final = np.zeros(L + 1, np.uint8)
    starts = [first for first, _ in segments] + ([stub] if stub is not None else [])
    for first in starts:
        t = int(ids[first])
        assert t in stored_ids, f"slot {first}: id {t} is not stored in stream {stream}"
        if config.always_sample_from_initial_state:
            assert scenario.records[t].step == 0, f"segment at slot {first} starts mid-episode"
        expect_next_reset[first] = 1
        if first < L:
            expect_reset[first] = 1
    for first, last in segments:
        for s in range(first, last + 1):
            t = int(ids[s])
            record = scenario.records[t]
            assert t in stored_ids and record.stream == stream
            assert np.all(batch.observations[s, b] == t) and np.all(batch.actions[s, b] == t)
            assert batch.rewards[s, b] == t and batch.terminated[s, b] == record.terminated
            assert np.all(buffer.observation[stream, batch.transition_index[s, b]] == t)
            if s > first:  # consecutive transitions of one episode
                assert t == int(ids[s - 1]) + 1
                assert record.episode == scenario.records[t - 1].episode
            if s < last:  # a segment never continues past an episode end or the newest data
                assert not record.last and t != newest_id
        t_final = int(ids[last])
        cut_by_data = scenario.records[t_final].last or t_final == newest_id or last == L - 1
        if not config.random_seq_length:
            assert cut_by_data, f"segment ending at slot {last} ended without a reason"
        expect_final[last] = 1
        # Padding slot: the final transition's next observation, action 0, reward 0.
        pad = last + 1
        assert np.all(batch.observations[pad, b] == t_final + 0.5)
        assert np.all(batch.actions[pad, b] == 0)
        assert batch.transition_index[pad, b] == batch.transition_index[last, b]
        expect_next_final[pad] = 1
        if pad < L:
            expect_reset[pad] = 1
            assert batch.rewards[pad, b] == 0 and batch.terminated[pad, b] == 0
    expect_reset[0] = expect_next_reset[0] = 1
    np.testing.assert_array_equal(batch.reset[:, b], expect_reset)
    np.testing.assert_array_equal(batch.final[:, b], expect_final)
    np.testing.assert_array_equal(batch.target_reset[:, b], expect_next_reset)
    np.testing.assert_array_equal(batch.padding[:, b], expect_next_final)
    assert batch.n_segments[b] == len(segments)


@settings(max_examples=150, deadline=None)
@given(scenario=scenarios(), config=configs, L=st.integers(1, 12), B=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_sampled_windows_satisfy_all_invariants_and_match_reference(scenario, config, L, B, seed):
    buffer = scenario.buffer
    L = min(L, buffer.capacity)
    sampler = SequenceSampler(buffer, L, B, config)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        batch = sampler.sample(rng)
        for b in range(B):
            check_window(scenario, batch, b, config)
        expected = gather_reference(buffer, L, B, config, sampler.uniforms)
        for name, array in expected.items():
            np.testing.assert_array_equal(getattr(batch, name), array, err_msg=name)


def test_same_seed_gives_identical_batches():
    scenario = fill(50, 2, 20, [[(20, "truncated")] * 4, [(7, "terminated")] * 9])
    sampler_a = SequenceSampler(scenario.buffer, 8, 4)
    sampler_b = SequenceSampler(scenario.buffer, 8, 4)

    def draws(sampler, seed):
        rng = np.random.default_rng(seed)
        return [{k: v.copy() for k, v in vars(sampler.sample(rng)).items() if isinstance(v, np.ndarray)}
                for _ in range(5)]

    a, b, c = draws(sampler_a, 1), draws(sampler_b, 1), draws(sampler_a, 2)
    for batch_a, batch_b in zip(a, b):
        for name in batch_a:
            np.testing.assert_array_equal(batch_a[name], batch_b[name], err_msg=name)
    assert any(not np.array_equal(x["observations"], y["observations"]) for x, y in zip(a, c))


def test_target_views_follow_include_first_step():
    scenario = fill(40, 1, 40, [[(30, "truncated")]])
    for include_first, first in ((True, 0), (False, 1)):
        config = SamplingConfig(include_first_step_in_targets=include_first)
        sampler = SequenceSampler(scenario.buffer, 6, 3, config)
        batch = sampler.sample(np.random.default_rng(0))
        assert batch.target_offset == 1 - first
        assert batch.target_observations.shape[0] == 7 - first
        for view, base in ((batch.target_observations, batch.observations), (batch.target_actions, batch.actions),
                           (batch.target_window_reset, batch.target_reset), (batch.target_window_padding, batch.padding)):
            assert np.shares_memory(view, base)
            np.testing.assert_array_equal(view, base[first:])
        assert np.shares_memory(batch.current_observations, batch.observations)
        assert batch.current_observations.shape[0] == 6


def first_segment_lengths(config, n_rows=20000, L=20, seed=0):
    """Lengths of segments starting at slot 0 not cut by the newest transition (one long episode)."""
    scenario = fill(5000, 1, None, [[(5000, "open")]], obs_dim=1, action_dim=1)
    sampler = SequenceSampler(scenario.buffer, L, 1000, config)
    rng = np.random.default_rng(seed)
    lengths = []
    for _ in range(n_rows // 1000):
        batch = sampler.sample(rng)
        first_final = batch.final.argmax(axis=0)
        newest = batch.observations[first_final, np.arange(1000), 0] == 5000
        lengths.append((first_final + 1)[~newest])
    return np.concatenate(lengths)


def chi2_uniform(counts):
    """Pearson's statistic of counts against a uniform distribution. With 19 bins (18 degrees
    of freedom) P(chi2 > 45) < 0.001."""
    expected = counts.sum() / len(counts)
    return float(np.sum((counts - expected) ** 2 / expected))


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_segment_lengths_follow_the_mixture(p):
    L = 20
    lengths = first_segment_lengths(SamplingConfig(nominal_sequence_length_probability=p), L=L)
    n = len(lengths)
    assert abs(np.mean(lengths == L) - p) < 4 * np.sqrt(p * (1 - p) / n)
    short = lengths[lengths < L]
    assert chi2_uniform(np.bincount(short, minlength=L)[1:L]) < 45  # lengths 1..L-1, uniform


def test_segment_lengths_without_nominal_mixture_are_uniform_below_L():
    L = 20
    config = SamplingConfig(enable_nominal_sequence_length_probability=False)
    lengths = first_segment_lengths(config, L=L)
    assert lengths.min() >= 1 and lengths.max() <= L - 1
    assert chi2_uniform(np.bincount(lengths, minlength=L)[1:L]) < 45
    fixed = first_segment_lengths(SamplingConfig(random_seq_length=False), L=L)
    assert np.all(fixed == L)


def test_chapter_statistics_match_the_internals_estimate():
    """Internals 4.4 (derived): about 1.65 segments per row, 29% of segments of length 50."""
    n_episodes, T = 50, 2000
    scenario = fill(200000, 1, T, [[(T, "truncated")] * n_episodes], obs_dim=1, action_dim=1)
    sampler = SequenceSampler(scenario.buffer, 50, 1000, SamplingConfig())
    rng = np.random.default_rng(0)
    segments, full_length = 0, 0
    for _ in range(5):
        batch = sampler.sample(rng)
        segments += batch.n_segments.sum()
        # a length-50 segment fills the whole window: slot 0 to slot 49, no final step before
        full_length += np.sum((batch.final[:49].sum(axis=0) == 0) & (batch.final[49] == 1))
    assert abs(segments / 5000 - 1.65) < 0.05
    assert abs(full_length / segments - 0.29) < 0.03


def test_wraparound_never_crosses_the_write_position():
    # ids 1..25 into 10 slots: ids 16..25 remain, id 25 (ring index 4) is the newest, 16 the oldest.
    scenario = fill(10, 1, 10, [[(10, "truncated"), (10, "truncated"), (5, "open")]])
    buffer = scenario.buffer
    assert buffer.full[0] and buffer.position[0] == 5
    config = SamplingConfig(random_seq_length=False)
    sampler = SequenceSampler(buffer, 10, 4, config)
    rng = np.random.default_rng(0)
    for _ in range(50):
        batch = sampler.sample(rng)
        ids = batch.observations[:, :, 0]
        assert ids[ids == np.floor(ids)].min() >= 16
        assert np.all(batch.final[ids[:-1] == 25])  # the newest transition always ends its segment
        for b in range(4):
            check_window(scenario, batch, b, config)


def test_empty_stream_and_bad_arguments_raise():
    buffer = ReplayBuffer(10, 1, 1, n_streams=2, max_episode_length=5)
    sampler = SequenceSampler(buffer, 4, 2)
    with pytest.raises(ValueError, match="no transitions"):
        sampler.sample(np.random.default_rng(0))
    buffer.add(0, [0.0], [0.0], 0.0, [0.0], False, False)
    with pytest.raises(ValueError, match="stream 1 holds no transitions"):
        for _ in range(20):  # some row will pick the empty stream 1
            sampler.sample(np.random.default_rng(_))
    with pytest.raises(ValueError, match="sequence_length"):
        SequenceSampler(buffer, 11, 2)
    with pytest.raises(ValueError, match="always_sample_from_initial_state"):
        SequenceSampler(ReplayBuffer(10, 1, 1), 4, 2, SamplingConfig(always_sample_from_initial_state=True))
    with pytest.raises(ValueError, match="always_sample_from_initial_state"):
        SequenceSampler(ReplayBuffer(10, 1, 1, max_episode_length=10), 4, 2,
                        SamplingConfig(always_sample_from_initial_state=True))
    with pytest.raises(ValueError, match="uniforms"):
        sampler.sample_from_uniforms(np.full(sampler.uniforms.shape, 1.0))
    with pytest.raises(TypeError, match="config"):
        SequenceSampler(buffer, 4, 2, config={"random_seq_length": True})
    with pytest.raises(ValueError, match="nominal_sequence_length_probability"):
        SamplingConfig(nominal_sequence_length_probability=1.5)
    with pytest.raises(TypeError, match="random_seq_length"):
        SamplingConfig(random_seq_length=1)
    for kwargs, name in (({"capacity": 0}, "capacity"), ({"observation_dim": 0}, "observation_dim"),
                         ({"action_dim": 1.5}, "action_dim"), ({"n_streams": 0}, "n_streams"),
                         ({"max_episode_length": 0}, "max_episode_length")):
        arguments = {"capacity": 4, "observation_dim": 1, "action_dim": 1, **kwargs}
        with pytest.raises((ValueError, TypeError), match=name):
            ReplayBuffer(**arguments)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e300 does not fit a float32
def test_add_validates_without_writing():
    buffer = ReplayBuffer(4, 2, 1, max_episode_length=3)
    good = dict(observation=np.zeros(2), action=np.zeros(1), reward=0.0, next_observation=np.zeros(2),
                terminated=False, truncated=False)
    for bad, name in (({"observation": np.zeros(3)}, "observation"), ({"action": 0.0}, "action"),
                      ({"next_observation": [np.nan, 0]}, "next_observation"),
                      ({"observation": [0, np.inf]}, "observation"), ({"action": [np.nan]}, "action"),
                      ({"reward": np.nan}, "reward"), ({"reward": 1e300}, "reward"),
                      ({"observation": [1e300, 0.0]}, "observation")):
        with pytest.raises(ValueError, match=name):
            buffer.add(0, **{**good, **bad})
    with pytest.raises(ValueError, match="stream"):
        buffer.add(1, **good)
    assert len(buffer) == 0 and buffer.n_added[0] == 0
    for _ in range(3):
        buffer.add(0, **good)
    with pytest.raises(ValueError, match="max_episode_length"):
        buffer.add(0, **good)
    buffer.mark_episode_end(0)
    buffer.add(0, **good)
    assert buffer.episode_end[0].tolist() == [0, 0, 1, 0]
    assert buffer.episode_start[0].tolist() == [0, 0, 0, 3]


def test_episode_bookkeeping_across_the_wrap():
    buffer = ReplayBuffer(5, 1, 1, max_episode_length=4)
    flags = [False, True, False, False, False, True, False, False]  # episodes: 0-1, 2-5, 6-
    for t, truncated in enumerate(flags):
        buffer.add(0, [t], [0], 0, [t], terminated=t == 5, truncated=truncated)
    # ring slots now hold t = 5, 6, 7, 3, 4 (position 3)
    assert buffer.position[0] == 3 and buffer.full[0] == 1 and len(buffer) == 5
    assert buffer.observation[0, :, 0].tolist() == [5, 6, 7, 3, 4]
    assert buffer.episode_end[0].tolist() == [1, 0, 0, 0, 0]
    assert buffer.terminated[0].tolist() == [1, 0, 0, 0, 0]
    assert buffer.episode_start[0].tolist() == [2, 1, 1, 2, 2]  # t=5 started at ring 2 (t=2)
    assert buffer.newest_index(0) == 2


def test_state_dict_round_trip_keeps_samplers_valid():
    scenario = fill(30, 2, 10, [[(10, "truncated")] * 5, [(4, "terminated")] * 3])
    sampler = SequenceSampler(scenario.buffer, 6, 4)
    state = scenario.buffer.state_dict()
    expected = {k: v.copy() for k, v in vars(sampler.sample(np.random.default_rng(3))).items()
                if isinstance(v, np.ndarray)}
    other = fill(30, 2, 10, [[(3, "truncated")] * 2, [(2, "open")]])
    fresh_sampler = SequenceSampler(other.buffer, 6, 4)
    other.buffer.load_state_dict(state)  # in place: the existing sampler sees the new data
    batch = fresh_sampler.sample(np.random.default_rng(3))
    for name, array in expected.items():
        np.testing.assert_array_equal(getattr(batch, name), array, err_msg=name)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(31, 2, 2, n_streams=2, max_episode_length=10).load_state_dict(state)
