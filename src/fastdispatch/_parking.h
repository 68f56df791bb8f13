/*
 * fastdispatch/_parking.h: how idle workers sleep and are woken.
 *
 * A plain mutex and an event count (mutex + condition variable: pthreads, or
 * SRWLOCK + CONDITION_VARIABLE on Windows) that wakes a worker only when one
 * is actually parked, plus the "spinning" flag that lets at most one idle
 * worker poll briefly before it parks. Built on the atomics of _atomic.h;
 * nothing here needs the GIL or the Python API.
 */
#ifndef FASTDISPATCH_PARKING_H
#define FASTDISPATCH_PARKING_H

#include "_atomic.h"

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

#endif /* FASTDISPATCH_PARKING_H */
