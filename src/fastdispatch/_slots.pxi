# Per-worker counters: one cache line each, written by their worker only.
# Included by _core_c.pyx (textually, so that every function stays inlinable);
# nogil throughout. It uses the constants and cimports declared there.


# -- per-worker counters -----------------------------------------------------

cdef struct Slot:
    int64_t used       # atomic: claimed by a live worker
    int64_t running    # written by the owner only
    int64_t completed
    int64_t failed
    int64_t cancelled
    int64_t owed       # counted above but not yet taken off the intake's unfinished count
    char pad[16]       # one cache line per worker


cdef inline void slot_bump(int64_t *counter) noexcept nogil:
    # Single writer: a load and a store, no read-modify-write.
    fd_store(counter, fd_load_relaxed(counter) + 1)


cdef inline void slot_done(Slot *slot, int64_t *outcome) noexcept nogil:
    # Both before anything can observe the outcome (a future's waiter, its
    # callbacks): stats() derive `dispatched` from the two together.
    slot_bump(outcome)
    slot_bump(&slot.owed)
