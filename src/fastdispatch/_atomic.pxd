# Declarations of the compiled core's C layer, for cimport: the atomics and
# polite spinning of _atomic.h, and the parking primitives of _parking.h.
# Neither needs the GIL.

from libc.stdint cimport int64_t


cdef extern from "_atomic.h" nogil:
    int64_t fd_load(const int64_t *p)
    int64_t fd_load_relaxed(const int64_t *p)
    void fd_store(int64_t *p, int64_t v)
    int64_t fd_fetch_add(int64_t *p, int64_t v)
    int64_t fd_fetch_or(int64_t *p, int64_t v)
    bint fd_cas(int64_t *p, int64_t *expected, int64_t desired)
    void *fd_load_ptr(void **p)
    void fd_store_ptr(void **p, void *v)
    void *fd_exchange_ptr(void **p, void *v)
    bint fd_cas_ptr(void **p, void **expected, void *desired)
    void fd_backoff(int *spins)
    void fd_thread_yield()
    void fd_spin_lock(int64_t *lock)
    void fd_spin_unlock(int64_t *lock)
    void fd_fence()
    void fd_spin_pause(int step)


cdef extern from "_parking.h" nogil:
    ctypedef struct fd_event:
        pass
    int fd_event_init(fd_event *e)
    void fd_event_destroy(fd_event *e)
    int64_t fd_event_prepare(fd_event *e)
    void fd_event_cancel(fd_event *e)
    void fd_event_wait(fd_event *e, int64_t key)
    bint fd_event_take_token(fd_event *e)
    void fd_event_notify_one(fd_event *e)
    void fd_event_notify_all(fd_event *e)
    bint fd_event_try_spin(fd_event *e)
    void fd_event_stop_spin(fd_event *e)
    bint fd_event_spinning(fd_event *e)

    ctypedef struct fd_mutex:
        pass
    int fd_mutex_init(fd_mutex *m)
    void fd_mutex_destroy(fd_mutex *m)
    void fd_mutex_lock(fd_mutex *m)
    void fd_mutex_unlock(fd_mutex *m)
