"""The fused updates' two-thread pool: results never depend on threads, every pair goes through
the pool, busy cores make it back off, and it survives concurrent callers and fork()."""
import json
import os
import textwrap
import threading

import numpy as np
import pytest

from memrl._core import _pool as _sac
from memrl.config import preset
from memrl.loop import Trainer
from helpers import run_python

MEMORY = dict(total_steps=260, n_warmup_steps=80, n_warmup_steps_critic=80, n_warmup_steps_actor=160,
              environment_kwargs={"horizon": 10, "input_probability": None, "episode_step_limit": 120,
                                  "mode": "count_input"})
PENDULUM = dict(total_steps=300, n_warmup_steps=100, n_warmup_steps_critic=100, n_warmup_steps_actor=100,
                batch_size=32)
CASES = [("memory-chapter", MEMORY), ("memory-chapter-td3", MEMORY), ("pendulum-sac", PENDULUM),
         ("pendulum-td3", PENDULUM)]


@pytest.fixture
def pool():
    """Restores the pool's settings after a test that changes them."""
    saved = _sac.pool_settings()
    yield
    _sac.pool_settings(**saved)


def run(name, changes, threads, seed=3):
    trainer = Trainer(preset(name).replace(**changes, threads=threads), seed=seed)
    while not trainer.step():
        pass
    return trainer


def assert_same_networks(a, b):
    for name, net in a.agent.networks().items():
        other = b.agent.networks()[name]
        np.testing.assert_array_equal(net.params, other.params, err_msg=name)
        np.testing.assert_array_equal(net.adam_m, other.adam_m, err_msg=name)
        np.testing.assert_array_equal(net.adam_v, other.adam_v, err_msg=name)
    assert a.agent.alpha == b.agent.alpha


def pairs_of(trainer):
    """Pairs a run offers the pool: per critic step its gradients and its Adam steps; per SAC
    actor step its two critic passes forward and backward (TD3's actor uses one critic)."""
    cfg = trainer.config
    steps = range(cfg.total_steps)
    critic = sum(s >= cfg.n_warmup_steps_critic and s % cfg.critic_training_interval == 0 for s in steps)
    actor = sum(s >= cfg.n_warmup_steps_actor and s % cfg.actor_training_interval == 0 for s in steps)
    return 2 * critic + (2 * actor if cfg.algorithm == "sac" else 0)


@pytest.mark.parametrize("name,changes", CASES)
@pytest.mark.parametrize("policy", [
    {"adaptive": False},                                     # the worker takes what it can
    {"adaptive": False, "idle_spin_us": 0, "wait_spin_us": 0},  # it sleeps between pairs: most run serially
    {"adaptive": True},                                      # the default
])
def test_two_threads_give_the_one_thread_run_bit_for_bit(name, changes, policy, pool):
    one = run(name, changes, threads=1)
    _sac.pool_settings(**policy)
    _sac.pool_stats(reset=True)
    two = run(name, changes, threads=2)
    stats = _sac.pool_stats()
    assert_same_networks(one, two)
    offered = sum(stats[k] for k in ("helped", "late", "missed_awake", "missed_asleep", "serial", "busy"))
    assert offered == pairs_of(two), stats


def cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


@pytest.mark.skipif(cpus() < 2, reason="the pool starts no worker for a process allowed one CPU")
def test_worker_runs_tasks_when_spinning(pool):
    """With the worker spinning between pairs and no back-off, it takes part of the work."""
    _sac.pool_settings(adaptive=False, idle_spin_us=2000, wait_spin_us=2000)
    _sac.pool_stats(reset=True)
    run("pendulum-sac", PENDULUM, threads=2)
    stats = _sac.pool_stats()
    assert stats["started"] == 1
    assert stats["helped"] + stats["late"] > 0, stats
    assert stats["serial"] == 0 and stats["busy"] == 0, stats


def test_one_thread_never_touches_the_pool():
    _sac.pool_stats(reset=True)
    run("pendulum-sac", PENDULUM, threads=1)
    stats = _sac.pool_stats()
    assert sum(stats[k] for k in ("helped", "late", "missed_awake", "missed_asleep", "serial", "busy")) == 0


def test_concurrent_callers_share_the_pool_safely(pool):
    """Two trainers stepping in two Python threads at once (the kernels release the GIL): one
    holds the pool, the other runs its pairs serially; both give the one-thread results."""
    _sac.pool_settings(adaptive=False)
    references = [run("memory-chapter", MEMORY, threads=1, seed=s) for s in (1, 2)]
    _sac.pool_stats(reset=True)
    results = [None, None]
    errors = []

    def work(i):
        try:
            results[i] = run("memory-chapter", MEMORY, threads=2, seed=i + 1)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and all(not t.is_alive() for t in threads)
    for ref, res in zip(references, results):
        assert_same_networks(ref, res)
    stats = _sac.pool_stats()
    assert sum(stats.values()) - stats["started"] - stats["backoff"] == 2 * pairs_of(results[0])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pool_works_in_a_forked_child(pool):
    """After fork() the child has no worker thread: it starts its own and gives the same run."""
    import multiprocessing as mp
    _sac.pool_settings(adaptive=False)
    parent = run("pendulum-sac", PENDULUM, threads=2)  # the parent's worker is running now
    assert _sac.pool_stats()["started"] == 1
    ctx = mp.get_context("fork")
    queue = ctx.Queue()

    def child():
        trainer = run("pendulum-sac", PENDULUM, threads=2)
        queue.put((trainer.agent.actor.params.tobytes(), _sac.pool_stats()["started"]))

    proc = ctx.Process(target=child)
    proc.start()
    params, started = queue.get(timeout=300)
    proc.join(timeout=60)
    assert proc.exitcode == 0
    assert started == 1
    assert params == parent.agent.actor.params.tobytes()


def in_child(body: str) -> dict:
    """Run ``body`` (which leaves a dict in ``out``) in a fresh Python process; returns ``out``."""
    code = "import json, os\n" + textwrap.dedent(body) + "\nprint(json.dumps(out))\n"
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or cpus() < 2, reason="needs two CPUs and affinity")
def test_busy_cores_make_the_pool_back_off():
    """With the caller and the worker pinned to one CPU (so each can run only while the other
    is off it) offers fail, and the pool runs most pairs serially instead."""
    out = in_child(f"""
        from memrl._core import _pool as _sac
        from memrl.config import preset
        from memrl.loop import Trainer
        t = Trainer(preset("pendulum-sac").replace(**{dict(PENDULUM, total_steps=1500)!r}, threads=2), seed=0)
        while t.step_count < 200:
            t.step()
        assert _sac.pool_stats()["started"] == 1
        for task in os.listdir("/proc/self/task"):  # every thread of the process, the worker too
            os.sched_setaffinity(int(task), {{min(os.sched_getaffinity(0))}})
        _sac.pool_stats(reset=True)
        while not t.step():
            pass
        out = _sac.pool_stats()
    """)
    offered = out["helped"] + out["late"] + out["missed_awake"] + out["missed_asleep"]
    assert out["serial"] > offered, out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs affinity")
def test_a_process_allowed_one_cpu_starts_no_worker():
    out = in_child(f"""
        os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})
        from memrl._core import _pool as _sac
        from memrl.config import preset
        from memrl.loop import Trainer
        t = Trainer(preset("pendulum-sac").replace(**{PENDULUM!r}, threads=2), seed=0)
        while not t.step():
            pass
        out = _sac.pool_stats()
    """)
    assert out["started"] == -1
    assert out["serial"] > 0 and out["helped"] == out["late"] == out["missed_awake"] == out["missed_asleep"] == 0


@pytest.mark.parametrize("kwargs,match", [
    ({"idle_spin_us": -1}, "idle_spin_us: expected a non-negative number"),
    ({"wait_spin_us": "5"}, "wait_spin_us: expected a non-negative number"),
    ({"idle_spin_us": True}, "idle_spin_us: expected a non-negative number"),
])
def test_pool_settings_reject_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sac.pool_settings(**kwargs)


def test_pool_settings_round_trip(pool):
    assert _sac.pool_settings(idle_spin_us=123, wait_spin_us=7, adaptive=False) == {
        "idle_spin_us": 123, "wait_spin_us": 7, "adaptive": False}
