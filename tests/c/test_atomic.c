/* Exercises src/fastdispatch/_atomic.h from several threads: every RMW is
 * atomic, CAS and exchange hand out each value once, the spin lock excludes,
 * the event count never loses a wake-up, also when producers skip it for a
 * spinning consumer, and only one consumer spins at a time. Exit status 0
 * means all held. */
#include "_parking.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define THREADS 4
#define ROUNDS 200000

static int64_t counter, cas_counter, locked_counter, lock_word, handoff;
static void *slot_ptr;
static int64_t taken[THREADS * ROUNDS + 1];
static fd_event event;
static int64_t published, consumed, stop;
static int64_t spinners, most_spinners, spin_mode;

static void *hammer(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        fd_fetch_add(&counter, 1);
        int64_t seen = fd_load(&cas_counter);
        while (!fd_cas(&cas_counter, &seen, seen + 1)) {
        }
        fd_fetch_add(&taken[seen], 1); /* each value must come out once */
        fd_spin_lock(&lock_word);
        locked_counter = locked_counter + 1; /* plain: the lock must exclude */
        fd_spin_unlock(&lock_word);
        void *mine = (void *)(intptr_t)(i + 1);
        void *prev = fd_exchange_ptr(&slot_ptr, mine);
        (void)prev;
    }
    return NULL;
}

/* One consumer parks on the event; producers publish then notify. */
static void *consumer(void *arg) {
    (void)arg;
    for (;;) {
        if (fd_load(&consumed) < fd_load(&published)) {
            fd_fetch_add(&consumed, 1);
            continue;
        }
        if (fd_load(&stop)) return NULL;
        int64_t key = fd_event_prepare(&event);
        if (fd_load(&consumed) < fd_load(&published) || fd_load(&stop)) {
            fd_event_cancel(&event);
            continue;
        }
        fd_event_wait(&event, key);
    }
}

/* Takes one published item if there is one (several consumers race). */
static int take_one(void) {
    int64_t c = fd_load(&consumed);
    return c < fd_load(&published) && fd_cas(&consumed, &c, c + 1);
}

/* Several consumers; the one that wins the spinner role polls before it parks. */
static void *spinning_consumer(void *arg) {
    (void)arg;
    for (;;) {
        if (take_one()) continue;
        if (fd_load(&consumed) < fd_load(&published)) continue; /* lost a race */
        if (fd_load(&stop)) return NULL;
        if (fd_event_try_spin(&event)) {
            int64_t now = fd_fetch_add(&spinners, 1) + 1;
            int64_t most = fd_load(&most_spinners);
            while (now > most && !fd_cas(&most_spinners, &most, now)) {
            }
            for (int step = 0; step < 64; step++) {
                if (fd_load(&consumed) < fd_load(&published) || fd_load(&stop)) break;
                fd_spin_pause(step);
            }
            fd_fetch_add(&spinners, -1);
            fd_event_stop_spin(&event);
            continue; /* look again, then park if still nothing */
        }
        int64_t key = fd_event_prepare(&event);
        if (fd_load(&consumed) < fd_load(&published) || fd_load(&stop)) {
            fd_event_cancel(&event);
            continue;
        }
        fd_event_wait(&event, key);
    }
}

static void *producer(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS / 10; i++) {
        fd_fetch_add(&published, 1);
        /* A spinner takes the item: the wake-up is skipped, and must not be lost. */
        if (!fd_load(&spin_mode) || !fd_event_spinning(&event)) fd_event_notify_one(&event);
        if (i % 64 == 0) fd_thread_yield();
    }
    return NULL;
}

#define CHECK(cond)                                                       \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main(void) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, hammer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    CHECK(fd_load(&counter) == (int64_t)THREADS * ROUNDS);
    CHECK(fd_load(&cas_counter) == (int64_t)THREADS * ROUNDS);
    CHECK(locked_counter == (int64_t)THREADS * ROUNDS);
    for (int64_t v = 0; v < (int64_t)THREADS * ROUNDS; v++) CHECK(taken[v] == 1);
    CHECK(fd_fetch_or(&handoff, 4) == 0 && fd_fetch_or(&handoff, 1) == 4 && fd_load(&handoff) == 5);
    void *expected = NULL;
    void *target = NULL;
    CHECK(fd_cas_ptr(&target, &expected, &handoff) && target == &handoff);
    expected = NULL;
    CHECK(!fd_cas_ptr(&target, &expected, NULL) && expected == &handoff);

    CHECK(fd_event_init(&event) == 0);
    pthread_t c, p[THREADS];
    pthread_create(&c, NULL, consumer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&p[i], NULL, producer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(p[i], NULL);
    fd_store(&stop, 1);
    fd_event_notify_all(&event);
    pthread_join(c, NULL); /* hangs (and the test times out) if a wake-up was lost */
    CHECK(fd_load(&consumed) == fd_load(&published));
    CHECK(fd_load(&published) == (int64_t)THREADS * (ROUNDS / 10));
    CHECK(fd_load(&event.waiters) == 0);
    fd_event_destroy(&event);

    /* Again with three consumers that spin before parking. */
    fd_store(&published, 0);
    fd_store(&consumed, 0);
    fd_store(&stop, 0);
    fd_store(&spin_mode, 1);
    CHECK(fd_event_init(&event) == 0);
    pthread_t sc[3];
    for (int i = 0; i < 3; i++) pthread_create(&sc[i], NULL, spinning_consumer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_create(&p[i], NULL, producer, NULL);
    for (int i = 0; i < THREADS; i++) pthread_join(p[i], NULL);
    /* Every item is taken before stop (a lost wake-up hangs here: the test times out). */
    while (fd_load(&consumed) < fd_load(&published)) fd_thread_yield();
    fd_store(&stop, 1);
    fd_event_notify_all(&event);
    for (int i = 0; i < 3; i++) pthread_join(sc[i], NULL);
    CHECK(fd_load(&consumed) == (int64_t)THREADS * (ROUNDS / 10));
    CHECK(fd_load(&most_spinners) == 1);
    CHECK(fd_load(&event.spinning) == 0 && fd_load(&event.waiters) == 0);
    fd_event_destroy(&event);
    puts("ok");
    return 0;
}
