"""Fused SAC updates: one call runs a whole critic (or actor) update without the GIL.

The Python reference in ``memrl/sac.py`` states the losses and is checked against finite
differences; these kernels compute the same updates (float32) from the same buffers, bound once:
the sampler's batch arrays, the noise arrays, and the network plans (``_network``). Because a
critic's gradient touches only its own workspaces and gradients (the actor and target critics
are read-only), the two critic gradients of a step run on two threads at once with results
independent of timing; the Adam steps and the targets' Polyak step follow once both are known to
be finite (``run_critic_updates``). ``Acting`` is the rollout's policy step in one call.

Threads. The second thread is one persistent worker of memrl's own (POSIX threads, below), not
OpenMP: OpenMP's workers wait for each other at every join, and when the cores are busy with
other work (say a second training run), a thread that is not on a core holds up the one that is,
for a scheduler time slice each time: a Pendulum run next to one other run took 70 times longer
with two OpenMP threads than with one. Here the calling thread never waits for work that has not
started: it offers the second of two tasks to the worker, runs the first, and if the worker has
not taken the second by then it runs that too (``_run_pair``). Each task writes only its own
buffers, so results are the same bit for bit whichever thread runs what. The policy that keeps a
run alone on the machine at two-thread speed and a run on busy cores at one-thread speed is
described at ``memrl_pair_run`` below; ``pool_stats`` and ``pool_settings`` expose it for tests and
benchmarks.

Status codes returned by the run functions: 0 ok, 1 non-finite loss, 2 non-finite gradient.
"""
cimport cython
from libc.math cimport isfinite
from libc.string cimport memcpy, memset

from memrl._core._network cimport NetPlan, SequencePlan, StepPlan, addr as _addr, plan_backward, plan_forward, plan_step
from memrl._core._head cimport head_bwd, head_fwd
from memrl._core._adam cimport adam_kernel, polyak_kernel
from memrl._core._activations cimport exact_tanh


cdef struct AdamRef:
    float* params
    float* grads
    float* m
    float* v
    Py_ssize_t n
    const unsigned char* is_bias
    double lr, b1, b2, eps, floor, wd, clip, bias_lr_factor
    long t


cdef struct BatchRef:
    int L, B, O, A, first          # first: 0 when target windows include slot 0, else 1
    const float* obs               # (L+1, B, O)
    const float* act               # (L+1, B, A)
    const float* rew               # (L, B)
    const float* term              # (L, B)
    const unsigned char* reset     # (L, B)
    const unsigned char* final     # (L, B)
    const unsigned char* next_reset  # (L+1, B)
    const unsigned char* next_final  # (L+1, B)


cdef struct CriticCtx:
    BatchRef batch
    NetPlan* actor
    NetPlan* target0
    NetPlan* target1
    NetPlan* critic
    AdamRef adam
    float* target_params           # this critic's target (Polyak-averaged after the update)
    const float* noise             # (Lt*B, A)
    float* next_a                  # (Lt*B, A)
    float* next_logp               # (Lt*B,)
    float* y                       # (L*B,)
    float* dq                      # (L*B,)
    double gamma, lo, hi, alpha
    bint bonus, next_step, ignore_termination, mask_non_terminal
    bint td3                       # next actions: smoothed tanh(target actor) instead of the head
    float smoothing_sigma, smoothing_clip
    bint update_target             # run_critic_updates: Polyak-average the target after Adam
    double tau
    double loss
    int status


cdef struct ActorCtx:
    BatchRef batch
    NetPlan* actor
    NetPlan* critic0
    NetPlan* critic1
    AdamRef adam
    const float* noise             # (L*B, A)
    float* a                       # (L*B, A)
    float* logp                    # (L*B,)
    float* dq0                     # (L*B,)
    float* dq1                     # (L*B,)
    float* da                      # (L*B, A)
    float* weight                  # (L*B,) entropy weights
    float* dpre                    # (L*B, 2A) gradient at the actor's output
    double lo, hi, alpha, target_entropy
    bint entropy_all, mask_non_terminal, ignore_resets
    int threads                    # 2: the two critics' passes may run on two threads (_run_pair)
    bint td3                       # TD3: deterministic tanh actor through critic 1, then its target
    float* target_params           # TD3: the target actor (Polyak-averaged after the step)
    double tau
    double loss, entropy_gap
    int status


cdef inline float* _out(NetPlan* p) noexcept nogil:
    return <float*>p.layers[p.n_layers - 1].out


cdef inline float* _dx(NetPlan* p) noexcept nogil:
    return <float*>p.layers[0].dx


cdef inline bint _loss_step(BatchRef* b, bint mask_non_terminal, int k) noexcept nogil:
    """Steps with a loss: segment-final steps, or every non-padding step without masking."""
    if mask_non_terminal:
        return b.final[k] != 0
    return b.next_final[k] == 0


cdef inline bint _all_finite(const float* x, Py_ssize_t n) noexcept nogil:
    # A float is NaN or infinite exactly when its exponent bits are all set. An integer max over
    # the masked bit patterns vectorises (a float accumulation would be a serial chain).
    cdef Py_ssize_t i
    cdef unsigned int bits, top = 0
    for i in range(n):
        memcpy(&bits, &x[i], 4)
        bits = bits & 0x7f800000u
        top = bits if bits > top else top
    return top != 0x7f800000u


cdef void _q_input(int n, int O, int A, const float* obs, const float* fresh, const float* replayed,
                   const unsigned char* use_fresh, float* x) noexcept nogil:
    """Critic input rows x (n, O + A) = [obs, action]: the ``fresh`` action where ``use_fresh`` is
    set (every row if it is NULL), the ``replayed`` one elsewhere (every row if ``fresh`` is NULL)."""
    cdef int k, OA = O + A
    cdef const float* a
    for k in range(n):
        memcpy(x + k * OA, obs + k * O, O * sizeof(float))
        a = replayed if fresh == NULL or (use_fresh != NULL and not use_fresh[k]) else fresh
        memcpy(x + k * OA + O, a + k * A, A * sizeof(float))


cdef inline void _adam(AdamRef* r) noexcept nogil:
    adam_kernel[float](r.n, r.params, r.grads, r.m, r.v, r.lr, r.b1, r.b2, r.eps, r.floor, r.wd, r.clip,
                       r.is_bias, r.bias_lr_factor, r.t)


# --------------------------------------------------------------------------------------------
# The two-thread pool (C, compiled into this module; see the module docstring for why not OpenMP)

cdef extern from *:
    """
    #include <pthread.h>
    #include <sched.h>
    #include <time.h>

    #if defined(__x86_64__) || defined(__i386__)
    #  define MEMRL_RELAX() __builtin_ia32_pause()
    #elif defined(__aarch64__) || defined(__arm__)
    #  define MEMRL_RELAX() __asm__ __volatile__("yield" ::: "memory")
    #else
    #  define MEMRL_RELAX() __asm__ __volatile__("" ::: "memory")
    #endif
    #define MEMRL_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
    #define MEMRL_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)

    typedef void (*memrl_task)(void *);

    /* Pair states (the slot the caller offers to the worker). */
    enum { MEMRL_IDLE = 0, MEMRL_POSTED = 1, MEMRL_TAKEN = 2, MEMRL_DONE = 3 };
    /* What happened to an offered task (counted in stats; the first four are outcomes of offers). */
    enum { MEMRL_HELPED = 0,        /* the worker ran it, and finished before the caller slept */
           MEMRL_LATE = 1,          /* the worker ran it, but the caller waited longer than it ran */
           MEMRL_MISSED_AWAKE = 2,  /* the worker was not sleeping yet did not take it: no core */
           MEMRL_MISSED_ASLEEP = 3, /* the worker was asleep and did not wake in time */
           MEMRL_SERIAL = 4,        /* backing off: not offered */
           MEMRL_BUSY = 5,          /* another caller held the pool: not offered */
           MEMRL_N_STATS = 6 };

    typedef struct {
        pthread_mutex_t lock;
        pthread_cond_t wake;     /* the worker sleeps here when nothing came during its spin */
        pthread_cond_t done;     /* the caller sleeps here when the worker's task outlasts its spin */
        int state, sleeping, waiting, in_use, started;  /* atomics; started: 0 no, 1 yes, -1 failed */
        memrl_task fn;
        void *arg;
        long long task_ns;       /* how long the worker's last task ran (written before DONE) */
        /* settings (read by the worker without a lock: changes take effect at its next spin) */
        long long idle_spin_ns, wait_spin_ns;
        int adaptive;
        /* back-off state, touched only by the caller holding in_use */
        int strikes, backoff, backoff_len;
        long long since_backoff;
        long long stats[MEMRL_N_STATS];
    } memrl_pool_t;

    #define MEMRL_STRIKE 4          /* strikes added by a bad offer (a good one removes one) */
    #define MEMRL_STRIKE_LIMIT 12   /* back off when strikes reach this */
    #define MEMRL_BACKOFF_MIN 64    /* pairs run serially after the first back-off */
    #define MEMRL_BACKOFF_MAX 16384 /* ... doubling while they keep coming, up to this */

    static memrl_pool_t memrl_pool = {
        PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
        0, 0, 0, 0, 0, NULL, NULL, 0,
        1000000, 50000, 1,
        0, 0, MEMRL_BACKOFF_MIN, 0, {0, 0, 0, 0, 0, 0}};

    /* Settings change while the worker may be reading them. */
    static void memrl_pool_configure(long long idle_spin_ns, long long wait_spin_ns, int adaptive) {
        memrl_pool_t *p = &memrl_pool;
        if (idle_spin_ns >= 0) __atomic_store_n(&p->idle_spin_ns, idle_spin_ns, __ATOMIC_RELAXED);
        if (wait_spin_ns >= 0) __atomic_store_n(&p->wait_spin_ns, wait_spin_ns, __ATOMIC_RELAXED);
        if (adaptive >= 0) __atomic_store_n(&p->adaptive, adaptive, __ATOMIC_RELAXED);
    }

    static long long memrl_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }

    static void *memrl_worker(void *unused) {
        memrl_pool_t *p = &memrl_pool;
        (void)unused;
        for (;;) {
            long long until = memrl_now_ns() + __atomic_load_n(&p->idle_spin_ns, __ATOMIC_RELAXED);
            int k = 0, expected = MEMRL_POSTED;
            /* Spin a short while for the next task (they come in bursts: one training step has
               several pairs), then sleep until one is posted. Woken for a task the caller has
               already taken back, spin again all the same: the next offer then finds the worker
               awake, and tells whether it can get a core (a worker that slept again would miss
               every offer after a back-off, on an idle machine too). */
            while (MEMRL_LOAD(&p->state) != MEMRL_POSTED) {
                MEMRL_RELAX();
                if ((++k & 63) == 0 && memrl_now_ns() > until) {
                    pthread_mutex_lock(&p->lock);
                    MEMRL_STORE(&p->sleeping, 1);
                    while (MEMRL_LOAD(&p->state) != MEMRL_POSTED)
                        pthread_cond_wait(&p->wake, &p->lock);
                    MEMRL_STORE(&p->sleeping, 0);
                    pthread_mutex_unlock(&p->lock);
                }
            }
            /* The caller may take the task back at the same moment: whoever wins the exchange runs it. */
            if (__atomic_compare_exchange_n(&p->state, &expected, MEMRL_TAKEN, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
                long long started = memrl_now_ns();
                p->fn(p->arg);
                p->task_ns = memrl_now_ns() - started;
                MEMRL_STORE(&p->state, MEMRL_DONE);
                if (MEMRL_LOAD(&p->waiting)) {
                    pthread_mutex_lock(&p->lock);
                    pthread_cond_signal(&p->done);
                    pthread_mutex_unlock(&p->lock);
                }
            }
        }
        return NULL;
    }

    /* After fork() only the forking thread exists in the child: forget the worker (a new one
       starts on first use) and any lock it held. */
    static void memrl_pool_after_fork_child(void) {
        memrl_pool_t *p = &memrl_pool;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->wake, NULL);
        pthread_cond_init(&p->done, NULL);
        p->state = MEMRL_IDLE; p->sleeping = 0; p->waiting = 0; p->in_use = 0; p->started = 0;
        p->strikes = 0; p->backoff = 0; p->backoff_len = MEMRL_BACKOFF_MIN; p->since_backoff = 0;
    }

    static void memrl_pool_start(memrl_pool_t *p) {
        static int atfork_registered = 0;
        pthread_t thread;
        pthread_attr_t attr;
        if (!atfork_registered) {
            atfork_registered = 1;
            pthread_atfork(NULL, NULL, memrl_pool_after_fork_child);
        }
        p->started = -1;
    #if defined(__linux__) && defined(CPU_COUNT)
        {   /* a process allowed only one CPU (taskset, a container's cpuset) runs pairs serially */
            cpu_set_t cpus;
            if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) < 2) return;
        }
    #endif
        if (pthread_attr_init(&attr) != 0) return;
        if (pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0
                && pthread_create(&thread, &attr, memrl_worker, NULL) == 0)
            p->started = 1;
        pthread_attr_destroy(&attr);
    }

    /* The back-off policy. An offer helped when the pair finished sooner than on the caller
       alone: the worker took the task and the caller waited for it less than the task ran
       (HELPED). It was bad when the caller waited longer than that (LATE: the worker started
       late or lost its core mid-task) or when a spinning worker did not take the task before the
       caller finished its own (MISSED_AWAKE: it had no core). A worker found asleep (after an
       idle spell, an evaluation or a back-off) that does not wake in time is a lesser sign
       (MISSED_ASLEEP: waking takes tens of microseconds on an idle machine too), worth one
       strike. A run alone on the machine has (nearly) no bad offers. Each bad offer adds
       MEMRL_STRIKE strikes and each helped one removes one; at MEMRL_STRIKE_LIMIT the next
       backoff_len pairs run on the caller alone (the worker sleeps), and backoff_len doubles, up
       to MEMRL_BACKOFF_MAX, while back-offs keep coming within 1024 offers of each other. */
    static void memrl_pool_judge(memrl_pool_t *p, int outcome) {
        p->since_backoff++;
        if (!__atomic_load_n(&p->adaptive, __ATOMIC_RELAXED)) return;
        if (outcome == MEMRL_HELPED) {
            if (p->strikes > 0) p->strikes--;
        } else {
            p->strikes += outcome == MEMRL_MISSED_ASLEEP ? 1 : MEMRL_STRIKE;
            if (p->strikes >= MEMRL_STRIKE_LIMIT) {
                if (p->since_backoff > 1024) p->backoff_len = MEMRL_BACKOFF_MIN;
                p->backoff = p->backoff_len;
                p->backoff_len = p->backoff_len * 2 < MEMRL_BACKOFF_MAX ? p->backoff_len * 2 : MEMRL_BACKOFF_MAX;
                p->strikes = 0;
                p->since_backoff = 0;
            }
        }
    }

    /* Run f0(a0) and f1(a1), f1 possibly on the worker; returns when both have run. The caller
       runs f0, then f1 itself unless the worker took it first, so it never waits for a task that
       has not started; it waits (spinning up to wait_spin_ns, then sleeping) only for one the
       worker is running. Without a worker (threads could not start) or while backing off, or if
       another thread is using the pool, both run on the caller, in order. */
    static void memrl_pair_run(memrl_task f0, void *a0, memrl_task f1, void *a1) {
        memrl_pool_t *p = &memrl_pool;
        int free_ = 0, expected = MEMRL_POSTED, asleep, outcome, k = 0;
        long long until;
        if (!__atomic_compare_exchange_n(&p->in_use, &free_, 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            __atomic_fetch_add(&p->stats[MEMRL_BUSY], 1, __ATOMIC_RELAXED);
            f0(a0);
            f1(a1);
            return;
        }
        if (p->started == 0) memrl_pool_start(p);
        if (p->started < 0 || (p->backoff > 0 && __atomic_load_n(&p->adaptive, __ATOMIC_RELAXED))) {
            if (p->backoff > 0) p->backoff--;
            p->stats[MEMRL_SERIAL]++;
            f0(a0);
            f1(a1);
            MEMRL_STORE(&p->in_use, 0);
            return;
        }
        p->fn = f1;
        p->arg = a1;
        MEMRL_STORE(&p->state, MEMRL_POSTED);
        asleep = MEMRL_LOAD(&p->sleeping);
        if (asleep) {
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->wake);
            pthread_mutex_unlock(&p->lock);
        }
        f0(a0);
        if (__atomic_compare_exchange_n(&p->state, &expected, MEMRL_IDLE, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            f1(a1);
            outcome = asleep ? MEMRL_MISSED_ASLEEP : MEMRL_MISSED_AWAKE;
        } else {
            long long waited_from = memrl_now_ns();
            until = waited_from + __atomic_load_n(&p->wait_spin_ns, __ATOMIC_RELAXED);
            while (MEMRL_LOAD(&p->state) != MEMRL_DONE) {
                MEMRL_RELAX();
                if ((++k & 63) == 0 && memrl_now_ns() > until) {
                    pthread_mutex_lock(&p->lock);
                    MEMRL_STORE(&p->waiting, 1);
                    while (MEMRL_LOAD(&p->state) != MEMRL_DONE)
                        pthread_cond_wait(&p->done, &p->lock);
                    MEMRL_STORE(&p->waiting, 0);
                    pthread_mutex_unlock(&p->lock);
                }
            }
            /* faster than running the task here, or not */
            outcome = memrl_now_ns() - waited_from < p->task_ns ? MEMRL_HELPED : MEMRL_LATE;
            MEMRL_STORE(&p->state, MEMRL_IDLE);
        }
        p->stats[outcome]++;
        memrl_pool_judge(p, outcome);
        MEMRL_STORE(&p->in_use, 0);
    }
    """
    ctypedef void (*memrl_task)(void*) noexcept nogil
    void memrl_pair_run(memrl_task f0, void* a0, memrl_task f1, void* a1) noexcept nogil
    void memrl_pool_configure(long long idle_spin_ns, long long wait_spin_ns, int adaptive) noexcept nogil
    ctypedef struct memrl_pool_t:
        int started
        long long idle_spin_ns
        long long wait_spin_ns
        int adaptive
        int strikes
        int backoff
        int backoff_len
        long long stats[6]
    memrl_pool_t memrl_pool


cdef inline void _run_pair(memrl_task f0, void* a0, memrl_task f1, void* a1, int threads) noexcept nogil:
    """f0(a0) then f1(a1) on this thread, or with ``threads`` > 1 through the pool (either order)."""
    if threads > 1:
        memrl_pair_run(f0, a0, f1, a1)
    else:
        f0(a0)
        f1(a1)


_STAT_NAMES = ("helped", "late", "missed_awake", "missed_asleep", "serial", "busy")


def pool_stats(bint reset=False):
    """Counts of what happened to the pairs run with two threads since the start (or the last
    reset): ``helped`` (the worker ran the second task, and the caller waited less than it ran),
    ``late`` (it did, but the caller waited longer than that), ``missed_awake`` / ``missed_asleep`` (the caller ran both: the worker had no core /
    was asleep), ``serial`` (backing off, not offered), ``busy`` (another thread had the pool);
    plus ``started`` (1 the worker runs, 0 not yet, -1 could not start) and ``backoff`` (pairs
    left to run serially)."""
    out = {name: memrl_pool.stats[i] for i, name in enumerate(_STAT_NAMES)}
    out["started"] = memrl_pool.started
    out["backoff"] = memrl_pool.backoff
    if reset:
        for i in range(len(_STAT_NAMES)):
            memrl_pool.stats[i] = 0
    return out


def pool_settings(idle_spin_us=None, wait_spin_us=None, adaptive=None):
    """Read or change the pool's waiting policy; returns the settings in force.

    idle_spin_us: how long the worker spins for a next task before sleeping (default 1000: a
    step of the chapter has a few hundred microseconds of other work between some pairs, and a
    worker asleep at the next pair costs a wake-up and usually misses it);
    wait_spin_us: how long the caller spins for the worker's task before sleeping (default 50);
    adaptive: whether bad offers make the pool run pairs serially for a while (default True).
    Results never depend on these, only speed.
    """
    for name, value in (("idle_spin_us", idle_spin_us), ("wait_spin_us", wait_spin_us)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"{name}: expected a non-negative number of microseconds, got {value!r}")
    memrl_pool_configure(-1 if idle_spin_us is None else <long long>(idle_spin_us * 1000),
                         -1 if wait_spin_us is None else <long long>(wait_spin_us * 1000),
                         -1 if adaptive is None else (1 if adaptive else 0))
    return {"idle_spin_us": memrl_pool.idle_spin_ns / 1000, "wait_spin_us": memrl_pool.wait_spin_ns / 1000,
            "adaptive": bool(memrl_pool.adaptive)}


cdef void _forward_task(void* plan) noexcept nogil:
    plan_forward[float](<NetPlan*>plan)


cdef struct _InputBackward:
    NetPlan* plan
    float* dy
    bint ignore_resets


cdef void _input_backward_task(void* args) noexcept nogil:
    cdef _InputBackward* a = <_InputBackward*>args
    plan_backward[float](a.plan, a.dy, True, a.ignore_resets, False)


cdef void _critic_gradient_task(void* ctx) noexcept nogil:
    critic_gradient(<CriticCtx*>ctx)


cdef void _critic_apply_task(void* ctx) noexcept nogil:
    cdef CriticCtx* c = <CriticCtx*>ctx
    _critic_apply(c, c.update_target, c.tau)


cdef void critic_gradient(CriticCtx* c) noexcept nogil:
    """Loss and gradient into the critic's grads; sets status (parameters untouched)."""
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, first = b.first
    cdef int Lt = L + 1 - first, d = 1 - first, OA = O + A
    cdef int bb, t, k, kd, n = 0
    cdef float* tx
    cdef float* q1
    cdef float* q2
    cdef float* q
    cdef float* cx
    cdef float qn, boot, keep, yv, diff
    cdef float alpha = <float>c.alpha, gamma = <float>c.gamma, inv_n
    cdef double loss = 0
    # 1. next actions on the target window: SAC's current actor, sampled (with log-probabilities),
    #    or TD3's target actor with clipped smoothing noise
    memcpy(c.actor.x, b.obs + first * B * O, Lt * B * O * sizeof(float))
    c.actor.reset = b.next_reset + first * B
    plan_forward[float](c.actor)
    if c.td3:
        _smoothed_actions(Lt * B * A, _out(c.actor), c.noise, c.smoothing_sigma, c.smoothing_clip, c.next_a)
    else:
        head_fwd[float](Lt * B, A, _out(c.actor), c.noise, c.next_a, c.next_logp, c.lo, c.hi)
    # 2. target critics on [observation, action]; replayed actions except at padding slots
    tx = <float*>c.target0.x
    _q_input(Lt * B, O, A, b.obs + first * B * O, c.next_a, b.act + first * B * A,
             (b.next_final + first * B) if c.mask_non_terminal else NULL, tx)
    memcpy(c.target1.x, tx, Lt * B * OA * sizeof(float))
    c.target0.reset = b.next_reset + first * B
    c.target1.reset = c.target0.reset
    plan_forward[float](c.target0)
    plan_forward[float](c.target1)
    q1 = _out(c.target0)
    q2 = _out(c.target1)
    # 3. Bellman targets for every current slot
    for t in range(L):
        for bb in range(B):
            k = t * B + bb
            kd = (t + d) * B + bb
            qn = q1[kd] if q1[kd] < q2[kd] else q2[kd]
            boot = qn
            if c.bonus and c.next_step:
                boot = boot - alpha * c.next_logp[kd]
            keep = 1 if c.ignore_termination else 1 - b.term[k]
            yv = b.rew[k] + (gamma * keep) * boot
            if c.bonus and not c.next_step:
                yv = yv - alpha * c.next_logp[k]
            c.y[k] = yv
    # 4. the critic on the replayed window
    cx = <float*>c.critic.x
    _q_input(L * B, O, A, b.obs, NULL, b.act, NULL, cx)
    c.critic.reset = b.reset
    plan_forward[float](c.critic)
    q = _out(c.critic)
    for k in range(L * B):
        n += _loss_step(b, c.mask_non_terminal, k)
    inv_n = <float>(1.0 / n)
    for k in range(L * B):
        diff = (q[k] - c.y[k]) * (<float>_loss_step(b, c.mask_non_terminal, k))
        loss += <double>diff * diff
        c.dq[k] = diff * inv_n
    c.loss = 0.5 * loss / n
    if not isfinite(c.loss):
        c.status = 1
        return
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.critic, c.dq, False, False)
    c.status = 0 if _all_finite(c.adam.grads, c.adam.n) else 2


cdef inline float _clip(float x, float lo, float hi) noexcept nogil:
    x = lo if x < lo else x
    return hi if x > hi else x


cdef void _smoothed_actions(Py_ssize_t n, const float* pre, const float* noise, float sigma, float clip,
                            float* out) noexcept nogil:
    """TD3's target actions clip(tanh(pre) + clip(sigma eps, -c, c), -1, 1), in float32."""
    cdef Py_ssize_t k
    for k in range(n):
        out[k] = _clip(exact_tanh(pre[k]) + _clip(sigma * noise[k], -clip, clip), -1, 1)


cdef void td3_actor_run(ActorCtx* c) noexcept nogil:
    """TD3's actor step: a = tanh(actor), L = -(1/N_f) sum_final Q_1([o, a]), then the target actor."""
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, OA = O + A, N = L * B
    cdef int k, i, n = 0
    cdef float* pre
    cdef float* x0
    cdef float* q1
    cdef float* dx
    cdef float neg_inv_n, t
    cdef double qsum = 0
    memcpy(c.actor.x, b.obs, N * O * sizeof(float))
    c.actor.reset = b.reset
    plan_forward[float](c.actor)
    pre = _out(c.actor)
    for k in range(N * A):
        c.a[k] = exact_tanh(pre[k])
    for k in range(N):
        n += _loss_step(b, c.mask_non_terminal, k)
    x0 = <float*>c.critic0.x
    _q_input(N, O, A, b.obs, c.a, b.act, b.final if c.mask_non_terminal else NULL, x0)
    c.critic0.reset = b.reset
    plan_forward[float](c.critic0)
    q1 = _out(c.critic0)
    neg_inv_n = <float>(-1.0 / n)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            qsum += q1[k]
            c.dq0[k] = neg_inv_n
        else:
            c.dq0[k] = 0
    c.loss = -qsum / n
    c.entropy_gap = 0
    if not isfinite(c.loss):
        c.status = 1
        return
    plan_backward[float](c.critic0, c.dq0, True, c.ignore_resets, False)
    dx = _dx(c.critic0)
    for k in range(N):
        for i in range(A):
            if c.mask_non_terminal and not b.final[k]:
                c.dpre[k * A + i] = 0
            else:
                t = c.a[k * A + i]
                c.dpre[k * A + i] = dx[k * OA + O + i] * (<float>1 - t * t)
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.actor, c.dpre, False, False)
    if not _all_finite(c.adam.grads, c.adam.n):
        c.status = 2
        return
    _adam(&c.adam)
    polyak_kernel[float](c.adam.n, c.target_params, c.adam.params, c.tau)
    c.status = 0


cdef void _both_forward(NetPlan* p0, NetPlan* p1, int threads) noexcept nogil:
    _run_pair(_forward_task, p0, _forward_task, p1, threads)


cdef void _both_backward_input(NetPlan* p0, NetPlan* p1, float* dq0, float* dq1, bint ignore_resets,
                               int threads) noexcept nogil:
    cdef _InputBackward a0, a1
    a0.plan, a0.dy, a0.ignore_resets = p0, dq0, ignore_resets
    a1.plan, a1.dy, a1.ignore_resets = p1, dq1, ignore_resets
    _run_pair(_input_backward_task, &a0, _input_backward_task, &a1, threads)


cdef void actor_run(ActorCtx* c) noexcept nogil:
    cdef BatchRef* b = &c.batch
    cdef int L = b.L, B = b.B, O = b.O, A = b.A, OA = O + A, N = L * B
    cdef int k, i, n = 0
    cdef float* x0
    cdef float* q1
    cdef float* q2
    cdef float* dx
    cdef float* dx1
    cdef float alpha = <float>c.alpha, w_all, neg_inv_n, qmin
    cdef double qsum = 0, lsum = 0, mean_logp
    # 1. actions and log-probabilities on the replayed window
    memcpy(c.actor.x, b.obs, N * O * sizeof(float))
    c.actor.reset = b.reset
    plan_forward[float](c.actor)
    head_fwd[float](N, A, _out(c.actor), c.noise, c.a, c.logp, c.lo, c.hi)
    for k in range(N):
        n += _loss_step(b, c.mask_non_terminal, k)
    # 2. both critics on [observation, action]: the new action at loss steps, else the replayed one
    x0 = <float*>c.critic0.x
    _q_input(N, O, A, b.obs, c.a, b.act, b.final if c.mask_non_terminal else NULL, x0)
    memcpy(c.critic1.x, x0, N * OA * sizeof(float))
    c.critic0.reset = b.reset
    c.critic1.reset = b.reset
    _both_forward(c.critic0, c.critic1, c.threads)
    q1 = _out(c.critic0)
    q2 = _out(c.critic1)
    # 3. loss: -(1/N_f) sum_final min(Q1, Q2) + alpha * mean_E log pi
    w_all = <float>(c.alpha / N)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            qmin = q1[k] if q1[k] < q2[k] else q2[k]
            qsum += qmin
            if not c.entropy_all:
                lsum += c.logp[k]
        if c.entropy_all:
            lsum += c.logp[k]
            c.weight[k] = w_all
        else:
            c.weight[k] = <float>(c.alpha / n) if _loss_step(b, c.mask_non_terminal, k) else 0
    mean_logp = lsum / (N if c.entropy_all else n)
    c.loss = -qsum / n + c.alpha * mean_logp
    c.entropy_gap = -mean_logp - c.target_entropy
    if not isfinite(c.loss) or not isfinite(c.entropy_gap):
        c.status = 1
        return
    # 4. dL/da through the smaller critic, per sample, at loss steps
    neg_inv_n = <float>(-1.0 / n)
    for k in range(N):
        if _loss_step(b, c.mask_non_terminal, k):
            c.dq0[k] = neg_inv_n if q1[k] < q2[k] else 0
            c.dq1[k] = 0 if q1[k] < q2[k] else neg_inv_n
        else:
            c.dq0[k] = 0
            c.dq1[k] = 0
    _both_backward_input(c.critic0, c.critic1, c.dq0, c.dq1, c.ignore_resets, c.threads)
    dx = _dx(c.critic0)
    dx1 = _dx(c.critic1)
    for k in range(N):
        for i in range(A):
            c.da[k * A + i] = (<float>0 + dx[k * OA + O + i]) + dx1[k * OA + O + i]
    if c.mask_non_terminal:
        for k in range(N):
            if not b.final[k]:
                for i in range(A):
                    c.da[k * A + i] = 0
    # 5. through the head and the actor
    head_bwd[float](N, A, _out(c.actor), c.noise, c.a, c.da, c.weight, c.dpre, c.lo, c.hi)
    memset(c.adam.grads, 0, c.adam.n * sizeof(float))
    plan_backward[float](c.actor, c.dpre, False, False)
    if not _all_finite(c.adam.grads, c.adam.n):
        c.status = 2
        return
    _adam(&c.adam)
    c.status = 0


cdef void _bind_batch(BatchRef* r, batch, int O, int A) except *:
    r.L = batch.sequence_length
    r.B = batch.batch_size
    r.O = O
    r.A = A
    r.first = 0 if batch.include_first_step_in_targets else 1
    r.obs = <const float*>_addr(batch.observations)
    r.act = <const float*>_addr(batch.actions)
    r.rew = <const float*>_addr(batch.rewards)
    r.term = <const float*>_addr(batch.terminated)
    r.reset = <const unsigned char*>_addr(batch.reset)
    r.final = <const unsigned char*>_addr(batch.final)
    r.next_reset = <const unsigned char*>_addr(batch.next_reset)
    r.next_final = <const unsigned char*>_addr(batch.next_final)


cdef void _bind_adam(AdamRef* r, model, opt) except *:
    r.params = <float*>_addr(model.params)
    r.grads = <float*>_addr(model.grads)
    r.m = <float*>_addr(model.adam_m)
    r.v = <float*>_addr(model.adam_v)
    r.n = model.size
    use_mask = opt.bias_lr_factor != 1.0 or opt.weight_decay != 0.0
    r.is_bias = <const unsigned char*>_addr(model.is_bias) if use_mask else NULL
    r.lr, r.b1, r.b2, r.eps = opt.lr, opt.beta1, opt.beta2, opt.eps
    r.floor, r.wd, r.clip, r.bias_lr_factor = opt.v_hat_floor, opt.weight_decay, opt.clip, opt.bias_lr_factor
    r.t = 0


cdef class CriticUpdate:
    """A fused critic update bound to one critic, its batch, noise and private workspaces; the
    next actions come from ``actor_plan`` (SAC: the actor; TD3: the target actor)."""
    cdef CriticCtx ctx
    cdef object _keep

    def __init__(self, config, batch, noise, actor_plan: SequencePlan, target_plans, critic_plan: SequencePlan,
                 critic, target, int observation_dim, int action_dim):
        cdef SequencePlan t0 = target_plans[0], t1 = target_plans[1]
        import numpy as np
        L, B = batch.sequence_length, batch.batch_size
        Lt = L + (1 if batch.include_first_step_in_targets else 0)
        bufs = {"next_a": np.zeros((Lt * B, action_dim), np.float32), "next_logp": np.zeros(Lt * B, np.float32),
                "y": np.zeros(L * B, np.float32), "dq": np.zeros(L * B, np.float32)}
        if noise.shape != (Lt * B, action_dim) or noise.dtype != np.float32:
            raise ValueError(f"noise: expected float32 of shape {(Lt * B, action_dim)}, got {noise.dtype} {noise.shape}")
        if target.size != critic.size:
            raise ValueError(f"target: expected {critic.size} parameters like the critic, got {target.size}")
        self._keep = [batch, noise, actor_plan, t0, t1, critic_plan, critic, target, bufs]
        _bind_batch(&self.ctx.batch, batch, observation_dim, action_dim)
        self.ctx.actor = &actor_plan.net
        self.ctx.target0 = &t0.net
        self.ctx.target1 = &t1.net
        self.ctx.critic = &critic_plan.net
        _bind_adam(&self.ctx.adam, critic, config.critic_optimizer)
        self.ctx.target_params = <float*>_addr(target.params)
        self.ctx.noise = <const float*>_addr(noise)
        self.ctx.next_a = <float*>_addr(bufs["next_a"])
        self.ctx.next_logp = <float*>_addr(bufs["next_logp"])
        self.ctx.y = <float*>_addr(bufs["y"])
        self.ctx.dq = <float*>_addr(bufs["dq"])
        self.ctx.gamma = config.gamma
        self.ctx.lo = config.log_std_min
        self.ctx.hi = config.log_std_max
        self.ctx.td3 = config.algorithm == "td3"
        self.ctx.bonus = config.entropy_bonus and not self.ctx.td3  # TD3 has no entropy term
        self.ctx.next_step = config.entropy_bonus_next_step
        self.ctx.ignore_termination = config.ignore_termination
        self.ctx.mask_non_terminal = config.mask_non_terminal
        self.ctx.smoothing_sigma = config.target_policy_noise
        self.ctx.smoothing_clip = config.target_noise_clip

    @property
    def loss(self):
        return self.ctx.loss

    @property
    def status(self):
        return self.ctx.status

    @property
    def targets(self):
        """A copy of the last run's Bellman targets y, (L, B) float32, for every current slot
        (only the loss steps enter the loss; read-only, for tests)."""
        return self._keep[8]["y"].reshape(self.ctx.batch.L, self.ctx.batch.B).copy()


cdef class ActorUpdate:
    """A fused actor update bound to the actor, both critics (TD3: critic 1 and the target actor),
    its batch and noise."""
    cdef ActorCtx ctx
    cdef object _keep

    def __init__(self, config, batch, noise, actor_plan: SequencePlan, critic_plans, actor, double target_entropy,
                 int observation_dim, int action_dim, int threads=1, target_actor=None):
        cdef SequencePlan c0 = critic_plans[0], c1 = critic_plans[1]
        import numpy as np
        L, B = batch.sequence_length, batch.batch_size
        N = L * B
        if noise.shape != (N, action_dim) or noise.dtype != np.float32:
            raise ValueError(f"noise: expected float32 of shape {(N, action_dim)}, got {noise.dtype} {noise.shape}")
        bufs = {name: np.zeros(shape, np.float32) for name, shape in
                (("a", (N, action_dim)), ("logp", N), ("dq0", N), ("dq1", N), ("da", (N, action_dim)), ("weight", N),
                 ("dpre", (N, 2 * action_dim)))}
        self._keep = [batch, noise, actor_plan, c0, c1, actor, bufs]
        _bind_batch(&self.ctx.batch, batch, observation_dim, action_dim)
        self.ctx.actor = &actor_plan.net
        self.ctx.critic0 = &c0.net
        self.ctx.critic1 = &c1.net
        _bind_adam(&self.ctx.adam, actor, config.actor_optimizer)
        self.ctx.noise = <const float*>_addr(noise)
        self.ctx.a = <float*>_addr(bufs["a"])
        self.ctx.logp = <float*>_addr(bufs["logp"])
        self.ctx.dq0 = <float*>_addr(bufs["dq0"])
        self.ctx.dq1 = <float*>_addr(bufs["dq1"])
        self.ctx.da = <float*>_addr(bufs["da"])
        self.ctx.weight = <float*>_addr(bufs["weight"])
        self.ctx.dpre = <float*>_addr(bufs["dpre"])
        self.ctx.lo = config.log_std_min
        self.ctx.hi = config.log_std_max
        self.ctx.target_entropy = target_entropy
        self.ctx.entropy_all = config.actor_entropy_positions == "all"
        self.ctx.mask_non_terminal = config.mask_non_terminal
        self.ctx.ignore_resets = config.rltools_critic_backward_ignores_resets
        self.ctx.threads = threads
        self.ctx.td3 = config.algorithm == "td3"
        if self.ctx.td3:
            if target_actor is None or target_actor.size != actor.size:
                raise ValueError("target_actor: TD3 needs the target actor (same architecture as the actor)")
            self._keep.append(target_actor)
            self.ctx.target_params = <float*>_addr(target_actor.params)
            self.ctx.tau = config.tau

    def run(self, double alpha, long adam_t):
        """One actor update; returns (status, loss, entropy gap)."""
        self.ctx.alpha = alpha
        self.ctx.adam.t = adam_t
        with nogil:
            if self.ctx.td3:
                td3_actor_run(&self.ctx)
            else:
                actor_run(&self.ctx)
        return self.ctx.status, self.ctx.loss, self.ctx.entropy_gap


def run_critic_updates(CriticUpdate c0, CriticUpdate c1, double alpha, long t0, long t1, int n_threads,
                       bint update_targets=False, double tau=0.0):
    """Both critic updates (each its own batch and noise), on ``n_threads`` (1 or 2) threads.

    Both gradients are computed and checked first; only if both are finite do the Adam steps
    run (and, with ``update_targets``, the Polyak averaging of each target critic towards its
    critic), so a failed step changes no parameter. Returns (status0, loss0, status1, loss1).
    """
    cdef CriticCtx* ctx[2]
    ctx[0] = &c0.ctx
    ctx[1] = &c1.ctx
    c0.ctx.alpha = alpha
    c1.ctx.alpha = alpha
    c0.ctx.adam.t = t0
    c1.ctx.adam.t = t1
    c0.ctx.update_target = update_targets
    c1.ctx.update_target = update_targets
    c0.ctx.tau = tau
    c1.ctx.tau = tau
    with nogil:
        # The target critics are read by both gradients, so they change only after both.
        _run_pair(_critic_gradient_task, ctx[0], _critic_gradient_task, ctx[1], n_threads)
        if ctx[0].status == 0 and ctx[1].status == 0:
            _run_pair(_critic_apply_task, ctx[0], _critic_apply_task, ctx[1], n_threads)
    return c0.ctx.status, c0.ctx.loss, c1.ctx.status, c1.ctx.loss


cdef void _critic_apply(CriticCtx* c, bint update_target, double tau) noexcept nogil:
    _adam(&c.adam)
    if update_target:
        polyak_kernel[float](c.adam.n, c.target_params, c.adam.params, tau)


cdef class Acting:
    """The rollout's policy step in one call: the actor's step plan, the policy's output, the reset flags.

    Bound to the trainer's arrays: observations (N, O), reset flags (N,) (rows restart from zero
    state, then are cleared), standard normal noise (N, A) and the actions (N, A) it writes: SAC's
    sampled tanh-Gaussian actions, or TD3's clip(tanh(actor) + exploration_noise * noise, -1, 1).
    """
    cdef NetPlan* plan
    cdef const float* obs
    cdef unsigned char* reset
    cdef const float* noise
    cdef float* actions
    cdef float* logp
    cdef int N, A
    cdef bint td3
    cdef double lo, hi
    cdef float exploration_noise
    cdef object _keep

    def __init__(self, StepPlan plan, observations, reset, noise, actions, config):
        import numpy as np
        N, A = actions.shape
        O = plan.net.in_dim
        for name, arr, shape, dtype in (("observations", observations, (N, O), np.float32),
                                        ("reset", reset, (N,), np.uint8), ("noise", noise, (N, A), np.float32),
                                        ("actions", actions, (N, A), np.float32)):
            if arr.shape != shape or arr.dtype != dtype or not arr.flags.c_contiguous:
                raise ValueError(f"{name}: expected a C-contiguous {np.dtype(dtype).name} array of shape {shape}, "
                                 f"got {arr.dtype} {arr.shape}")
        self.td3 = config.algorithm == "td3"
        outputs = A if self.td3 else 2 * A
        if plan.is_double or plan.net.B != N or plan.net.out_dim != outputs:
            raise ValueError(f"plan: expected a float32 step plan for {N} rows with {outputs} outputs")
        logp = np.zeros(N, np.float32)
        self._keep = [plan, observations, reset, noise, actions, logp]
        self.plan = &plan.net
        self.obs = <const float*>_addr(observations)
        self.reset = <unsigned char*>_addr(reset)
        self.noise = <const float*>_addr(noise)
        self.actions = <float*>_addr(actions)
        self.logp = <float*>_addr(logp)
        self.N, self.A, self.lo, self.hi = N, A, config.log_std_min, config.log_std_max
        self.exploration_noise = config.exploration_noise

    def run(self):
        """Actions for the bound observations into the bound array; returns whether all are finite."""
        cdef bint ok
        cdef Py_ssize_t k
        cdef const float* pre
        with nogil:
            plan_step[float](self.plan, <float*>self.obs, self.reset)
            memset(self.reset, 0, self.N)
            pre = _out(self.plan)
            if self.td3:
                for k in range(self.N * self.A):
                    self.actions[k] = _clip(exact_tanh(pre[k]) + self.exploration_noise * self.noise[k], -1, 1)
            else:
                head_fwd[float](self.N, self.A, pre, self.noise, self.actions, self.logp, self.lo, self.hi)
            ok = _all_finite(self.actions, self.N * self.A)
        return ok


def all_finite(const float[::1] x):
    """Whether a float32 vector has no NaN or infinite entry (the kernels' gradient check)."""
    if x.shape[0] == 0:
        return True
    with nogil:
        ok = _all_finite(&x[0], x.shape[0])
    return ok
