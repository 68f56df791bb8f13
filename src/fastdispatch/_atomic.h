/*
 * fastdispatch/_atomic.h: the portable layer of the compiled core.
 *
 * Atomics on plain int64_t / pointer words (GCC and Clang __atomic builtins,
 * MSVC Interlocked intrinsics, C11 <stdatomic.h> otherwise), polite spinning
 * and a tiny spin lock. Parking idle workers is _parking.h, built on this.
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

#endif /* FASTDISPATCH_ATOMIC_H */
