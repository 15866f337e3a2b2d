/* Crash test of the store: a child process ingests and deletes batches and reports each
 * acknowledged operation over a pipe; the parent kills it with SIGKILL at a random moment,
 * reopens the store and checks that every acknowledged point is present with its exact raw
 * embedding and payload, that the operation in flight is all there or not there at all, and
 * that every index agrees with LMDB.
 *
 * ALTMOE_CRASH_CYCLES sets the number of kill cycles (default 20; `make test-crash` runs 100).
 * The child is this binary run again with --child, so it starts clean instead of inheriting
 * FAISS's OpenMP threads through fork(). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "store_testutil.h"

#define MAX_BATCHES 100000
#define REC_BEGIN 1
#define REC_ACK 2

typedef struct report {
    int kind;
    int batch;
} report;

/* Every fifth batch deletes the points of the batch three before it; the others upsert. */
static int is_delete(int b)
{
    return b % 5 == 4;
}

static int batch_size(int b)
{
    return 1 + b % 6;
}

static void point_id(char *buf, int b, int i)
{
    snprintf(buf, 32, "b%d-%d", b, i);
}

static const char *point_modality(int i)
{
    return i % 2 ? "image" : "text";
}

static int point_seq(int b, int i)
{
    return 1 + (b + i) % 3;
}

static int point_dim(int i)
{
    return i % 2 ? IMAGE_DIM : TEXT_DIM;
}

static void point_payload(char *buf, int b, int i)
{
    snprintf(buf, 64, "{\"b\": %d, \"i\": %d, \"tag\": \"t%d\"}", b, i, b % 3);
}

/* ---------------------------------------------------------------------------------------
 * Child
 * --------------------------------------------------------------------------------------- */

static amc_status run_batch(ami_store *st, int b)
{
    amc_error err = {0};
    amc_status s;
    char ids[8][32], payloads[8][64];
    if (is_delete(b)) {
        const char *list[8];
        int d = b - 3;
        for (int i = 0; i < batch_size(d); i++) {
            point_id(ids[i], d, i);
            list[i] = ids[i];
        }
        s = ami_points_delete(st, "crash", list, batch_size(d), NULL, &err);
    } else {
        ami_point pts[8];
        float *x = malloc(sizeof(float) * 3 * TEXT_DIM * 8);
        for (int i = 0; i < batch_size(b); i++) {
            point_id(ids[i], b, i);
            point_payload(payloads[i], b, i);
            float *e = x + (size_t)i * 3 * TEXT_DIM;
            test_fill(e, (size_t)(point_seq(b, i) * point_dim(i)), (uint64_t)b, (uint64_t)i);
            pts[i] = (ami_point){ids[i], point_modality(i), e, point_seq(b, i), payloads[i]};
        }
        s = ami_points_upsert(st, "crash", pts, batch_size(b), NULL, &err);
        free(x);
    }
    if (s != AMC_OK)
        fprintf(stderr, "child: batch %d failed: %s\n", b, err.msg);
    return s;
}

static int child_main(const char *dir, int first, int fd)
{
    amc_connector *conn = test_connector(1);
    ami_store *st;
    ami_store_options opts = {.map_size = 256 << 10};
    amc_error err = {0};
    if (ami_store_open(&st, dir, conn, &opts, &err) != AMC_OK) {
        fprintf(stderr, "child: open failed: %s\n", err.msg);
        return 2;
    }
    for (int b = first; b < MAX_BATCHES; b++) {
        if (b % 9 == 0 && ami_store_snapshot(st, &err) != AMC_OK) {
            fprintf(stderr, "child: snapshot failed: %s\n", err.msg);
            return 3;
        }
        report r = {REC_BEGIN, b};
        if (write(fd, &r, sizeof r) != sizeof r || run_batch(st, b) != AMC_OK)
            return 4;
        r.kind = REC_ACK;
        if (write(fd, &r, sizeof r) != sizeof r)
            return 5;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Parent
 * --------------------------------------------------------------------------------------- */

typedef struct crash_state {
    char dir[64];
    int next;                    /* first batch the next child runs */
    unsigned char *present;      /* [MAX_BATCHES] 1 when the batch's points are stored */
    amc_connector *conn;
} crash_state;

/* 1 when point (b, i) is stored exactly, 0 when absent; fails the test on anything else. */
static int check_point(ami_store *st, int b, int i)
{
    char id[32], payload[64];
    point_id(id, b, i);
    ami_point_data d;
    amc_error err = {0};
    amc_status s = ami_point_get(st, "crash", id, &d, &err);
    if (s == AMC_ENOTFOUND)
        return 0;
    assert_int_equal(s, AMC_OK);
    point_payload(payload, b, i);
    assert_string_equal(d.payload, payload);
    assert_int_equal(d.n_embeddings, 1);
    assert_string_equal(d.embeddings[0].modality, point_modality(i));
    assert_int_equal(d.embeddings[0].seq, point_seq(b, i));
    size_t n = (size_t)(point_seq(b, i) * point_dim(i));
    float *want = malloc(sizeof(float) * n);
    test_fill(want, n, (uint64_t)b, (uint64_t)i);
    assert_memory_equal(d.embeddings[0].data, want, sizeof(float) * n);
    free(want);
    ami_point_data_free(&d);
    return 1;
}

/* Number of points of batch b stored; fails unless that is all of them or none. */
static int batch_presence(ami_store *st, int b)
{
    int found = 0;
    for (int i = 0; i < batch_size(b); i++)
        found += check_point(st, b, i);
    assert_true(found == 0 || found == batch_size(b));
    return found > 0;
}

/* Runs a child from cs->next, kills it after delay_us, and returns what it reported. */
static void run_child(crash_state *cs, long delay_us, int *last_ack, int *in_flight)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    char first[16], fd[16];
    snprintf(first, sizeof first, "%d", cs->next);
    snprintf(fd, sizeof fd, "%d", fds[1]);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        execl("/proc/self/exe", "test_store_crash", "--child", cs->dir, first, fd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    *last_ack = cs->next - 1;
    *in_flight = -1;
    report r;
    while (read(fds[0], &r, sizeof r) == sizeof r) {
        if (r.kind == REC_BEGIN)
            *in_flight = r.batch;
        if (r.kind == REC_ACK) {
            *last_ack = r.batch;
            *in_flight = -1;
        }
    }
    close(fds[0]);
}

/* Applies the acknowledged batches to the expected state. */
static void apply_acks(crash_state *cs, int last_ack)
{
    for (int b = cs->next; b <= last_ack; b++) {
        if (is_delete(b))
            cs->present[b - 3] = 0;
        else
            cs->present[b] = 1;
    }
}

/* Reopens the store and checks it against the expected state. */
static void verify(crash_state *cs, int in_flight, int with_snapshots)
{
    ami_store *st;
    ami_store_options opts = {.read_only_snapshots = !with_snapshots};
    amc_error err = {0};
    assert_int_equal(ami_store_open(&st, cs->dir, cs->conn, &opts, &err), AMC_OK);

    /* The operation in flight may have committed: all or nothing, then it counts. */
    if (in_flight >= 0) {
        int target = is_delete(in_flight) ? in_flight - 3 : in_flight;
        int there = batch_presence(st, target);
        if (!is_delete(in_flight) || cs->present[target])
            cs->present[target] = (unsigned char)there;
        else
            assert_int_equal(there, 0);
    }

    uint64_t points = 0, vectors[2] = {0, 0};
    int limit = in_flight >= cs->next ? in_flight + 1 : cs->next;
    for (int b = 0; b < limit; b++) {
        if (is_delete(b))
            continue;
        int there = batch_presence(st, b);
        assert_int_equal(there, cs->present[b]);
        for (int i = 0; there && i < batch_size(b); i++)
            vectors[i % 2]++;
        points += there ? (uint64_t)batch_size(b) : 0;
    }

    /* Counters and both indices agree with LMDB once the background builds are done. */
    assert_true(test_wait_ready(st));
    ami_collection_info info;
    assert_int_equal(ami_collection_describe(st, "crash", &info, NULL), AMC_OK);
    assert_int_equal(info.points, points);
    assert_int_equal(info.vectors[0], vectors[0]);
    assert_int_equal(info.vectors[1], vectors[1]);
    assert_int_equal(info.indexed[0], vectors[0]);
    assert_int_equal(info.indexed[1], vectors[1]);

    /* Flat index: each of the last few text points finds itself first. */
    int checked = 0;
    for (int b = limit - 1; b >= 0 && checked < 5; b--) {
        if (is_delete(b) || !cs->present[b])
            continue;
        float x[3 * TEXT_DIM];
        test_fill(x, (size_t)(point_seq(b, 0) * TEXT_DIM), (uint64_t)b, 0);
        ami_query q = {"text", x, point_seq(b, 0)};
        ami_search_params p = {.target = "text", .k = 1};
        ami_result r;
        assert_int_equal(ami_search(st, "crash", &q, 1, &p, &r, &err), AMC_OK);
        char id[32];
        point_id(id, b, 0);
        assert_int_equal(r.n, 1);
        assert_string_equal(r.hits[0].id, id);
        ami_results_free(&r, 1);
        checked++;
    }
    ami_store_close(st);
    cs->next = limit;
}

static void test_kill_cycles(void **state)
{
    (void)state;
    const char *env = getenv("ALTMOE_CRASH_CYCLES");
    int cycles = env != NULL ? atoi(env) : 20;
    unsigned seed = (unsigned)time(NULL);
    srand(seed);
    printf("crash test: %d cycles, timing seed %u\n", cycles, seed);

    crash_state cs = {.next = 0};
    cs.present = calloc(MAX_BATCHES, 1);
    cs.conn = test_connector(1);
    test_tmpdir(cs.dir);

    /* The collection exists before the first child: text in Flat, image in HNSW. */
    ami_store *st;
    assert_int_equal(ami_store_open(&st, cs.dir, cs.conn, NULL, NULL), AMC_OK);
    ami_collection_spec spec = test_spec("crash", "Flat", "HNSW8");
    assert_int_equal(ami_collection_create(st, &spec, NULL), AMC_OK);
    ami_store_close(st);

    int acked = 0;
    for (int c = 0; c < cycles; c++) {
        int last_ack, in_flight;
        long delay = 30000 + rand() % 170000;
        run_child(&cs, delay, &last_ack, &in_flight);
        acked += last_ack - cs.next + 1;
        apply_acks(&cs, last_ack);
        cs.next = last_ack + 1;
        verify(&cs, in_flight, rand() % 2);
    }
    printf("crash test: %d acknowledged batches over %d cycles, all intact\n", acked, cycles);
    assert_true(acked > 0);
    amc_connector_free(cs.conn);
    test_rmdir(cs.dir);
    free(cs.present);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "--child") == 0)
        return child_main(argv[2], atoi(argv[3]), atoi(argv[4]));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kill_cycles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
