"""Two threads for paired work: the caller and one persistent worker of memrl's own.

The updates (``memrl._core._update``) have pairs of independent tasks: the two critics'
gradients, their Adam and Polyak steps, the actor update's two critic passes. ``run_pair`` runs
both, the second possibly on the worker. Why not OpenMP: OpenMP's workers wait for each other at
every join, and when the cores are busy with other work (say a second training run), a thread
that is not on a core holds up the one that is, for a scheduler time slice each time: a Pendulum
run next to one other run took 70 times longer with two OpenMP threads than with one. Here the
calling thread never waits for work that has not started: it offers the second task to the
worker, runs the first, and if the worker has not taken the second by then it runs that too.
Each task writes only its own buffers, so results are the same bit for bit whichever thread
runs what. The policy that keeps a run alone on the machine at two-thread speed and a run on
busy cores at one-thread speed is described at ``memrl_pair_run`` below; ``pool_stats`` and
``pool_settings`` expose it for tests and benchmarks.
"""

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
    void memrl_pair_run(task f0, void* a0, task f1, void* a1) noexcept nogil
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


cdef void run_pair(task f0, void* a0, task f1, void* a1, int threads) noexcept nogil:
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


