/*
 * fastdispatch/_atomic.h: the portable layer of the compiled core.
 *
 * Atomics on plain int64_t / pointer words (GCC and Clang __atomic builtins,
 * MSVC Interlocked intrinsics, C11 <stdatomic.h> otherwise), a tiny spin
 * lock, and an event count for parking idle workers (mutex + condition
 * variable: pthreads, or SRWLOCK + CONDITION_VARIABLE on Windows).
 *
 * Memory orders: RMW operations are sequentially consistent (the core relies
 * on store->load ordering between producers and workers, Dekker style);
 * loads are acquire and stores are release unless named _relaxed.
 * Nothing here needs the GIL or the Python API, so it is safe in nogil code
 * and on free-threaded CPython.
 */
#ifndef FASTDISPATCH_ATOMIC_H
#define FASTDISPATCH_ATOMIC_H

#include <stdint.h>
#include <stddef.h>

/* FD_FORCE_C11 lets the tests exercise the C11 path with GCC or Clang. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(FD_FORCE_C11)
#  define FD_ATOMIC_GCC 1
#elif defined(_MSC_VER) && !defined(FD_FORCE_C11)
#  define FD_ATOMIC_MSVC 1
#  include <intrin.h>
#  include <windows.h>
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_ATOMICS__)
#  define FD_ATOMIC_C11 1
#  include <stdatomic.h>
#else
#  error "fastdispatch: no atomics available for this compiler"
#endif

#if !defined(_WIN32)
#  include <pthread.h>
#  include <sched.h>
#endif

/* ------------------------------------------------------------------ */
/* 64-bit integers                                                     */
/* ------------------------------------------------------------------ */

static inline int64_t fd_load(const int64_t *p) {
#if FD_ATOMIC_GCC
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#elif FD_ATOMIC_MSVC
#  if defined(_M_ARM64)
    return (int64_t)__ldar64((unsigned __int64 volatile *)p);
#  else
    int64_t v = *(volatile const int64_t *)p;  /* x86/x64: loads are acquire */
    _ReadWriteBarrier();
    return v;
#  endif
#else
    return atomic_load_explicit((_Atomic int64_t *)p, memory_order_acquire);
#endif
}

static inline int64_t fd_load_relaxed(const int64_t *p) {
#if FD_ATOMIC_GCC
    return __atomic_load_n(p, __ATOMIC_RELAXED);
#elif FD_ATOMIC_MSVC
    return *(volatile const int64_t *)p;
#else
    return atomic_load_explicit((_Atomic int64_t *)p, memory_order_relaxed);
#endif
}

static inline void fd_store(int64_t *p, int64_t v) {
#if FD_ATOMIC_GCC
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
#elif FD_ATOMIC_MSVC
#  if defined(_M_ARM64)
    __stlr64((unsigned __int64 volatile *)p, (unsigned __int64)v);
#  else
    _ReadWriteBarrier();
    *(volatile int64_t *)p = v;  /* x86/x64: stores are release */
#  endif
#else
    atomic_store_explicit((_Atomic int64_t *)p, v, memory_order_release);
#endif
}

/* Returns the value before the addition. */
static inline int64_t fd_fetch_add(int64_t *p, int64_t v) {
#if FD_ATOMIC_GCC
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    return (int64_t)_InterlockedExchangeAdd64((volatile __int64 *)p, (__int64)v);
#else
    return atomic_fetch_add_explicit((_Atomic int64_t *)p, v, memory_order_seq_cst);
#endif
}

static inline int64_t fd_fetch_or(int64_t *p, int64_t v) {
#if FD_ATOMIC_GCC
    return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    return (int64_t)_InterlockedOr64((volatile __int64 *)p, (__int64)v);
#else
    return atomic_fetch_or_explicit((_Atomic int64_t *)p, v, memory_order_seq_cst);
#endif
}

/* Strong compare-and-swap; on failure *expected receives the current value. */
static inline int fd_cas(int64_t *p, int64_t *expected, int64_t desired) {
#if FD_ATOMIC_GCC
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    int64_t old = (int64_t)_InterlockedCompareExchange64(
        (volatile __int64 *)p, (__int64)desired, (__int64)*expected);
    if (old == *expected) return 1;
    *expected = old;
    return 0;
#else
    return atomic_compare_exchange_strong_explicit(
        (_Atomic int64_t *)p, expected, desired, memory_order_seq_cst, memory_order_seq_cst);
#endif
}

/* ------------------------------------------------------------------ */
/* Pointers                                                            */
/* ------------------------------------------------------------------ */

static inline void *fd_load_ptr(void *const *p) {
#if FD_ATOMIC_GCC
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#elif FD_ATOMIC_MSVC
#  if defined(_M_ARM64)
    return (void *)__ldar64((unsigned __int64 volatile *)p);
#  else
    void *v = *(void *volatile const *)p;
    _ReadWriteBarrier();
    return v;
#  endif
#else
    return atomic_load_explicit((_Atomic(void *) *)p, memory_order_acquire);
#endif
}

static inline void fd_store_ptr(void **p, void *v) {
#if FD_ATOMIC_GCC
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
#elif FD_ATOMIC_MSVC
#  if defined(_M_ARM64)
    __stlr64((unsigned __int64 volatile *)p, (unsigned __int64)v);
#  else
    _ReadWriteBarrier();
    *(void *volatile *)p = v;
#  endif
#else
    atomic_store_explicit((_Atomic(void *) *)p, v, memory_order_release);
#endif
}

static inline void *fd_exchange_ptr(void **p, void *v) {
#if FD_ATOMIC_GCC
    return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    return _InterlockedExchangePointer((void *volatile *)p, v);
#else
    return atomic_exchange_explicit((_Atomic(void *) *)p, v, memory_order_seq_cst);
#endif
}

static inline int fd_cas_ptr(void **p, void **expected, void *desired) {
#if FD_ATOMIC_GCC
    return __atomic_compare_exchange_n(p, expected, desired, 0,
                                       __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    void *old = _InterlockedCompareExchangePointer((void *volatile *)p, desired, *expected);
    if (old == *expected) return 1;
    *expected = old;
    return 0;
#else
    return atomic_compare_exchange_strong_explicit(
        (_Atomic(void *) *)p, expected, desired, memory_order_seq_cst, memory_order_seq_cst);
#endif
}

static inline void fd_fence(void) {
#if FD_ATOMIC_GCC
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#elif FD_ATOMIC_MSVC
    MemoryBarrier();
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* ------------------------------------------------------------------ */
/* Spinning politely                                                   */
/* ------------------------------------------------------------------ */

static inline void fd_cpu_relax(void) {
#if defined(_MSC_VER)
    YieldProcessor();
#elif (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    __builtin_ia32_pause();
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void fd_thread_yield(void) {
#if defined(_WIN32)
    SwitchToThread();
#else
    sched_yield();
#endif
}

/* Back off: a few pause instructions, then give the CPU away. The core only
 * spins on windows a few instructions wide (another thread between two of
 * its own stores), so this is never a wait for real work. */
static inline void fd_backoff(int *spins) {
    if (++*spins < 64) {
        fd_cpu_relax();
    } else {
        fd_thread_yield();
    }
}

/* A test-and-test-and-set lock guarding a mailbox's consumer side; held for
 * a handful of instructions, never across a call into Python. */
static inline void fd_spin_lock(int64_t *lock) {
    int spins = 0;
    for (;;) {
        int64_t expected = 0;
        if (fd_load_relaxed(lock) == 0 && fd_cas(lock, &expected, 1)) return;
        fd_backoff(&spins);
    }
}

static inline void fd_spin_unlock(int64_t *lock) { fd_store(lock, 0); }

/* A plain mutex: the ready queue's consumer end, and the event count's. */
typedef struct {
#if defined(_WIN32)
    SRWLOCK m;
#else
    pthread_mutex_t m;
#endif
} fd_mutex;

static inline int fd_mutex_init(fd_mutex *m) {
#if defined(_WIN32)
    InitializeSRWLock(&m->m);
    return 0;
#else
    return pthread_mutex_init(&m->m, NULL) == 0 ? 0 : -1;
#endif
}

static inline void fd_mutex_destroy(fd_mutex *m) {
#if !defined(_WIN32)
    pthread_mutex_destroy(&m->m);
#else
    (void)m;
#endif
}

static inline void fd_mutex_lock(fd_mutex *m) {
#if defined(_WIN32)
    AcquireSRWLockExclusive(&m->m);
#else
    pthread_mutex_lock(&m->m);
#endif
}

static inline void fd_mutex_unlock(fd_mutex *m) {
#if defined(_WIN32)
    ReleaseSRWLockExclusive(&m->m);
#else
    pthread_mutex_unlock(&m->m);
#endif
}

/* ------------------------------------------------------------------ */
/* Event count: park idle workers, wake them only when one is parked.   */
/*                                                                      */
/*   waiter:  key = fd_event_prepare(e); if (work found) fd_event_cancel(e);
 *            else fd_event_wait(e, key);
 *   waker:   publish work; fd_event_notify_one(e);                      */
/* The seq_cst RMW in prepare and the fence in notify make "publish work,
 * then look for waiters" and "announce waiting, then look for work" see
 * each other: one of the two sides always notices the other.           */
/* ------------------------------------------------------------------ */

typedef struct {
    int64_t epoch;
    int64_t waiters;
    /* Idle tokens, at most one per waiter: a waker that takes one owns that
     * waiter's wake-up, so one slow-to-wake worker cannot absorb every
     * notification while work piles up (the pool grows instead). */
    int64_t tokens;
    /* 1 while a worker polls for work before parking (at most one does):
     * a waker that sees it skips its wake-up, the spinner takes the work. */
    int64_t spinning;
    fd_mutex mutex;
#if defined(_WIN32)
    CONDITION_VARIABLE cond;
#else
    pthread_cond_t cond;
#endif
} fd_event;

static inline int fd_event_init(fd_event *e) {
    e->epoch = 0;
    e->waiters = 0;
    e->tokens = 0;
    e->spinning = 0;
    if (fd_mutex_init(&e->mutex) != 0) return -1;
#if defined(_WIN32)
    InitializeConditionVariable(&e->cond);
#else
    if (pthread_cond_init(&e->cond, NULL) != 0) {
        fd_mutex_destroy(&e->mutex);
        return -1;
    }
#endif
    return 0;
}

static inline void fd_event_destroy(fd_event *e) {
#if !defined(_WIN32)
    pthread_cond_destroy(&e->cond);
#endif
    fd_mutex_destroy(&e->mutex);
}

/* Take one idle token if there is one; 1 if taken. */
static inline int fd_event_take_token(fd_event *e) {
    int64_t t;
    fd_fence();
    t = fd_load(&e->tokens);
    while (t > 0) {
        if (fd_cas(&e->tokens, &t, t - 1)) return 1;
    }
    return 0;
}

static inline int64_t fd_event_prepare(fd_event *e) {
    fd_fetch_add(&e->waiters, 1);
    fd_fetch_add(&e->tokens, 1);
    return fd_load(&e->epoch);
}

/* Leaving the waiting state, for whatever reason: give up a token if one is
 * left. Keeps tokens <= waiters, the safe side: a token always names a
 * worker that will see the next notification. */
static inline void fd_event_leave(fd_event *e) {
    fd_event_take_token(e);
    fd_fetch_add(&e->waiters, -1);
}

static inline void fd_event_cancel(fd_event *e) { fd_event_leave(e); }

static inline void fd_event_wait(fd_event *e, int64_t key) {
    fd_mutex_lock(&e->mutex);
    while (fd_load(&e->epoch) == key) {
#if defined(_WIN32)
        SleepConditionVariableSRW(&e->cond, &e->mutex.m, INFINITE, 0);
#else
        pthread_cond_wait(&e->cond, &e->mutex.m);
#endif
    }
    fd_mutex_unlock(&e->mutex);
    fd_event_leave(e);
}

static inline int fd_event_has_waiters(fd_event *e) {
    fd_fence();
    return fd_load(&e->waiters) > 0;
}

static inline void fd_event_notify(fd_event *e, int all) {
    if (!fd_event_has_waiters(e)) return;
    /* The epoch moves under the mutex (a waiter checks it under the mutex, so
     * it either sees the move or is already asleep); the wake-up comes after
     * the unlock, so the woken worker does not block on the mutex we hold. */
    fd_mutex_lock(&e->mutex);
    fd_fetch_add(&e->epoch, 1);
    fd_mutex_unlock(&e->mutex);
#if defined(_WIN32)
    if (all) WakeAllConditionVariable(&e->cond); else WakeConditionVariable(&e->cond);
#else
    if (all) pthread_cond_broadcast(&e->cond); else pthread_cond_signal(&e->cond);
#endif
}

static inline void fd_event_notify_one(fd_event *e) { fd_event_notify(e, 0); }

/* ------------------------------------------------------------------ */
/* The spinner: one idle worker polls briefly before it parks.          */
/*                                                                      */
/*   spinner: if (fd_event_try_spin(e)) { poll, bounded, with           */
/*            fd_spin_pause(i); fd_event_stop_spin(e); look for work }  */
/*            then the waiter protocol above.                           */
/*   waker:   publish work; if (!fd_event_spinning(e)) wake as usual.   */
/* Go's scheduler does the same with its "spinning M": with a producer   */
/* and a worker truly running at once, the worker that has just run dry  */
/* finds the next item within microseconds, and parking it (then waking  */
/* it) would cost two or three futex calls per item. One spinner at      */
/* most, so idle workers never crowd out a producer on a small machine.  */
/* Dekker again: the stop is a seq_cst RMW followed by a look for work,  */
/* the waker publishes, fences, then reads the flag: either the spinner  */
/* sees the work or the waker sees no spinner (and wakes someone).       */
/* ------------------------------------------------------------------ */

/* Become the spinner; 1 if this thread is now the only one. */
static inline int fd_event_try_spin(fd_event *e) {
    int64_t expected = 0;
    if (fd_load_relaxed(&e->spinning) != 0) return 0;
    return fd_cas(&e->spinning, &expected, 1);
}

/* The fence orders the flag's release before the spinner's last look for
 * work even where acquire loads may pass a store (ARMv8.3 LDAPR). */
static inline void fd_event_stop_spin(fd_event *e) {
    fd_fetch_add(&e->spinning, -1);
    fd_fence();
}

static inline int fd_event_spinning(fd_event *e) {
    fd_fence();
    return fd_load(&e->spinning) != 0;
}

/* One step of a bounded spin: a few pause instructions, and every 8th step
 * the CPU itself, so a spinner sharing a core with a producer or a busy
 * worker lets them run (on a 2-core machine there usually is one). */
static inline void fd_spin_pause(int step) {
    int k;
    if ((step & 7) == 7) {
        fd_thread_yield();
        return;
    }
    for (k = 0; k < 16; k++) fd_cpu_relax();
}
static inline void fd_event_notify_all(fd_event *e) { fd_event_notify(e, 1); }

#endif /* FASTDISPATCH_ATOMIC_H */
