# The per-master queue: a chain of ring chunks addressed by sequence number,
# and the mailbox word that carries its state.
# Included by _core_c.pyx (textually, so that every function stays inlinable);
# nogil throughout. It uses the constants and cimports declared there.


# -- ring chunks ---------------------------------------------------------

cdef struct Chunk:
    Chunk *next        # atomic: set once by the producer that overflows
    int64_t base       # sequence number of slots[0]
    int64_t size
    int64_t embedded   # the first chunk lives inside its _Mailbox: never freed alone
    PyObject **slots   # size slots (right after the header); NULL = not yet stored


cdef Chunk *chunk_new(int64_t base, int64_t size) noexcept nogil:
    cdef Chunk *c = <Chunk *>PyMem_RawCalloc(
        1, sizeof(Chunk) + <size_t>size * sizeof(PyObject *))
    if c != NULL:
        c.base = base
        c.size = size
        c.slots = <PyObject **>(<char *>c + sizeof(Chunk))
    return c


cdef inline void chunk_free(Chunk *c) noexcept nogil:
    if not c.embedded:
        PyMem_RawFree(c)


cdef Chunk *chunk_new_retrying(int64_t base, int64_t size) noexcept nogil:
    # A reserved slot must be published, or the consumer would wait for it
    # forever; a few KiB that cannot be had now are retried, not given up.
    cdef Chunk *c = chunk_new(base, size)
    cdef int spins = 0
    while c == NULL:
        fd_backoff(&spins)
        c = chunk_new(base, size)
    return c


cdef struct Node:
    Node *next         # atomic
    PyObject *owner    # the _Mailbox (borrowed; the queue's reference is counted separately)


cdef struct Ring:
    int64_t word       # atomic: (reserved << 2) | state
    int64_t taken      # atomic: items ever taken out; written under lock only
    int64_t blocked    # atomic: producers waiting for room
    int64_t lock       # consumer-side spin lock
    Chunk *tail        # atomic: at or before the chunk of the newest reservation
    Chunk *head        # consumer: chunk of the next item
    int64_t head_idx   # consumer: slot of the next item in head
    Chunk *oldest      # consumer: first chunk not yet freed (chain oldest..head retired)
    int64_t running    # owner: an item of this master is being handled
    Node node          # link in the ready queue


cdef inline int64_t ring_queued(Ring *r) noexcept nogil:
    # taken is read first: it never passes reserved, which only grows, so
    # this is never < 0 (read the other way round, items reserved and taken
    # between the two loads would make it negative).
    cdef int64_t taken = fd_load(&r.taken)
    return (fd_load(&r.word) >> 2) - taken


cdef inline int64_t ring_reserve(Ring *r, int64_t capacity) noexcept nogil:
    """Reserve the next sequence number and mark the ring SCHEDULED (a PAUSED
    one stays PAUSED): the old word (its sequence number is old >> 2), or -1
    if DEAD, -2 if full."""
    cdef int64_t w = fd_load(&r.word)
    while True:
        if (w & STATE_MASK) == DEAD:
            return -1
        # A stale `taken` only overstates the queue: full a moment early,
        # never over capacity.
        if capacity >= 0 and (w >> 2) - fd_load(&r.taken) >= capacity:
            return -2
        # IDLE | SCHEDULED = SCHEDULED, PAUSED | SCHEDULED = PAUSED.
        if fd_cas(&r.word, &w, (w + COUNT_ONE) | SCHEDULED):
            return w


cdef inline void ring_push(Ring *r, Chunk *c, int64_t seq, PyObject *item) noexcept nogil:
    """Publish the item reserved as number seq. c is the tail as read before
    the reservation (so c.base <= seq), by a caller inside the intake (so no
    chunk from c on has been freed)."""
    cdef Chunk *n
    cdef Chunk *fresh
    cdef void *expected
    cdef int64_t size
    while seq - c.base >= c.size:
        n = <Chunk *>fd_load_ptr(<void **>&c.next)
        if n == NULL:
            size = c.size * 2
            if size > MAX_CHUNK:
                size = MAX_CHUNK
            fresh = chunk_new_retrying(c.base + c.size, size)
            expected = NULL
            if fd_cas_ptr(<void **>&c.next, &expected, fresh):
                n = fresh
            else:
                chunk_free(fresh)
                n = <Chunk *>expected
        # Move the tail on past every chunk walked through (whoever wins),
        # before publishing: a chunk the consumer has left is never the tail
        # once its item's producer is out of the intake.
        expected = c
        fd_cas_ptr(<void **>&r.tail, &expected, n)
        c = n
    fd_store_ptr(<void **>&c.slots[seq - c.base], item)


cdef inline PyObject *ring_pop(Ring *r) noexcept nogil:
    """Consumer, under r.lock: take the next item (the ring's reference), or
    NULL when nothing is reserved."""
    cdef Chunk *c
    cdef Chunk *n
    cdef PyObject *item
    cdef int spins = 0
    cdef int64_t taken = fd_load_relaxed(&r.taken)  # only lock holders write it
    if (fd_load(&r.word) >> 2) == taken:
        return NULL
    c = r.head
    if r.head_idx == c.size:
        # The reserved item lives in a later chunk; its producer links it
        # before publishing, a few instructions away.
        n = <Chunk *>fd_load_ptr(<void **>&c.next)
        while n == NULL:
            fd_backoff(&spins)
            n = <Chunk *>fd_load_ptr(<void **>&c.next)
        r.head = n
        r.head_idx = 0
        c = n
    item = <PyObject *>fd_load_ptr(<void **>&c.slots[r.head_idx])
    while item == NULL:
        fd_backoff(&spins)
        item = <PyObject *>fd_load_ptr(<void **>&c.slots[r.head_idx])
    c.slots[r.head_idx] = NULL
    r.head_idx += 1
    fd_store(&r.taken, taken + 1)
    return item


cdef inline void ring_reclaim(Ring *r) noexcept nogil:
    """Consumer, under r.lock, with no producer mid-enqueue: free passed chunks."""
    cdef Chunk *c
    while r.oldest != r.head:
        c = r.oldest
        r.oldest = c.next
        chunk_free(c)


cdef inline bint ring_try_state(Ring *r, int64_t from_state, int64_t to_state) noexcept nogil:
    """from_state -> to_state, keeping the count (producers may reserve
    meanwhile); False if the ring is not in from_state."""
    cdef int64_t w = fd_load(&r.word)
    while (w & STATE_MASK) == from_state:
        if fd_cas(&r.word, &w, (w & ~(<int64_t>STATE_MASK)) | to_state):
            return True
    return False


cdef inline bint ring_try_empty(Ring *r, int64_t from_state, int64_t to_state) noexcept nogil:
    """Empty and in state from_state -> to_state; False if an item was
    reserved (or taken by another consumer meanwhile: the caller looks again)."""
    # A reservation changes the count, a state change the state: both are
    # CASes on the word, so one CAS decides.
    cdef int64_t taken = fd_load(&r.taken)
    cdef int64_t w = (taken << 2) | from_state
    return fd_cas(&r.word, &w, (taken << 2) | to_state)


cdef inline bint ring_try_idle(Ring *r) noexcept nogil:
    """A drained mailbox in its worker's hands stays for its master: SCHEDULED -> IDLE."""
    return ring_try_empty(r, SCHEDULED, IDLE)


cdef inline bint ring_try_kill(Ring *r, int64_t from_state) noexcept nogil:
    """A drained mailbox is retired: from_state -> DEAD."""
    return ring_try_empty(r, from_state, DEAD)
