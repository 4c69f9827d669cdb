"""An independent oracle for the compiled SAC and TD3 updates (issue 11 section 6).

No setting may silently compute something other than its documentation. For every drawn
configuration (algorithm, window length 1..6, batch 1..3, every ``sampling`` flag, shared batch,
masking, entropy bonus and its step, termination handling, gamma, alpha and its adaptation, the
actor's entropy positions, RLtools' reset-ignoring critic backward, TD3's smoothing, log-std bounds,
network shapes, activations, gate mode, tau, threads) the test either asserts that ``Config.validate()`` refuses it,
or runs ONE compiled critic step (both critics) and ONE compiled actor step on a batch sampled from
a replay buffer, and recomputes, from the raw transitions and in float64:

* the batch's structure: every window's segments and padding slots are read back from the
  observations (which identify their transition) and checked against the sampling rules of
  ``memrl/replay.py``'s module docstring; the batch's masks must agree with them;
* per segment, from a zero state on batch size 1, with float64 copies of the networks: the next
  actions (SAC: the tanh-Gaussian head written out below with the noise rows the update used;
  TD3: the smoothed target actor), the min of the target critics, the Bellman target y at every
  segment-final step (``memrl/sac.py``, ``memrl/td3.py``; internals 3.3 and 5), the critic's Q
  and both critic losses; the actor loss (SAC: min of the critics at final steps plus the entropy
  term over the documented positions; TD3: critic 1) and alpha's gradient (the "entropy gap");
* the gradients the compiled steps applied (both critics', the actor's), against central finite
  differences of those recomputed losses along two random unit vectors and twelve random
  coordinates (with ``rltools_critic_backward_ignores_resets`` the actor's is the documented
  RLtools quirk, written out as a function below), and the Polyak steps of the targets.

Tolerances (float32 kernels against float64 recomputations): values (targets, losses, entropy
gap) ``rtol=1e-4, atol=1e-5``; a gradient g against the finite difference d along a unit vector
v: ``|g.v - d| <= 1e-5 |g| + 1e-6`` (over 2500 drawn cases the largest error relative to |g|
was 1.2e-6 |g|; the absolute term is float32's resolution of residuals Q - y of values up to ~10,
which a critic's bias gradient averages; the quirk's effect in the examples below is 19 (SAC)
and 80 (TD3) times the tolerance); Polyak steps ``rtol=1e-5, atol=1e-7``.

Only ``run_compiled_updates`` (first function below) calls the update engine.
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memrl.config import Config
from memrl.nn import Sequential
from memrl.replay import ReplayBuffer, SamplingConfig, SequenceSampler
from helpers import tanh_gaussian

RTOL, ATOL = 1e-4, 1e-5            # float32 update against float64 oracle: values
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-6  # gradient components (unit directions): relative to |g|, absolute
FD_STEP = 1e-6                     # central differences in float64
# RLtools' temperature gradient switch (merged from main); drawn and checked where Config has it.
HAS_RLTOOLS_ALPHA_GRADIENT = "rltools_alpha_gradient" in {f.name for f in dataclasses.fields(Config)}


# ================================================================================================
# The adapter: the only code in this file that calls memrl's update engine.
# ================================================================================================

def run_compiled_updates(cfg, observation_dim, action_dim, critic_batches, critic_noises, actor_batch,
                         actor_noise, *, seed, update_targets=False, edit=None):
    """Build the agent of ``cfg``, bind the compiled updates to these batches and noise arrays
    (as ``memrl.loop.Trainer`` does), and run one critic step (both critics) and one actor step.

    Parameters are the agent's initialisation from ``seed``, with every target network then moved
    away from its source by N(0, 0.1) noise (so the oracle sees which network is used where);
    ``edit(name, views)`` instead overwrites parameters through named views ("0.W", "1.b_hh", ...).

    Returns a dict: "before_critics", "before_actor", "after": {network name: (layer configs,
    float32 parameters)} before the critic step, before the actor step and at the end; "alpha"
    (what the updates used; 0 for TD3) and "alpha_after"; "targets": the two critic updates' y
    (L, B); "critic_losses"; "critic_grads" and "actor_grad" (the gradients the Adam steps used);
    "actor_loss"; "alpha_gradients": every gradient handed to alpha's optimiser.
    """
    from memrl.sac import SAC
    from memrl.td3 import TD3
    agent = (SAC if cfg.algorithm == "sac" else TD3)(cfg, observation_dim, action_dim, seed)
    nets = agent.networks()
    rng = np.random.default_rng(seed)
    for name, net in nets.items():
        if edit is not None:
            edit(name, net.named())
        elif name.startswith("target"):
            net.params += rng.normal(0.0, 0.1, net.size).astype(np.float32)

    def snapshot():
        return {name: (net.config(), net.params.copy()) for name, net in nets.items()}

    agent.bind(critic_batches, critic_noises, actor_batch, actor_noise)
    out = {"before_critics": snapshot(), "alpha": agent.alpha or 0.0}
    out["critic_losses"] = agent.update_critics(update_targets)
    out["targets"] = [update.targets for update in agent._critic_updates]
    out["critic_grads"] = [critic.grads.copy() for critic in agent.critics]
    out["before_actor"] = snapshot()
    alpha_gradients = []
    log_alpha = getattr(agent, "log_alpha", None)
    if log_alpha is not None:
        step = log_alpha.step
        log_alpha.step = lambda grad: (alpha_gradients.append(grad), step(grad))[1]
    out["actor_loss"] = agent.update_actor()
    out["actor_grad"] = agent.actor.grads.copy()
    out["alpha_gradients"] = alpha_gradients
    out["alpha_after"] = agent.alpha or 0.0
    out["after"] = snapshot()
    return out


# ================================================================================================
# Which configurations validate() must refuse
# ================================================================================================

def expected_verdict(cfg: Config) -> tuple[str, str]:
    """("refuse" | "either" | "accept", reason)."""
    if not cfg.log_std_min < cfg.log_std_max:
        return "refuse", "log_std_min >= log_std_max"
    if not cfg.mask_non_terminal:
        # Without masking the target nets run on fresh actions at every slot, i.e. on action
        # histories that never happened (RLtools static_asserts MASK_NON_TERMINAL).
        return "refuse", "mask_non_terminal=False"
    if cfg.entropy_bonus and not cfg.entropy_bonus_next_step and not cfg.sampling.include_first_step_in_targets:
        # The current step's bonus needs log pi(.|h_t); a target window without slot 0 has none
        # for t = 0 (and the kernel would read log pi at s' instead).
        if cfg.algorithm == "sac":
            return "refuse", "current-step entropy bonus without include_first_step_in_targets"
        return "either", "TD3 has no entropy term; refusing the SAC-only combination is harmless"
    return "accept", ""


# ================================================================================================
# Replay contents the oracle knows independently of the buffer
# ================================================================================================

OBS_ID = 3  # observation = [episode uid / 64, step / 8, next-observation flag, features...]


def encode(uid, step, flag, features):
    return np.concatenate([[uid / 64.0, step / 8.0, float(flag)], features]).astype(np.float32)


def decode(obs):
    return int(round(float(obs[0]) * 64)), int(round(float(obs[1]) * 8)), int(round(float(obs[2])))


@dataclass
class Transition:
    stream: int
    n: int            # how many transitions the stream held before this one
    uid: int          # episode id (unique over streams)
    step: int         # step in the episode
    obs: np.ndarray
    action: np.ndarray
    reward: np.float32
    next_obs: np.ndarray
    terminated: bool
    last: bool        # last transition of its episode


class Replay:
    """A ReplayBuffer filled with identifiable transitions, and the raw list of what went in."""

    def __init__(self, rng, n_streams, capacity, max_len, O, A, counts):
        self.capacity, self.max_len = capacity, max_len
        self.buffer = ReplayBuffer(capacity, O, A, n_streams, max_episode_length=max_len)
        self.streams: list[list[Transition]] = [[] for _ in range(n_streams)]
        self.by_id: dict[tuple[int, int], Transition] = {}
        uid = 0
        for stream, count in enumerate(counts):
            log = self.streams[stream]
            while len(log) < count:
                uid += 1
                length = int(rng.integers(1, max_len + 1))
                ends_terminated = bool(rng.random() < 0.5)
                for step in range(length):
                    if len(log) == count:
                        if rng.random() < 0.5:  # the loop ended the open episode
                            self.buffer.mark_episode_end(stream)
                            log[-1].last = True
                        break
                    end = step == length - 1
                    terminated = end and ends_terminated
                    action = rng.uniform(0.05, 1.0, A) * rng.choice([-1.0, 1.0], A)
                    tr = Transition(stream, len(log), uid, step, encode(uid, step, 0, rng.normal(size=O - OBS_ID)),
                                    action.astype(np.float32), np.float32(rng.normal()),
                                    encode(uid, step, 1, rng.normal(size=O - OBS_ID)), terminated, end)
                    # A terminated transition ends its episode whatever ``truncated`` says.
                    truncated = end and (not terminated or bool(rng.random() < 0.5))
                    self.buffer.add(stream, tr.obs, tr.action, float(tr.reward), tr.next_obs, terminated, truncated)
                    log.append(tr)
                    self.by_id[(uid, step)] = tr

    def n_added(self, stream):
        return len(self.streams[stream])

    def stored(self, tr):
        return tr.n >= self.n_added(tr.stream) - self.capacity

    def ring_index(self, tr):
        return tr.n % self.capacity

    def at_ring(self, stream, index):
        """The transition now stored at ring ``index`` of ``stream``."""
        n_added = self.n_added(stream)
        n = index + ((n_added - 1 - index) // self.capacity) * self.capacity if n_added > index else None
        assert n is not None and n >= 0, f"stream {stream}: ring index {index} was never written"
        return self.streams[stream][n]

    def newest(self, tr):
        return tr.n == self.n_added(tr.stream) - 1


# ================================================================================================
# Windows read back from the observations, checked against the documented sampling rules
# ================================================================================================

@dataclass
class Segment:
    slots: list[int]
    transitions: list[Transition]
    pad: int                          # its padding slot (<= L)


@dataclass
class Window:
    b: int
    stream: int
    segments: list[Segment]
    extra: Transition | None          # a segment started at slot L (no final step, no padding)
    obs: np.ndarray = field(default=None)      # (L+1, O) float64, from the raw transitions
    actions: np.ndarray = field(default=None)  # (L+1, A) float64, replayed actions (0 at padding)

    @property
    def pads(self):
        return [seg.pad for seg in self.segments]


def read_window(batch, b, replay, L):
    """The window of row b, from the observation ids alone; checks its contents against the raw log."""
    column = batch.observations[:, b, :]
    ids = [decode(o) for o in column]
    segments, extra, s = [], None, 0
    while s <= L:
        uid, step, flag = ids[s]
        assert flag == 0, f"row {b}, slot {s}: a padding slot where a segment must start"
        assert (uid, step) in replay.by_id, f"row {b}, slot {s}: unknown transition {(uid, step)}"
        if s == L:
            extra = replay.by_id[(uid, step)]
            break
        slots, trs = [s], [replay.by_id[(uid, step)]]
        s += 1
        while True:
            assert s <= L, f"row {b}: the segment from slot {slots[0]} has no padding slot"
            uid, step, flag = ids[s]
            if flag == 1:
                assert (uid, step) == (trs[-1].uid, trs[-1].step), \
                    f"row {b}, slot {s}: padding after {(trs[-1].uid, trs[-1].step)} holds {(uid, step)}"
                break
            assert (uid, step) == (trs[-1].uid, trs[-1].step + 1), \
                f"row {b}, slot {s}: {(uid, step)} does not continue {(trs[-1].uid, trs[-1].step)}"
            slots.append(s)
            trs.append(replay.by_id[(uid, step)])
            s += 1
        segments.append(Segment(slots, trs, s))
        s += 1
    everything = [tr for seg in segments for tr in seg.transitions] + ([extra] if extra else [])
    streams = {tr.stream for tr in everything}
    assert len(streams) == 1, f"row {b}: transitions from several streams {streams}"
    w = Window(b, streams.pop(), segments, extra)
    O, A = batch.observations.shape[2], batch.actions.shape[2]
    w.obs, w.actions = np.zeros((L + 1, O)), np.zeros((L + 1, A))
    for seg in segments:
        for slot, tr in zip(seg.slots, seg.transitions):
            w.obs[slot], w.actions[slot] = tr.obs, tr.action
        w.obs[seg.pad] = seg.transitions[-1].next_obs
    if extra is not None:
        w.obs[L], w.actions[L] = extra.obs, extra.action
    for tr in everything:
        assert replay.stored(tr), f"row {b}: transition {(tr.uid, tr.step)} was already overwritten"
    np.testing.assert_array_equal(batch.observations[:, b], w.obs.astype(np.float32), f"row {b}: observations")
    np.testing.assert_array_equal(batch.actions[:, b], w.actions.astype(np.float32), f"row {b}: actions")
    return w


def check_batch_masks(batch, windows, replay, L):
    """The batch's masks, rewards, flags and indices must be what its windows imply."""
    B = batch.batch_size
    want = {"reset": np.zeros((L, B), np.uint8), "final": np.zeros((L, B), np.uint8),
            "target_reset": np.zeros((L + 1, B), np.uint8), "padding": np.zeros((L + 1, B), np.uint8),
            "transition_index": np.zeros((L + 1, B), np.int64), "rewards": np.zeros((L, B), np.float32),
            "terminated": np.zeros((L, B), np.float32), "stream": np.zeros(B, np.int64),
            "n_segments": np.zeros(B, np.int64)}
    for w in windows:
        b = w.b
        want["stream"][b] = w.stream
        want["n_segments"][b] = len(w.segments)
        for seg in w.segments:
            want["reset"][seg.slots[0], b] = want["target_reset"][seg.slots[0], b] = 1
            want["final"][seg.slots[-1], b] = 1
            want["padding"][seg.pad, b] = 1
            if seg.pad < L:
                want["reset"][seg.pad, b] = 1
            for slot, tr in zip(seg.slots, seg.transitions):
                want["transition_index"][slot, b] = replay.ring_index(tr)
                want["rewards"][slot, b] = tr.reward
                want["terminated"][slot, b] = tr.terminated
            want["transition_index"][seg.pad, b] = replay.ring_index(seg.transitions[-1])
        if w.extra is not None:
            want["target_reset"][L, b] = 1
            want["transition_index"][L, b] = replay.ring_index(w.extra)
    for name, value in want.items():
        np.testing.assert_array_equal(getattr(batch, name), value, f"batch.{name}")
    first = 0 if batch.include_first_step_in_targets else 1
    assert batch.target_observations.shape[0] == L + 1 - first
    np.testing.assert_array_equal(batch.target_window_reset, want["target_reset"][first:], "batch.target_window_reset")
    np.testing.assert_array_equal(batch.target_window_padding, want["padding"][first:], "batch.target_window_padding")


def _uniform_index(u, n):
    return min(max(int(u * n), 0), n - 1)


def check_sampling_rules(w, replay, sampling, L, u):
    """Segment starts and ends of window ``w`` follow replay.py's rules for its uniforms ``u``
    (column layout and the uniform-to-integer map: ``memrl/_core/_sampling.pyx``)."""
    C, M = replay.capacity, replay.max_len
    n_added = replay.n_added(w.stream)
    full, position = n_added >= C, n_added % C
    assert w.stream == _uniform_index(u[0], len(replay.streams))
    eligible = (C - M if sampling.always_sample_from_initial_state else C) if full else position
    starts = [seg.transitions[0] for seg in w.segments] + ([w.extra] if w.extra is not None else [])
    for k, tr in enumerate(starts):
        offset = _uniform_index(u[3 + 3 * k], eligible)
        index = (position + M + offset) % C if full else offset
        expected = replay.at_ring(w.stream, index)
        if sampling.always_sample_from_initial_state:
            expected = replay.by_id[(expected.uid, 0)]
            assert replay.stored(expected), "an episode start was overwritten"
        assert tr is expected, f"row {w.b}: segment {k} starts at {(tr.uid, tr.step)}, the rules give " \
                               f"{(expected.uid, expected.step)}"

    def drawn_length(coin, x):
        if L == 1:
            return 1
        if sampling.enable_nominal_sequence_length_probability and coin < sampling.nominal_sequence_length_probability:
            return L
        return 1 + _uniform_index(x, L - 1)

    length = drawn_length(u[1], u[2]) if sampling.random_seq_length else L
    counter = 0
    for k, seg in enumerate(w.segments):
        for j, (slot, tr) in enumerate(zip(seg.slots, seg.transitions)):
            cut = tr.last or replay.newest(tr) or slot == L - 1
            if sampling.random_seq_length:
                if counter == length - 1:
                    cut = True
                    length = drawn_length(u[4 + 3 * k], u[5 + 3 * k])
                counter = 0 if cut else counter + 1
            ends = j == len(seg.slots) - 1
            assert cut == ends, f"row {w.b}, slot {slot}: the segment {'ends' if ends else 'continues'} " \
                                "against the sampling rules"


# ================================================================================================
# The oracle: float64 recomputations from the raw transitions, per segment, from zero states
# ================================================================================================

class Nets64:
    """float64 copies of a snapshot's networks; ``run`` one sequence (T, I) from a zero state."""

    def __init__(self, snapshot):
        self.nets = {}
        for name, (config, params) in snapshot.items():
            net = Sequential.from_config(config, dtype=np.float64, seed=None)
            net.params[:] = params
            self.nets[name] = net

    def run(self, name, x):
        x = np.ascontiguousarray(np.asarray(x, np.float64)[:, None, :])
        return self.nets[name].forward(x).reshape(x.shape[0], -1).copy()

    def params(self, name):
        return self.nets[name].params


def smoothed(pre, eps, sigma, clip):
    """TD3's target actions clip(tanh(pre) + clip(sigma eps, -c, c), -1, 1)."""
    return np.clip(np.tanh(pre) + np.clip(sigma * eps, -clip, clip), -1.0, 1.0)


def oracle_critic(cfg, nets, windows, noise, B, critic):
    """Bellman targets {(t, b): y} at the segment-final steps, critic ``critic``'s {(t, b): Q},
    and its loss 1/(2 N_f) sum (Q - y)^2."""
    first = 0 if cfg.sampling.include_first_step_in_targets else 1
    sac = cfg.algorithm == "sac"
    alpha = cfg.alpha
    y, q = {}, {}
    for w in windows:
        for seg in w.segments:
            t = seg.slots[-1]
            tr = seg.transitions[-1]
            # The target nets' history: the segment and its padding slot, from the segment's start
            # (or slot 1 when the target window leaves out slot 0), from a zero state.
            hist = [s for s in seg.slots + [seg.pad] if s >= first]
            eps = np.array([noise[(s - first) * B + w.b] for s in hist], np.float64)
            obs = w.obs[hist]
            if sac:
                fresh, logp = tanh_gaussian(nets.run("actor", obs), eps, cfg.log_std_min, cfg.log_std_max)
            else:
                fresh = smoothed(nets.run("target_actor", obs), eps, cfg.target_policy_noise, cfg.target_noise_clip)
            actions = w.actions[hist].copy()
            actions[-1] = fresh[-1]  # replayed actions except at the padding slot
            x = np.concatenate([obs, actions], axis=1)
            q_next = min(nets.run("target_critic_0", x)[-1, 0], nets.run("target_critic_1", x)[-1, 0])
            bootstrap = q_next
            if sac and cfg.entropy_bonus and cfg.entropy_bonus_next_step:
                bootstrap -= alpha * logp[-1]
            keep = 1.0 if cfg.ignore_termination else 1.0 - float(tr.terminated)
            target = float(tr.reward) + cfg.gamma * keep * bootstrap
            if sac and cfg.entropy_bonus and not cfg.entropy_bonus_next_step:
                assert t >= first, "a current-step bonus needs slot t in the target window"
                target -= alpha * logp[hist.index(t)]
            y[(t, w.b)] = target
            xq = np.concatenate([w.obs[seg.slots], w.actions[seg.slots]], axis=1)
            q[(t, w.b)] = nets.run(critic, xq)[-1, 0]
    loss = sum((q[k] - y[k]) ** 2 for k in y) / (2 * len(y))
    return y, q, loss


# -- RLtools' reset-ignoring critic backward, written as a function whose gradient it is ---------
#
# With ``rltools_critic_backward_ignores_resets`` the critics' backward (for the actor's gradient)
# treats each window column as one continuous sequence (internals 3.4 item 4, 1.4): at a reset
# step t the GRU's forward started from h_prev = 0, but the backward uses the stored h_{t-1} as
# h_prev (in the z-gate term) and passes gradient on to step t-1. That is exactly the gradient of
#     h_t = (1 - z) n + z (h_{t-1} - c) + (z - z0) c,   gates computed from h_prev = h_{t-1} - c,
# with constants c = h_{t-1} and z0 = z frozen at the current parameters: its value there is the
# reset forward's, and d h_t / d z = h_{t-1} - n, d h_t / d h_{t-1} as for a continuous sequence.

_ACT = {"identity": lambda v: v, "relu": lambda v: np.maximum(v, 0.0), "tanh": np.tanh,
        "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}


def _pade_tanh(v):
    v = np.clip(v, -3.0, 3.0)
    return v * (27 + v * v) / (27 + 9 * v * v)


_ACT["fast_tanh"] = _pade_tanh
_ACT["fast_sigmoid"] = lambda v: 0.5 * _pade_tanh(0.5 * v) + 0.5


def column_forward(config, params, x, reset, frozen):
    """A Dense/GRU stack on one column x (T, I) in NumPy, float64, with ``reset`` (T,) restarts.

    ``frozen`` is None (record) or the {(layer, t): (c, z0)} of a recording run: at reset steps
    t > 0 the GRUs follow the quirk function above.
    """
    record = {} if frozen is None else None
    offset, h_seq = 0, np.asarray(x, np.float64)
    for i, layer in enumerate(config):
        if layer["type"] == "dense":
            n_in, n_out = layer["in_dim"], layer["out_dim"]
            W = params[offset:offset + n_out * n_in].reshape(n_out, n_in)
            b = params[offset + n_out * n_in:offset + n_out * n_in + n_out]
            offset += n_out * n_in + n_out
            h_seq = _ACT[layer["activation"]](h_seq @ W.T + b)
            continue
        n_in, H = layer["in_dim"], layer["hidden_dim"]
        sizes = (3 * H * n_in, 3 * H * H, 3 * H, 3 * H)
        W_ih, W_hh, b_ih, b_hh = (params[o:o + s] for o, s in zip(np.cumsum((offset,) + sizes[:-1]), sizes))
        W_ih, W_hh = W_ih.reshape(3 * H, n_in), W_hh.reshape(3 * H, H)
        offset += sum(sizes)
        fast = layer["gates"] == "fast"
        sig = _ACT["fast_sigmoid"] if fast else _ACT["sigmoid"]
        tanh = _pade_tanh if fast else np.tanh
        out, h = [], np.zeros(H)
        for t in range(h_seq.shape[0]):
            quirk = t > 0 and reset[t]
            if quirk:
                c, z0 = (h.copy(), None) if record is not None else frozen[(i, t)]
                h_prev = h - c
            else:
                h_prev = h if t > 0 else np.zeros(H)
            gi, gh = W_ih @ h_seq[t] + b_ih, W_hh @ h_prev + b_hh
            r, z = sig(gi[:H] + gh[:H]), sig(gi[H:2 * H] + gh[H:2 * H])
            n = tanh(gi[2 * H:] + r * gh[2 * H:])
            if quirk and record is not None:
                z0 = z.copy()
                record[(i, t)] = (c, z0)
            h = (1 - z) * n + z * h_prev + ((z - z0) * c if quirk else 0.0)
            out.append(h)
        h_seq = np.array(out)
    assert offset == params.size
    return h_seq, record


def oracle_actor(cfg, nets, windows, noise, B, L, A, quirk=None):
    """Actor loss and entropy gap (SAC) recomputed per segment; with ``quirk`` ({critic name: {b:
    frozen}}) the critics' Q at final steps come from the quirk function over whole columns."""
    sac = cfg.algorithm == "sac"
    critics = ["critic_0", "critic_1"] if sac else ["critic_0"]
    alpha = cfg.alpha
    q_final, logp_all, logp_final = [], {}, []
    for w in windows:
        fresh_at = {}
        for seg in w.segments:
            obs = w.obs[seg.slots]
            eps = np.array([noise[s * B + w.b] for s in seg.slots], np.float64)
            pre = nets.run("actor", obs)
            if sac:
                a, logp = tanh_gaussian(pre, eps, cfg.log_std_min, cfg.log_std_max)
                logp_all.update({(s, w.b): lp for s, lp in zip(seg.slots, logp)})
                logp_final.append(logp[-1])
            else:
                a = np.tanh(pre)
            fresh_at[seg.slots[-1]] = a[-1]
            if quirk is None:
                actions = w.actions[seg.slots].copy()
                actions[-1] = a[-1]  # the fresh action at the final step, replayed ones before it
                x = np.concatenate([obs, actions], axis=1)
                q_final.append(min(nets.run(c, x)[-1, 0] for c in critics))
        if sac:  # padding slots inside the window: one-step histories (the online nets reset there)
            for pad in w.pads:
                if pad < L:
                    eps = noise[[pad * B + w.b]].astype(np.float64)
                    _, logp = tanh_gaussian(nets.run("actor", w.obs[[pad]]), eps, cfg.log_std_min, cfg.log_std_max)
                    logp_all[(pad, w.b)] = logp[0]
        if quirk is not None:
            actions = w.actions[:L].copy()
            for s, a in fresh_at.items():
                actions[s] = a
            x = np.concatenate([w.obs[:L], actions], axis=1)
            reset = np.zeros(L, bool)
            for seg in w.segments:
                reset[seg.slots[0]] = True
                if seg.pad < L:
                    reset[seg.pad] = True
            qs = [column_forward(nets.nets[c].config(), nets.params(c), x, reset, quirk[c][w.b])[0][:, 0]
                  for c in critics]
            q_final += [min(q[seg.slots[-1]] for q in qs) for seg in w.segments]
    loss = -sum(q_final) / len(q_final)
    if not sac:
        return loss, 0.0
    assert len(logp_all) == L * B, "every window slot is a segment step or a padding slot"
    mean_logp = (sum(logp_all.values()) / (L * B) if cfg.actor_entropy_positions == "all"
                 else sum(logp_final) / len(logp_final))
    target_entropy = -A if cfg.target_entropy is None else cfg.target_entropy
    return loss + alpha * mean_logp, -mean_logp - target_entropy


def record_quirk(cfg, nets, windows, noise, B, L):
    """The frozen constants of the quirk function at the current parameters, per critic and row."""
    critics = ["critic_0", "critic_1"] if cfg.algorithm == "sac" else ["critic_0"]
    out = {c: {} for c in critics}
    for w in windows:
        actions = w.actions[:L].copy()
        for seg in w.segments:  # the fresh final actions at the current parameters
            pre = nets.run("actor", w.obs[seg.slots])
            if cfg.algorithm == "sac":
                eps = np.array([noise[s * B + w.b] for s in seg.slots], np.float64)
                a, _ = tanh_gaussian(pre, eps, cfg.log_std_min, cfg.log_std_max)
            else:
                a = np.tanh(pre)
            actions[seg.slots[-1]] = a[-1]
        x = np.concatenate([w.obs[:L], actions], axis=1)
        reset = np.zeros(L, bool)
        for seg in w.segments:
            reset[seg.slots[0]] = True
            if seg.pad < L:
                reset[seg.pad] = True
        for c in critics:
            q, frozen = column_forward(nets.nets[c].config(), nets.params(c), x, reset, None)
            out[c][w.b] = frozen
            for seg in w.segments:  # at the current parameters it is the reset forward
                xs = x[seg.slots[0]:seg.slots[-1] + 1]
                np.testing.assert_allclose(q[seg.slots[-1], 0], nets.run(c, xs)[-1, 0], rtol=1e-12, atol=1e-12)
    return out


def finite_differences(f, params, rng, n_directions=2, n_coordinates=12):
    """Central differences of f along random unit vectors and along random coordinates:
    [(v, (f(p + h v) - f(p - h v)) / 2h)]; ``params`` (which f reads) is restored."""
    p0 = params.copy()
    directions = [v / np.linalg.norm(v) for v in rng.normal(size=(n_directions, p0.size))]
    n_coordinates = p0.size if n_coordinates is None else min(n_coordinates, p0.size)
    for i in rng.choice(p0.size, n_coordinates, replace=False):
        directions.append(np.eye(1, p0.size, i)[0])
    out = []
    for v in directions:
        params[:] = p0 + FD_STEP * v
        up = f()
        params[:] = p0 - FD_STEP * v
        down = f()
        out.append((v, (up - down) / (2 * FD_STEP)))
    params[:] = p0
    return out


def assert_gradient(grad, derivatives, what):
    grad = np.asarray(grad, np.float64)
    tol = GRAD_RTOL * np.linalg.norm(grad) + GRAD_ATOL
    for v, d in derivatives:
        assert abs(grad @ v - d) <= tol, f"{what}: g.v = {grad @ v!r}, finite difference {d!r} (tolerance {tol:.2e})"


def assert_value(got, want, what):
    assert math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL), f"{what}: compiled {got!r}, oracle {want!r}"


# ================================================================================================
# One case, end to end
# ================================================================================================

@dataclass
class Case:
    config: Config
    seed: int
    n_streams: int
    max_len: int
    capacity: int
    counts: list[int]
    O: int
    A: int
    update_targets: bool


def run_case(case: Case, n_coordinates=12):
    """validate() refuses the configuration, or the compiled updates equal the oracle's."""
    cfg = case.config
    verdict, reason = expected_verdict(cfg)
    try:
        cfg.validate()
        refusal = None
    except (ValueError, TypeError) as exc:
        refusal = exc
    if verdict == "refuse":
        assert refusal is not None, f"validate() accepted a configuration it must refuse ({reason})"
        return None
    if refusal is not None:
        assert verdict == "either", f"validate() refused a documented configuration: {refusal}"
        return None

    L, B, O, A = cfg.sequence_length, cfg.batch_size, case.O, case.A
    rng = np.random.default_rng(case.seed)
    replay = Replay(rng, case.n_streams, case.capacity, case.max_len, O, A, case.counts)
    samplers = [SequenceSampler(replay.buffer, L, B, cfg.sampling) for _ in range(1 if cfg.shared_batch else 3)]
    batches, windows = [], []
    for sampler in samplers:
        batch = sampler.sample(rng)
        rows = [read_window(batch, b, replay, L) for b in range(B)]
        for w in rows:
            check_sampling_rules(w, replay, cfg.sampling, L, sampler.uniforms[w.b])
        check_batch_masks(batch, rows, replay, L)
        batches.append(batch)
        windows.append(rows)
    Lt = L + (1 if cfg.sampling.include_first_step_in_targets else 0)
    noise = [(1.5 * rng.standard_normal((Lt * B, A))).astype(np.float32) for _ in range(2)]
    actor_noise = (1.5 * rng.standard_normal((L * B, A))).astype(np.float32)
    shared = cfg.shared_batch
    critic_batches = [batches[0]] * 2 if shared else batches[:2]
    critic_windows = [windows[0]] * 2 if shared else windows[:2]
    critic_noises = [noise[0]] * 2 if shared else noise
    actor_windows = windows[0 if shared else 2]

    run = run_compiled_updates(cfg, O, A, critic_batches, critic_noises, batches[0 if shared else 2], actor_noise,
                               seed=case.seed, update_targets=case.update_targets)
    fd_rng = np.random.default_rng(case.seed + 1)
    sac = cfg.algorithm == "sac"
    assert run["alpha"] == pytest.approx(cfg.alpha if sac else 0.0, rel=1e-12)

    # -- critics: targets at the loss steps, losses, gradients ---------------------------------
    nets = Nets64(run["before_critics"])
    for i in range(2):
        y, q, loss = oracle_critic(cfg, nets, critic_windows[i], critic_noises[i], B, f"critic_{i}")
        for (t, b), value in y.items():
            assert_value(float(run["targets"][i][t, b]), value, f"critic {i}: y[{t}, {b}]")
        assert_value(run["critic_losses"][i], loss, f"critic {i}: loss")
        params = nets.params(f"critic_{i}")

        def critic_loss(i=i, y=y):
            q_now = {k: nets.run(f"critic_{i}", np.concatenate([w.obs[s.slots], w.actions[s.slots]], axis=1))[-1, 0]
                     for w in critic_windows[i] for s in w.segments for k in [(s.slots[-1], w.b)]}
            return sum((q_now[k] - y[k]) ** 2 for k in y) / (2 * len(y))

        assert_gradient(run["critic_grads"][i], finite_differences(critic_loss, params, fd_rng),
                        f"critic {i}: gradient")
    before, middle = run["before_critics"], run["before_actor"]
    for i in range(2):
        target_before, target_after = before[f"target_critic_{i}"][1], middle[f"target_critic_{i}"][1]
        if case.update_targets:
            np.testing.assert_allclose(target_after, (1 - cfg.tau) * target_before.astype(np.float64)
                                       + cfg.tau * middle[f"critic_{i}"][1], rtol=1e-5, atol=1e-7)
        else:
            np.testing.assert_array_equal(target_after, target_before)

    # -- actor: loss, entropy gap (alpha's gradient), gradient, target actor ---------------------
    nets = Nets64(run["before_actor"])
    loss, gap = oracle_actor(cfg, nets, actor_windows, actor_noise, B, L, A)
    assert_value(run["actor_loss"], loss, "actor loss")
    if sac and cfg.adaptive_alpha:
        alpha_gradient = gap  # d/d log(alpha) = mean_E (H_i - target_entropy), H_i = -log pi_i
        if getattr(cfg, "rltools_alpha_gradient", False):
            # RLtools: alpha * sum_E (H_i - target_entropy) / N_r, N_r = reset flags in the actor batch
            # (slot 0, segment starts and padding slots inside the windows).
            n_resets = sum(len(w.segments) + sum(pad < L for pad in w.pads) for w in actor_windows)
            n_final = sum(len(w.segments) for w in actor_windows)
            alpha_gradient = cfg.alpha * (L * B if cfg.actor_entropy_positions == "all" else n_final) * gap / n_resets
        assert len(run["alpha_gradients"]) == 1, run["alpha_gradients"]
        assert_value(run["alpha_gradients"][0], alpha_gradient, "alpha gradient")
        if abs(gap) > 1e-3:
            assert (run["alpha_after"] < cfg.alpha) == (gap > 0), "alpha moved against its gradient"
    else:
        assert run["alpha_gradients"] == []
        assert run["alpha_after"] == pytest.approx(cfg.alpha if sac else 0.0, rel=1e-12)
    quirk = None
    if cfg.rltools_critic_backward_ignores_resets:
        quirk = record_quirk(cfg, nets, actor_windows, actor_noise, B, L)
    derivatives = finite_differences(lambda: oracle_actor(cfg, nets, actor_windows, actor_noise, B, L, A, quirk)[0],
                                    nets.params("actor"), fd_rng, n_coordinates=n_coordinates)
    assert_gradient(run["actor_grad"], derivatives, "actor gradient" + (" (RLtools quirk)" if quirk else ""))
    if not sac:
        np.testing.assert_allclose(run["after"]["target_actor"][1], (1 - cfg.tau) * middle["target_actor"][1].astype(
            np.float64) + cfg.tau * run["after"]["actor"][1], rtol=1e-5, atol=1e-7)
    return run, derivatives


# ================================================================================================
# The property
# ================================================================================================

def _weighted(true_weight):
    return st.sampled_from([True] * true_weight + [False])


@st.composite
def cases(draw):
    L = draw(st.integers(1, 6))
    recurrent = L > 1
    max_len = draw(st.integers(1, 6))
    capacity = draw(st.integers(max(L, max_len + 1), max(L, max_len + 1) + 12))
    n_streams = draw(st.integers(1, 2))
    sampling = SamplingConfig(
        include_first_step_in_targets=draw(st.booleans()),
        always_sample_from_initial_state=draw(st.booleans()),
        random_seq_length=draw(st.booleans()),
        enable_nominal_sequence_length_probability=draw(st.booleans()),
        nominal_sequence_length_probability=draw(st.sampled_from([0.0, 1.0]) | st.floats(0.0, 1.0)))
    log_std = draw(st.sampled_from([(-20.0, 2.0), (-20.0, 2.0), (-1.0, 0.3), (-0.4, -0.1), (0.5, -0.5)]))
    layers = (3, 5) if recurrent else (2, 3)
    n_actor, n_critic = draw(st.integers(*layers)), draw(st.integers(*layers))
    # None: RLtools' stacks; else that many GRUs with Dense layers after them (e.g. an MLP head)
    gru_layers = draw(st.none() | st.integers(1, min(n_actor, n_critic) - 2)) if recurrent else None
    config = Config(
        algorithm=draw(st.sampled_from(["sac", "td3"])), sequence_length=L, batch_size=draw(st.integers(1, 3)),
        sampling=sampling, shared_batch=draw(st.booleans()), mask_non_terminal=draw(_weighted(4)),
        entropy_bonus=draw(st.booleans()), entropy_bonus_next_step=draw(st.booleans()),
        ignore_termination=draw(st.booleans()), gamma=draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])),
        alpha=draw(st.sampled_from([0.05, 0.5, 1.7])), adaptive_alpha=draw(st.booleans()),
        target_entropy=draw(st.sampled_from([None, -4.0, 1.5])),
        actor_entropy_positions=draw(st.sampled_from(["all", "final"])),
        rltools_critic_backward_ignores_resets=draw(st.booleans()),
        target_policy_noise=draw(st.sampled_from([0.0, 0.2, 0.7])),
        target_noise_clip=draw(st.sampled_from([0.0, 0.1, 0.5, 2.0])),
        log_std_min=log_std[0], log_std_max=log_std[1],
        actor_hidden_dim=draw(st.integers(2, 4)), critic_hidden_dim=draw(st.integers(2, 4)),
        actor_num_layers=n_actor, critic_num_layers=n_critic, gru_layers=gru_layers,
        actor_activation=draw(st.sampled_from(["tanh", "fast_tanh", "sigmoid"])),
        critic_activation=draw(st.sampled_from(["tanh", "fast_tanh", "sigmoid"])),
        gru_gates=draw(st.sampled_from(["exact", "fast"])), threads=draw(st.sampled_from([1, 2])),
        tau=draw(st.sampled_from([0.005, 0.25])), total_steps=1000, replay_capacity=capacity,
        **({"rltools_alpha_gradient": draw(st.booleans())} if HAS_RLTOOLS_ALPHA_GRADIENT else {}))
    counts = [draw(st.integers(1, 2 * capacity + 3)) for _ in range(n_streams)]
    return Case(config, draw(st.integers(0, 2**31 - 1)), n_streams, max_len, capacity, counts,
                O=OBS_ID + draw(st.integers(0, 2)), A=draw(st.integers(1, 2)), update_targets=draw(st.booleans()))


@settings(max_examples=10 * settings().max_examples, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_compiled_updates_compute_what_the_documentation_says(case):
    run_case(case)


# ================================================================================================
# Explicit examples (issue 11 section 6 and every fix)
# ================================================================================================

def one_transition_batch(terminated, include_first, O=1, A=1):
    """One transition s = [0] -> s' = [1] with reward 1, action 0.5, sampled as an L=1, B=1 window."""
    buffer = ReplayBuffer(4, O, A, 1, max_episode_length=2)
    buffer.add(0, np.zeros(O, np.float32), np.full(A, 0.5, np.float32), 1.0, np.ones(O, np.float32),
               terminated, True)
    sampler = SequenceSampler(buffer, 1, 1, SamplingConfig(include_first_step_in_targets=include_first,
                                                           random_seq_length=False))
    return sampler.sample(np.random.default_rng(0))


def feed_forward_example(**changes):
    return Config(sequence_length=1, batch_size=1, gamma=0.5, alpha=0.7, actor_num_layers=2, critic_num_layers=2,
                  actor_hidden_dim=2, critic_hidden_dim=2, total_steps=100).replace(**changes)


def known_networks(name, views):
    """Actor: h = tanh(x), mean = h, log-std = -1 + h / 2 (so log pi differs between s = 0 and s' = 1).
    Target critics: the constants 2 and 3 (min 2)."""
    for v in views.values():
        v[...] = 0
    if name == "actor":
        views["0.W"][0, 0] = 1.0
        views["1.W"][0, 0], views["1.W"][1, 0], views["1.b"][1] = 1.0, 0.5, -1.0
    if name == "target_critic_0":
        views["1.b"][0] = 2.0
    if name == "target_critic_1":
        views["1.b"][0] = 3.0


# log pi of the actor above with zero noise: -ln(2 pi)/2 - l - ln(1 - tanh(mean)^2 + 1e-6)
LOGP_S = -0.5 * math.log(2 * math.pi) + 1.0 - math.log(1.0 + 1e-6)        # s = 0: mean 0, l = -1
_h = math.tanh(1.0)
LOGP_S_NEXT = -0.5 * math.log(2 * math.pi) - (-1.0 + 0.5 * _h) - math.log(1.0 - math.tanh(_h) ** 2 + 1e-6)


def test_feed_forward_current_step_bonus_uses_the_current_observation():
    """Issue 11: one terminated transition, r = 1, gamma 0.5: y = 1 - alpha log pi(.|s)."""
    assert LOGP_S == pytest.approx(0.0810604668, abs=1e-9)
    assert LOGP_S_NEXT == pytest.approx(0.2316027169, abs=1e-9)  # what the bug read (s')
    cfg = feed_forward_example(entropy_bonus_next_step=False,
                               sampling=SamplingConfig(include_first_step_in_targets=True, random_seq_length=False))
    cfg.validate()
    batch = one_transition_batch(terminated=True, include_first=True)
    noise = np.zeros((2, 1), np.float32)
    run = run_compiled_updates(cfg, 1, 1, [batch, batch], [noise, noise], batch, np.zeros((1, 1), np.float32),
                               seed=0, edit=known_networks)
    for y in run["targets"]:
        assert float(y[0, 0]) == pytest.approx(0.9432576732, abs=1e-6)   # 1 - 0.7 * 0.0810604668
        assert float(y[0, 0]) != pytest.approx(1 - 0.7 * LOGP_S_NEXT, abs=1e-3)


def test_feed_forward_current_step_bonus_without_the_first_step_is_refused():
    """The reported setting: its target window holds only s', so no log pi(.|s) exists."""
    for L in (1, 3):
        sampling = SamplingConfig(include_first_step_in_targets=False, random_seq_length=False)
        cfg = feed_forward_example(entropy_bonus_next_step=False, sequence_length=L, actor_num_layers=2 + (L > 1),
                                   critic_num_layers=2 + (L > 1), sampling=sampling)
        with pytest.raises(ValueError, match="entropy_bonus_next_step"):
            cfg.validate()


@pytest.mark.parametrize("include_first", [False, True])
def test_feed_forward_next_step_bonus_bootstraps_from_the_next_observation(include_first):
    """y = r + gamma (min Q'(s', a') - alpha log pi(a'|s')) = 1 + 0.5 (2 - 0.7 log pi(.|s'))."""
    cfg = feed_forward_example(entropy_bonus_next_step=True,
                               sampling=SamplingConfig(include_first_step_in_targets=include_first,
                                                       random_seq_length=False))
    cfg.validate()
    batch = one_transition_batch(terminated=False, include_first=include_first)
    noise = np.zeros((1 + include_first, 1), np.float32)
    run = run_compiled_updates(cfg, 1, 1, [batch, batch], [noise, noise], batch, np.zeros((1, 1), np.float32),
                               seed=0, edit=known_networks)
    for y in run["targets"]:
        assert float(y[0, 0]) == pytest.approx(1.9189390491, abs=1e-6)   # 1 + 0.5 (2 - 0.7 * 0.2316027169)


def test_unmasked_targets_are_refused():
    """Issue 11: L = 4, B = 1, one 4-step segment, executed actions 0.5, gamma 0.9: without masking,
    the policy noise at slot 0 changes all four targets (they bootstrap through fresh actions
    that were never executed). RLtools static_asserts MASK_NON_TERMINAL; so must validate()."""
    for algorithm in ("sac", "td3"):
        cfg = Config(algorithm=algorithm, sequence_length=4, batch_size=1, gamma=0.9, mask_non_terminal=False,
                     total_steps=100)
        with pytest.raises(ValueError, match="mask_non_terminal"):
            cfg.validate()


def chapter_like_case(**changes):
    """A recurrent SAC case with several segments per window (random lengths) and a wrapped ring."""
    sampling = SamplingConfig(include_first_step_in_targets=True, random_seq_length=True,
                              enable_nominal_sequence_length_probability=False)
    cfg = Config(sequence_length=6, batch_size=3, sampling=sampling, gamma=0.9, alpha=0.5, tau=0.25,
                 actor_hidden_dim=3, critic_hidden_dim=3, total_steps=1000, replay_capacity=20, gru_gates="fast")
    cfg = cfg.replace(**changes)
    return Case(cfg, seed=11, n_streams=2, max_len=6, capacity=20, counts=[37, 25], O=4, A=2, update_targets=True)


def _coordinates(derivatives):
    """The full finite-difference gradient from the one-hot directions of ``finite_differences``."""
    grad = np.zeros(derivatives[0][0].size)
    for v, d in derivatives:
        if np.count_nonzero(v) == 1:
            grad[np.flatnonzero(v)[0]] = d
    return grad


@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_rltools_quirk_gradient_is_the_documented_one(algorithm):
    """Every component of the actor's gradient follows the quirk function with the switch and the
    true gradient without it; on this batch the two differ by far more than the tolerance."""
    case = chapter_like_case(algorithm=algorithm, alpha=0.05, rltools_critic_backward_ignores_resets=True)
    run, quirky = run_case(case, n_coordinates=None)
    cfg = case.config.replace(rltools_critic_backward_ignores_resets=False)
    _, true = run_case(Case(**{**case.__dict__, "config": cfg}), n_coordinates=None)
    tolerance = GRAD_RTOL * np.linalg.norm(run["actor_grad"]) + GRAD_ATOL
    assert np.abs(_coordinates(quirky) - _coordinates(true)).max() > 10 * tolerance, \
        "the example must make the quirk matter"


@pytest.mark.parametrize("changes", [
    dict(),
    dict(entropy_bonus_next_step=True, sampling=SamplingConfig(include_first_step_in_targets=False)),
    dict(actor_entropy_positions="final", adaptive_alpha=False, ignore_termination=True),
    dict(shared_batch=True, threads=1, log_std_min=-0.4, log_std_max=-0.1),
    dict(algorithm="td3", target_policy_noise=0.7, target_noise_clip=0.1),
    dict(sampling=SamplingConfig(always_sample_from_initial_state=True)),
    pytest.param(dict(rltools_alpha_gradient=True, actor_entropy_positions="final"),
                 marks=pytest.mark.skipif(not HAS_RLTOOLS_ALPHA_GRADIENT, reason="no rltools_alpha_gradient yet")),
])
def test_recurrent_examples(changes):
    run_case(chapter_like_case(**changes))
