/*
 * fault: failure injection at allocation points, for tests.
 *
 * Every allocation the core makes passes fault_alloc(): data blocks
 * (alloc_blocks*) and every pmemobj allocation inside a transaction
 * (pool_tx_alloc / pool_tx_zalloc).  When armed with a target N, the Nth
 * allocation after arming fails as if the space were gone -- a data-block
 * allocation returns -ENOSPC, a metadata allocation aborts its transaction
 * with ENOMEM, which pool_tx() reports as -ENOSPC -- and only that one.
 * Armed with 0 it only counts.  Disarmed (always, in production: arming
 * takes PMFUSE_FAULT_ALLOC in the daemon's environment, read at mount)
 * the check is one relaxed load.
 */
#ifndef PMFUSE_FAULT_H
#define PMFUSE_FAULT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

extern _Atomic bool fault_armed;

void fault_arm(uint64_t target);	/* 0: count only */
void fault_disarm(void);
void fault_arm_from_env(void);		/* PMFUSE_FAULT_ALLOC=N, PMFUSE_FAULT_CRASH */
uint64_t fault_alloc_seen(void);	/* allocation points passed since arming */
bool fault_alloc_slow(void);

static inline bool fault_alloc(void)
{
	return atomic_load_explicit(&fault_armed, memory_order_relaxed) && fault_alloc_slow();
}

/*
 * Crash points: named places in the middle of an operation where a test may
 * have the daemon killed, as kill -9 would, to check what the next mount
 * finds.  PMFUSE_FAULT_CRASH=name in the daemon's environment (read at
 * start, with PMFUSE_FAULT_ALLOC) arms one; unarmed, a point is one relaxed
 * load.
 *   evict       an inode nobody refers to any more is EVICTING, still in
 *               icache: before its write-back and reclaim
 *   reclaim-tx  inside the reclaim transaction, everything changed but not
 *               committed
 *   ichunk-empty   an inode chunk's last inode was reclaimed (committed),
 *               the chunk is to be freed (not the spare one)
 *   ichunk-free-tx inside the transaction that frees it, before the commit
 */
enum fault_crash {
	FAULT_CRASH_NONE,
	FAULT_CRASH_EVICT,
	FAULT_CRASH_RECLAIM_TX,
	FAULT_CRASH_ICHUNK_EMPTY,
	FAULT_CRASH_ICHUNK_FREE_TX,
};

extern _Atomic int fault_crash_armed;

void fault_crash_slow(void);

static inline void fault_crash_point(enum fault_crash point)
{
	if (atomic_load_explicit(&fault_crash_armed, memory_order_relaxed) == (int)point)
		fault_crash_slow();
}

#endif
