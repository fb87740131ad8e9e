/*
 * FUSE over io_uring (see uring.h).
 *
 * The kernel side (fs/fuse/dev_uring.c) works with "ring entries": a header
 * buffer (fuse_in_header / fuse_out_header, the opcode's fixed argument,
 * and a small trailer) and a payload buffer of at least max_write bytes.
 * An entry is handed to the kernel by an IORING_OP_URING_CMD on /dev/fuse
 * (REGISTER once, then COMMIT_AND_FETCH with each reply); its completion
 * means a request was copied into it.  Requests are queued on the ring
 * queue of the CPU the caller runs on, and all queues (one per possible CPU)
 * must have an entry before the kernel switches from /dev/fuse to the ring.
 *
 * Each worker, pinned to its CPU, owns one io_uring and one entry: the
 * payload sits behind a headroom so that the header and the fixed argument
 * can be put in front of it, giving libfuse the same contiguous message a
 * read(2) of /dev/fuse would.  The reply is captured by the session's
 * custom-io writev (matched by unique id against the worker's current
 * request) into the entry, and committed with the next fetch.  Two workers
 * per CPU, so that a handler that waits on the kernel (a notification that
 * needs a page written back) leaves a worker to serve the request it waits
 * for; only two such handlers at once on one CPU would wait on each other
 * (at shutdown, join_all() aborts the connection under them).
 *
 * The protocol structures are ABI (include/uapi/linux/fuse.h, 7.42); Debian
 * 12's headers predate them, so they are declared here.
 */
#include "uring.h"
#include "mountinfo.h"
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/io_uring.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* --- ABI (Linux uapi fuse.h) --------------------------------------------- */

#define K_FUSE_INIT		26
#define K_FUSE_INIT_EXT		(1u << 30)
#define K_FUSE_OVER_IO_URING_HI	(1u << 9)	/* FUSE_OVER_IO_URING (1ULL << 41), in flags2 */
#define K_FUSE_MIN_READ_BUFFER	8192u

#define URING_CMD_REGISTER	1u
#define URING_CMD_COMMIT_FETCH	2u

struct k_in_header {
	uint32_t len;
	uint32_t opcode;
	uint64_t unique;
	uint64_t nodeid;
	uint32_t uid, gid, pid;
	uint16_t total_extlen;
	uint16_t padding;
};

struct k_out_header {
	uint32_t len;
	int32_t error;
	uint64_t unique;
};

struct k_init_in {		/* 7.36+ */
	uint32_t major, minor, max_readahead, flags, flags2;
	uint32_t unused[11];
};

struct k_init_out {		/* 7.36+ */
	uint32_t major, minor, max_readahead, flags;
	uint16_t max_background, congestion_threshold;
	uint32_t max_write, time_gran;
	uint16_t max_pages, map_alignment;
	uint32_t flags2;
	uint32_t unused[7];
};

struct k_uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id;
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};

struct k_uring_req_header {
	char in_out[128];
	char op_in[128];
	struct k_uring_ent_in_out ring_ent_in_out;
};

struct k_uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};

_Static_assert(sizeof(struct k_in_header) == 40, "fuse_in_header");
_Static_assert(sizeof(struct k_init_out) == 64, "fuse_init_out");
_Static_assert(offsetof(struct k_init_out, flags2) == 32, "fuse_init_out.flags2");
_Static_assert(sizeof(struct k_uring_req_header) == 288, "fuse_uring_req_header");

/* --- one worker: its io_uring and its ring entry ------------------------- */

#define HEADROOM 4096		/* room for fuse_in_header + the fixed argument */
#define WORKERS_PER_QUEUE 2

struct worker {
	pthread_t thread;
	int started;
	unsigned qid;
	int ring_fd;
	/* the io_uring, one SQE and one CQE in flight at a time */
	void *sq_map, *cq_map;
	size_t sq_map_len, cq_map_len, sqes_len;
	struct io_uring_sqe *sqes;
	unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_cqe *cqes;
	/* the ring entry */
	struct k_uring_req_header *hdr;
	char *buf;			/* HEADROOM + payload */
	size_t buf_len;
	struct iovec iov[2];
	/* the request being served */
	uint64_t unique;
	int replied;
	size_t clean_from;		/* the payload is zero from here on */
	/* yielding on commit (see commit_fetch) */
	int may_yield, stuck_idle;
	uint64_t yield_after, yield_backoff;
	/* counters, read by stats_lines() without a lock */
	_Atomic uint64_t requests, yields, yield_stalls;
} __attribute__((aligned(64)));

static struct {
	struct fuse_session *se;
	struct fs *fs;
	int session_fd;			/* libfuse's, closed by the unmount */
	int dev_fd;			/* our dup of it */
	long conn;			/* fusectl connection number, or -1 */
	int want;
	_Atomic int yield;		/* SCHED_IDLE commits allowed and possible */
	_Atomic uint64_t init_unique;	/* INIT seen, not answered yet */
	int offered;			/* the kernel offered FUSE_OVER_IO_URING */
	uint64_t init_offered;		/* all INIT flags the kernel offered (flags2 << 32) */
	size_t payload;
	unsigned nqueues;
	struct worker *_Atomic workers;	/* nqueues * WORKERS_PER_QUEUE */
	unsigned nworkers;
	_Atomic int stopping;
	_Atomic unsigned running;	/* workers that registered */
	/* start-up handshake (start_report) */
	pthread_mutex_t start_lock;
	pthread_cond_t start_cond;
	unsigned start_reported, start_failed;
	int start_go;
} U = { .session_fd = -1, .dev_fd = -1, .conn = -1 };

static __thread struct worker *current_worker;

bool uring_serving(void)
{
	return current_worker != NULL;
}

static int sys_io_uring_setup(unsigned entries, struct io_uring_params *p)
{
	return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_io_uring_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static void ring_free(struct worker *w)
{
	if (w->sq_map && w->sq_map != MAP_FAILED)
		munmap(w->sq_map, w->sq_map_len);
	if (w->cq_map && w->cq_map != MAP_FAILED && w->cq_map != w->sq_map)
		munmap(w->cq_map, w->cq_map_len);
	if (w->sqes && (void *)w->sqes != MAP_FAILED)
		munmap(w->sqes, w->sqes_len);
	if (w->ring_fd >= 0)
		close(w->ring_fd);
	if (w->buf && w->buf != MAP_FAILED)
		munmap(w->buf, w->buf_len);
	free(w->hdr);
	w->sq_map = w->cq_map = NULL;
	w->sqes = NULL;
	w->buf = NULL;
	w->hdr = NULL;
	w->ring_fd = -1;
}

static int ring_init(struct worker *w)
{
	struct io_uring_params p;
	unsigned flags[] = {
		IORING_SETUP_SQE128 | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SQE128 | IORING_SETUP_COOP_TASKRUN,
		IORING_SETUP_SQE128,
	};

	w->ring_fd = -1;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]) && w->ring_fd < 0; i++) {
		memset(&p, 0, sizeof(p));
		p.flags = flags[i];
		w->ring_fd = sys_io_uring_setup(2, &p);
		if (w->ring_fd < 0 && errno != EINVAL)
			return -errno;
	}
	if (w->ring_fd < 0)
		return -errno;

	w->sq_map_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	w->cq_map_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (w->cq_map_len > w->sq_map_len)
			w->sq_map_len = w->cq_map_len;
		w->cq_map_len = w->sq_map_len;
	}
	w->sq_map = mmap(NULL, w->sq_map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
			 w->ring_fd, IORING_OFF_SQ_RING);
	if (w->sq_map == MAP_FAILED)
		return -errno;
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		w->cq_map = w->sq_map;
	} else {
		w->cq_map = mmap(NULL, w->cq_map_len, PROT_READ | PROT_WRITE,
				 MAP_SHARED | MAP_POPULATE, w->ring_fd, IORING_OFF_CQ_RING);
		if (w->cq_map == MAP_FAILED)
			return -errno;
	}
	/* SQE128: each SQE takes two slots' worth of memory */
	w->sqes_len = p.sq_entries * 2 * sizeof(struct io_uring_sqe);
	w->sqes = mmap(NULL, w->sqes_len,
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, w->ring_fd,
		       IORING_OFF_SQES);
	if (w->sqes == MAP_FAILED)
		return -errno;

	char *sq = w->sq_map, *cq = w->cq_map;
	w->sq_head = (unsigned *)(sq + p.sq_off.head);
	w->sq_tail = (unsigned *)(sq + p.sq_off.tail);
	w->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
	w->sq_array = (unsigned *)(sq + p.sq_off.array);
	w->cq_head = (unsigned *)(cq + p.cq_off.head);
	w->cq_tail = (unsigned *)(cq + p.cq_off.tail);
	w->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
	w->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

	/* the entry: headers in ordinary memory, payload untouched until used */
	if (posix_memalign((void **)&w->hdr, 64, sizeof(*w->hdr)))
		return -ENOMEM;
	memset(w->hdr, 0, sizeof(*w->hdr));
	w->buf_len = HEADROOM + U.payload;
	w->buf = mmap(NULL, w->buf_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (w->buf == MAP_FAILED)
		return -errno;
	w->iov[0] = (struct iovec){ w->hdr, sizeof(*w->hdr) };
	w->iov[1] = (struct iovec){ w->buf + HEADROOM, U.payload };
	return 0;
}

/* Queue one URING_CMD for our entry (REGISTER, or a reply and the next fetch). */
static void ring_queue(struct worker *w, unsigned op, uint64_t commit_id)
{
	unsigned tail = atomic_load_explicit((_Atomic unsigned *)w->sq_tail, memory_order_relaxed);
	unsigned idx = tail & *w->sq_mask;
	struct io_uring_sqe *sqe = (struct io_uring_sqe *)((char *)w->sqes + idx * 128);

	memset(sqe, 0, 128);
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = U.dev_fd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)w->iov;
	sqe->len = 2;
	struct k_uring_cmd_req *req = (struct k_uring_cmd_req *)sqe->cmd;
	req->commit_id = commit_id;
	req->qid = (uint16_t)w->qid;
	w->sq_array[idx] = idx;
	atomic_store_explicit((_Atomic unsigned *)w->sq_tail, tail + 1, memory_order_release);
}

/* The completion of our command: a request in the entry (0) or -errno. */
static int ring_wait(struct worker *w)
{
	for (;;) {
		unsigned head = *w->cq_head;
		unsigned ctail = atomic_load_explicit((_Atomic unsigned *)w->cq_tail,
						      memory_order_acquire);
		if (head != ctail) {
			int res = w->cqes[head & *w->cq_mask].res;
			atomic_store_explicit((_Atomic unsigned *)w->cq_head, head + 1,
					      memory_order_release);
			return res;
		}
		if (atomic_load(&U.stopping))
			return -ESHUTDOWN;
		if (sys_io_uring_enter(w->ring_fd, 0, 1, IORING_ENTER_GETEVENTS) < 0 &&
		    errno != EINTR)
			return -errno;
	}
}

/*
 * Hand what ring_queue() put in the SQ to the kernel -- always: stopping
 * must not leave a reply behind -- and with wait, return the completion (as
 * ring_wait()), in the same system call where it can.
 */
static int ring_submit(struct worker *w, int wait)
{
	for (;;) {
		unsigned queued = *w->sq_tail -
			atomic_load_explicit((_Atomic unsigned *)w->sq_head, memory_order_acquire);
		if (!queued)		/* taken before a signal cut the wait short */
			return wait ? ring_wait(w) : 0;
		int n = sys_io_uring_enter(w->ring_fd, queued, wait ? 1 : 0,
					   wait ? IORING_ENTER_GETEVENTS : 0);
		if (n >= 0)
			return wait ? ring_wait(w) : 0;
		if (errno != EINTR)
			return -errno;
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Commit the reply and fetch the next request.
 *
 * The commit wakes the caller, and the scheduler places a wakee on an idle
 * CPU rather than on a busy one -- and the caller's CPU is busy: we are
 * still on it.  On a VM an idle vCPU sleeps in the host, and waking it
 * costs more than serving a small request, twice per request once the
 * caller's next request follows it to the other CPU.  So the worker commits
 * as SCHED_IDLE: a CPU running only SCHED_IDLE work counts as free, the
 * caller wakes here and preempts us, issues its next request to this very
 * queue and sleeps, and we go on as SCHED_OTHER.  Yielding to a CPU hog
 * instead would leave us waiting a whole time slice; when a commit took that
 * long, yielding pauses for 100 ms, doubling up to 10 s while it keeps
 * happening.
 */
#define YIELD_STALL_NS		500000u
#define YIELD_BACKOFF_MIN_NS	100000000u
#define YIELD_BACKOFF_MAX_NS	10000000000u

static int commit_fetch(struct worker *w)
{
	struct sched_param sp = { 0 };
	uint64_t t0 = 0;
	int err, yield = 0;

	/* a failed return to SCHED_OTHER is retried before anything else */
	if (w->stuck_idle && sched_setscheduler(0, SCHED_OTHER, &sp) == 0)
		w->stuck_idle = 0;
	ring_queue(w, URING_CMD_COMMIT_FETCH, w->hdr->ring_ent_in_out.commit_id);
	if (w->may_yield && !w->stuck_idle && atomic_load_explicit(&U.yield, memory_order_relaxed)) {
		t0 = now_ns();
		yield = t0 >= w->yield_after && sched_setscheduler(0, SCHED_IDLE, &sp) == 0;
	}
	if (!yield)
		return ring_submit(w, 1);

	err = ring_submit(w, 0);
	if (sched_setscheduler(0, SCHED_OTHER, &sp) != 0) {
		/* possible since the start check: RLIMIT_NICE lowered, or reniced */
		log_err("io_uring: cannot leave SCHED_IDLE (%s); no longer yielding",
			strerror(errno));
		atomic_store(&U.yield, 0);
		w->stuck_idle = 1;
	}
	uint64_t t1 = now_ns();
	w->yields++;
	if (t1 - t0 > YIELD_STALL_NS) {
		w->yield_backoff = w->yield_backoff ? w->yield_backoff * 2 : YIELD_BACKOFF_MIN_NS;
		if (w->yield_backoff > YIELD_BACKOFF_MAX_NS)
			w->yield_backoff = YIELD_BACKOFF_MAX_NS;
		w->yield_after = t1 + w->yield_backoff;
		w->yield_stalls++;
	} else {
		w->yield_backoff = 0;
	}
	return err ?: ring_wait(w);
}

/* Serve the request now in the entry; leaves the reply in the entry. */
static void serve(struct worker *w)
{
	struct k_in_header *in = (struct k_in_header *)w->hdr->in_out;
	uint32_t payload_sz = w->hdr->ring_ent_in_out.payload_sz;
	char *payload = w->buf + HEADROOM;

	w->unique = in->unique;
	w->replied = 0;
	if (payload_sz > w->clean_from)
		w->clean_from = payload_sz;	/* the kernel put the request's data there */
	if (in->len < sizeof(*in) + payload_sz || in->len - sizeof(*in) - payload_sz > 128 ||
	    payload_sz > U.payload) {
		struct k_out_header *out = (struct k_out_header *)w->hdr->in_out;
		log_err("io_uring: malformed request (opcode %u, len %u, payload %u)",
			in->opcode, in->len, payload_sz);
		*out = (struct k_out_header){ sizeof(*out), -EIO, w->unique };
		w->hdr->ring_ent_in_out.payload_sz = 0;
		w->replied = 1;
		return;
	}
	/* header + fixed argument right in front of the payload: one message */
	size_t arg0 = in->len - sizeof(*in) - payload_sz;
	char *msg = payload - arg0 - sizeof(*in);
	memcpy(msg + sizeof(*in), w->hdr->op_in, arg0);
	memcpy(msg, in, sizeof(*in));
	pm_ops_translate(msg, in->len);

	struct fuse_buf fbuf = { .size = in->len, .mem = msg };
	fuse_session_process_buf(U.se, &fbuf);
	if (!w->replied) {
		/* every request that reaches a ring has a reply; keep the entry going */
		struct k_out_header *out = (struct k_out_header *)w->hdr->in_out;
		*out = (struct k_out_header){ sizeof(*out), -EIO, w->unique };
		w->hdr->ring_ent_in_out.payload_sz = 0;
	}
}

static void pin_to(unsigned cpu)
{
	cpu_set_t allowed, one;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) || !CPU_ISSET(cpu, &allowed))
		return;		/* not ours to run on: the queue still needs a worker */
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	sched_setaffinity(0, sizeof(one), &one);
}

static int connection_gone(int res)
{
	return res == -ENOTCONN || res == -ECANCELED || res == -ESHUTDOWN || res == -ENODEV ||
	       res == -ECONNABORTED || atomic_load(&U.stopping);
}

static int start_report(int err);

/*
 * A worker: set up its ring (the ring's single issuer is this thread), say
 * whether that worked, and once INIT is answered register its entry and
 * serve.  If the entry ever fails otherwise than by the connection going
 * away, it is registered again: a queue without entries would strand every
 * request made on its CPU.
 */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t keep;
	int res, retries = 0, counted = 0;

	/* the launcher's mask is inherited: these must reach this thread */
	sigemptyset(&keep);
	sigaddset(&keep, SIGUSR2);
	sigaddset(&keep, SIGBUS);
	sigaddset(&keep, SIGSEGV);
	pthread_sigmask(SIG_UNBLOCK, &keep, NULL);
	current_worker = w;
	pin_to(w->qid);
	/* yield only from (and back to) the ordinary class */
	w->may_yield = sched_getscheduler(0) == SCHED_OTHER;
	res = ring_init(w);
	if (res)
		log_err("io_uring: cannot set up a ring for CPU %u: %s", w->qid, strerror(-res));
	if (start_report(res) != 0)
		return NULL;	/* INIT went out without io_uring */

	ring_queue(w, URING_CMD_REGISTER, 0);
	res = ring_submit(w, 0);	/* the kernel has the entry once this returns */
	if (res == 0) {
		atomic_fetch_add(&U.running, 1);
		counted = 1;
		res = ring_wait(w);
	}
	for (;;) {
		if (res == 0) {
			serve(w);
			w->requests++;
			retries = 0;
			res = commit_fetch(w);
			continue;
		}
		if (connection_gone(res) || ++retries > 3)
			break;
		log_err("io_uring worker for CPU %u: %s; registering its entry again", w->qid,
			strerror(-res));
		ring_queue(w, URING_CMD_REGISTER, 0);
		res = ring_submit(w, 1);
	}
	if (counted)
		atomic_fetch_sub(&U.running, 1);
	if (!connection_gone(res))
		log_err("io_uring worker for CPU %u stopped: %s", w->qid, strerror(-res));
	return NULL;
}

/* Can a thread of ours go SCHED_IDLE and come back (RLIMIT_NICE, CAP_SYS_NICE)? */
static void *yield_probe(void *arg)
{
	struct sched_param sp = { 0 };
	int *ok = arg;

	*ok = sched_setscheduler(0, SCHED_IDLE, &sp) == 0 &&
	      sched_setscheduler(0, SCHED_OTHER, &sp) == 0;
	return NULL;	/* a thread stuck in SCHED_IDLE ends here */
}

static int can_yield(void)
{
	pthread_t t;
	int ok = 0;

	if (pthread_create(&t, NULL, yield_probe, &ok) != 0)
		return 0;
	pthread_join(t, NULL);
	return ok;
}

static void noop_signal(int sig)
{
	(void)sig;
}

/* The kernel makes a queue per possible CPU (num_possible_cpus()). */
static unsigned possible_cpus(void)
{
	char buf[256];
	long n = 0;
	FILE *f = fopen("/sys/devices/system/cpu/possible", "re");

	if (f) {
		if (fgets(buf, sizeof(buf), f)) {
			/* "0-7" or "0,2-5": the last number is the highest CPU */
			char *p = buf + strcspn(buf, "\n");
			while (p > buf && (p[-1] < '0' || p[-1] > '9'))
				p--;
			while (p > buf && p[-1] >= '0' && p[-1] <= '9')
				p--;
			n = strtol(p, NULL, 10) + 1;
		}
		fclose(f);
	}
	if (n < 1)
		n = sysconf(_SC_NPROCESSORS_CONF);
	return n < 1 ? 1u : (unsigned)n;
}

/*
 * Start-up handshake.  Once the INIT reply asks for io_uring, the kernel
 * holds every new request until each CPU's queue has an entry, so the rings
 * must exist before we ask: workers set theirs up and report here, the INIT
 * reply asks only if all of them could, and then they register (go = 1) or
 * leave (go = -1).  A REGISTER the kernel refuses turns io_uring off for the
 * connection, and requests stay on /dev/fuse.
 */
static int start_report(int err)
{
	int go;

	pthread_mutex_lock(&U.start_lock);
	if (err)
		U.start_failed++;
	U.start_reported++;
	pthread_cond_broadcast(&U.start_cond);
	while (!(go = U.start_go))
		pthread_cond_wait(&U.start_cond, &U.start_lock);
	pthread_mutex_unlock(&U.start_lock);
	return go > 0 ? 0 : -1;
}

static void start_decide(int go)
{
	pthread_mutex_lock(&U.start_lock);
	U.start_go = go;
	pthread_cond_broadcast(&U.start_cond);
	pthread_mutex_unlock(&U.start_lock);
}

static void join_all(struct worker *workers, unsigned n);
static void free_all(struct worker *workers, unsigned n);

/* Before the INIT reply: a ring for every worker, or none.  1 if ready. */
static int prepare_workers(const struct k_init_out *init)
{
	size_t payload = K_FUSE_MIN_READ_BUFFER;
	long pagesize = sysconf(_SC_PAGESIZE);
	struct worker *workers;
	unsigned started = 0;

	if (init->max_write > payload)
		payload = init->max_write;
	if ((size_t)init->max_pages * (size_t)pagesize > payload)
		payload = (size_t)init->max_pages * (size_t)pagesize;
	U.payload = payload;
	U.nqueues = possible_cpus();
	U.nworkers = U.nqueues * WORKERS_PER_QUEUE;
	workers = aligned_alloc(_Alignof(struct worker), U.nworkers * sizeof(*workers));
	if (!workers) {
		log_err("io_uring: out of memory for %u workers; requests stay on /dev/fuse",
			U.nworkers);
		return 0;
	}
	memset(workers, 0, U.nworkers * sizeof(*workers));
	if (U.yield && !can_yield()) {
		U.yield = 0;
		log_notice("io_uring: workers cannot return from SCHED_IDLE (needs CAP_SYS_NICE "
			   "or RLIMIT_NICE 20), so they do not yield on reply");
	}

	struct sigaction sa = { .sa_handler = noop_signal };	/* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL);

	for (unsigned i = 0; i < U.nworkers; i++) {
		struct worker *w = &workers[i];
		sigset_t term, old;

		w->qid = i % U.nqueues;
		w->ring_fd = -1;
		/* as libfuse's workers: the termination signals go to the main loop */
		sigemptyset(&term);
		sigaddset(&term, SIGTERM);
		sigaddset(&term, SIGINT);
		sigaddset(&term, SIGHUP);
		sigaddset(&term, SIGQUIT);
		pthread_sigmask(SIG_BLOCK, &term, &old);
		if (pthread_create(&w->thread, NULL, worker_main, w) == 0) {
			w->started = 1;
			started++;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (!w->started)
			break;
	}

	pthread_mutex_lock(&U.start_lock);
	while (U.start_reported < started)
		pthread_cond_wait(&U.start_cond, &U.start_lock);
	int ok = started == U.nworkers && U.start_failed == 0;
	pthread_mutex_unlock(&U.start_lock);
	if (!ok) {
		log_err("io_uring: %s; requests stay on /dev/fuse",
			started < U.nworkers ? "cannot start the workers"
					     : "a ring could not be set up");
		start_decide(-1);
		join_all(workers, U.nworkers);
		free_all(workers, U.nworkers);
		return 0;
	}
	U.workers = workers;
	return 1;
}

/* --- the session's custom io ---------------------------------------------- */

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t n = read(fd, buf, len);

	(void)userdata;
	if (n >= (ssize_t)(sizeof(struct k_in_header) + offsetof(struct k_init_in, unused))) {
		const struct k_in_header *in = buf;
		if (in->opcode == K_FUSE_INIT) {
			const struct k_init_in *ii = (const void *)(in + 1);
			U.offered = (ii->flags & K_FUSE_INIT_EXT) &&
				    (ii->flags2 & K_FUSE_OVER_IO_URING_HI);
			U.init_offered = ii->flags | ((ii->flags & K_FUSE_INIT_EXT) ?
						      (uint64_t)ii->flags2 << 32 : 0);
			atomic_store(&U.init_unique, in->unique);
		}
	}
	if (n >= (ssize_t)sizeof(struct k_in_header))
		pm_ops_translate(buf, (size_t)n);
	return n;
}

static size_t iov_total(const struct iovec *iov, int count)
{
	size_t n = 0;
	for (int i = 0; i < count; i++)
		n += iov[i].iov_len;
	return n;
}

/*
 * Lay a reply's arguments out in the payload.  Holes come as segments of the
 * shared zero buffer; the payload beyond clean_from is known to be zero (a
 * fresh mapping is), so zero segments there cost nothing: a 1 MiB read of a
 * hole neither copies nor touches a page.
 */
static int put_payload(struct worker *w, const void *first, size_t first_len,
		       const struct iovec *iov, int count)
{
	char *p = w->buf + HEADROOM;
	size_t off = first_len, dirty_to = first_len;
	int err = 0;

	memcpy(p, first, first_len);
	for (int i = 0; i < count && !err; i++) {
		const char *src = iov[i].iov_base;
		size_t n = iov[i].iov_len;

		if (fs_seg_is_zero(U.fs, src, n)) {
			if (off < w->clean_from)
				memset(p + off, 0, w->clean_from - off < n ? w->clean_from - off : n);
		} else {
			err = fs_seg_copy(U.fs, p + off, src, n);
			dirty_to = off + n;
		}
		off += n;
	}
	/* what lay beyond the reply is as it was */
	w->clean_from = w->clean_from > off ? w->clean_from : dirty_to;
	return err;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct worker *w = current_worker;
	const struct k_out_header *out = iov[0].iov_base;

	(void)userdata;
	if (w && count > 0 && iov[0].iov_len >= sizeof(*out) && out->unique == w->unique &&
	    !w->replied) {
		/* a reply to the ring request this worker is serving */
		size_t total = iov_total(iov, count);

		if (total - iov[0].iov_len > U.payload) {
			errno = EINVAL;		/* libfuse: -1 and errno, as writev */
			return -1;
		}
		struct k_out_header *ring_out = (struct k_out_header *)w->hdr->in_out;

		*ring_out = *out;
		w->hdr->ring_ent_in_out.payload_sz = (uint32_t)(total - sizeof(*out));
		w->replied = 1;
		if (put_payload(w, (char *)iov[0].iov_base + sizeof(*out),
				iov[0].iov_len - sizeof(*out), iov + 1, count - 1)) {
			/* as /dev/fuse does when it cannot copy a reply: EIO */
			ring_out->len = sizeof(*out);
			ring_out->error = -EIO;
			w->hdr->ring_ent_in_out.payload_sz = 0;
			errno = EFAULT;
			return -1;
		}
		return (ssize_t)total;
	}

	/* libfuse closes the session descriptor at the unmount: write to our dup */
	if (fd == U.session_fd && U.dev_fd >= 0)
		fd = U.dev_fd;
	uint64_t init = atomic_load(&U.init_unique);
	int ready = 0;
	if (init && count >= 2 && iov[0].iov_len >= sizeof(*out) && out->unique == init &&
	    out->error == 0 && iov[1].iov_len >= sizeof(struct k_init_out)) {
		struct k_init_out *io = iov[1].iov_base;
		atomic_store(&U.init_unique, 0);
		/* what libfuse 3.14 cannot name, the FUSE layer asks for here */
		uint64_t flags = io->flags | ((io->flags & K_FUSE_INIT_EXT) ?
					      (uint64_t)io->flags2 << 32 : 0);
		flags = pm_ops_init_reply(U.init_offered, flags);
		io->flags = (uint32_t)flags;
		io->flags2 = (uint32_t)(flags >> 32);
		if (io->flags2)
			io->flags |= K_FUSE_INIT_EXT;
		if (U.want && U.offered && io->max_write && prepare_workers(io)) {
			io->flags |= K_FUSE_INIT_EXT;
			io->flags2 |= K_FUSE_OVER_IO_URING_HI;
			ready = 1;
		}
	}
	ssize_t n = writev(fd, iov, count);
	if (ready) {
		int err = errno;
		start_decide(n >= 0 ? 1 : -1);
		if (n >= 0) {
			log_info("requests through io_uring: %u queue(s), %zu KiB per entry%s",
				 U.nqueues, U.payload / 1024,
				 U.yield ? ", workers yield on reply" : "");
		} else {
			struct worker *workers = U.workers;
			U.workers = NULL;
			join_all(workers, U.nworkers);
			free_all(workers, U.nworkers);
		}
		errno = err;
	}
	return n;
}

static ssize_t io_splice_receive(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
				 unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static ssize_t io_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			      unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static int stats_lines(char *buf, size_t size)
{
	uint64_t req = 0, yields = 0, stalls = 0;

	for (unsigned i = 0; U.workers && i < U.nworkers; i++) {
		req += atomic_load_explicit(&U.workers[i].requests, memory_order_relaxed);
		yields += atomic_load_explicit(&U.workers[i].yields, memory_order_relaxed);
		stalls += atomic_load_explicit(&U.workers[i].yield_stalls, memory_order_relaxed);
	}
	int n = snprintf(buf, size,
			 "uring_queues %u\nuring_workers %u\nuring_requests %" PRIu64
			 "\nuring_yields %" PRIu64 "\nuring_yield_stalls %" PRIu64 "\n",
			 U.workers ? U.nqueues : 0, atomic_load(&U.running), req, yields, stalls);
	if (n < 0 || (size_t)n >= size)
		return n;
	return n + pm_ops_stats_lines(buf + n, size - (size_t)n);
}

/* The FUSE connection's number (fusectl) from our mount's entry in mountinfo. */
static long connection_of(const char *mountpoint)
{
	struct mountinfo mi;

	return mountinfo_find(mountpoint, &mi) ? (long)mi.minor : -1;
}

int uring_attach(struct fuse_session *se, struct fs *fs, const char *mountpoint, int want,
		 int yield)
{
	static const struct fuse_custom_io io = {
		.writev = io_writev,
		.read = io_read,
		.splice_receive = io_splice_receive,
		.splice_send = io_splice_send,
	};

	U.se = se;
	U.fs = fs;
	U.want = want;
	U.yield = yield;
	U.session_fd = fuse_session_fd(se);
	U.conn = connection_of(mountpoint);
	/* our own reference to the device: it outlives the unmount's close */
	U.dev_fd = fcntl(U.session_fd, F_DUPFD_CLOEXEC, 3);
	if (U.dev_fd < 0)
		return -errno;
	pthread_mutex_init(&U.start_lock, NULL);
	pthread_cond_init(&U.start_cond, NULL);
	fs_set_stats_extra(fs, stats_lines);
	return fuse_session_custom_io(se, &io, U.session_fd);
}

/* Abort the connection through fusectl: every request pending on it fails. */
static void abort_connection(void)
{
	char path[64];
	int fd;

	if (U.conn < 0)
		return;
	snprintf(path, sizeof(path), "/sys/fs/fuse/connections/%ld/abort", U.conn);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd >= 0) {
		if (write(fd, "1", 1) < 0)
			log_err("io_uring: cannot abort connection %ld: %s", U.conn, strerror(errno));
		close(fd);
	}
}

static void add_ms(struct timespec *ts, long ms)
{
	ts->tv_nsec += ms * 1000000L;
	while (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/*
 * Stop and join the workers.  After the unmount each one's wait fails
 * (ENOTCONN); one that waits anyway -- the mount was detached lazily and
 * still has open files, or it is a start-up that was called off -- is
 * interrupted (SIGUSR2, no SA_RESTART) and sees the stop flag.  A worker
 * inside a handler finishes it first; if that takes seconds, the handler
 * waits on the kernel for a request nobody serves any more, and aborting
 * the connection ends it.
 */
static void join_all(struct worker *workers, unsigned n)
{
	struct timespec deadline;
	int aborted = 0;

	if (!workers)
		return;
	atomic_store(&U.stopping, 1);
	start_decide(-1);	/* a start-up still waiting for INIT: called off */
	clock_gettime(CLOCK_REALTIME, &deadline);
	add_ms(&deadline, 2000);
	for (unsigned i = 0; i < n; i++) {
		struct worker *w = &workers[i];
		struct timespec ts;

		if (!w->started)
			continue;
		for (;;) {
			clock_gettime(CLOCK_REALTIME, &ts);
			add_ms(&ts, 20);
			if (pthread_timedjoin_np(w->thread, NULL, &ts) != ETIMEDOUT)
				break;
			pthread_kill(w->thread, SIGUSR2);
			if (!aborted && (ts.tv_sec > deadline.tv_sec ||
					 (ts.tv_sec == deadline.tv_sec && ts.tv_nsec > deadline.tv_nsec))) {
				log_err("io_uring: a worker is stuck in a request; aborting the "
					"connection");
				abort_connection();
				aborted = 1;
			}
		}
		w->started = 0;
	}
}

static void free_all(struct worker *workers, unsigned n)
{
	if (!workers)
		return;
	for (unsigned i = 0; i < n; i++)
		ring_free(&workers[i]);
	free(workers);
}

/* After the unmount: stop the workers, then release the rings and buffers. */
void uring_detach(void)
{
	struct worker *workers = U.workers;

	join_all(workers, U.nworkers);
	U.workers = NULL;
	free_all(workers, U.nworkers);
	if (U.dev_fd >= 0)
		close(U.dev_fd);
	U.dev_fd = -1;
}
