# The ready queue of mailboxes: Vyukov's intrusive MPSC list, its consumer
# end behind a mutex shared by the workers only.
# Included by _core_c.pyx (textually, so that every function stays inlinable);
# nogil throughout. It uses the constants and cimports declared there.


# -- ready queue -----------------------------------------------------------

cdef struct ReadyQueue:
    Node *head         # atomic: producers swap themselves in here
    Node *tail         # atomic: consumer end, written under lock (rq_peek reads it without)
    Node stub
    fd_mutex lock


cdef inline void rq_init(ReadyQueue *q) noexcept nogil:
    q.stub.next = NULL
    q.stub.owner = NULL
    q.head = &q.stub
    q.tail = &q.stub


cdef inline void rq_push(ReadyQueue *q, Node *n) noexcept nogil:
    cdef Node *prev
    fd_store_ptr(<void **>&n.next, NULL)
    prev = <Node *>fd_exchange_ptr(<void **>&q.head, n)
    fd_store_ptr(<void **>&prev.next, n)


cdef inline bint rq_peek(ReadyQueue *q) noexcept nogil:
    """Whether the queue looks non-empty, without its lock (a hint: the
    spinner polls with it, so that it never contends for the lock)."""
    # The tail is the stub or the next node to hand out; a push moves head.
    return (fd_load_ptr(<void **>&q.tail) != <void *>&q.stub
            or fd_load_ptr(<void **>&q.head) != <void *>&q.stub)


cdef inline Node *rq_pop_locked(ReadyQueue *q, bint *busy) noexcept nogil:
    cdef Node *t = q.tail
    cdef Node *nxt = <Node *>fd_load_ptr(<void **>&t.next)
    cdef Node *h
    if t == &q.stub:
        if nxt == NULL:
            return NULL
        fd_store_ptr(<void **>&q.tail, nxt)
        t = nxt
        nxt = <Node *>fd_load_ptr(<void **>&nxt.next)
    if nxt != NULL:
        fd_store_ptr(<void **>&q.tail, nxt)
        return t
    h = <Node *>fd_load_ptr(<void **>&q.head)
    if t != h:
        busy[0] = True
        return NULL
    rq_push(q, &q.stub)
    nxt = <Node *>fd_load_ptr(<void **>&t.next)
    if nxt != NULL:
        fd_store_ptr(<void **>&q.tail, nxt)
        return t
    busy[0] = True
    return NULL


cdef Node *rq_pop(ReadyQueue *q) noexcept nogil:
    cdef Node *n
    cdef bint busy
    cdef int spins = 0
    while True:
        busy = False
        fd_mutex_lock(&q.lock)
        n = rq_pop_locked(q, &busy)
        fd_mutex_unlock(&q.lock)
        if n != NULL or not busy:
            return n
        # A producer is between its two stores of a push.
        fd_backoff(&spins)
