/*
 * alloc: a next-fit bitmap allocator with per-2 MiB-group free counts so
 * full groups are skipped in one step and whole free groups (huge extents)
 * are found without scanning bits.  A set bit is a free block: the bitmap
 * covers the whole region (128 MiB for 4 TiB) but starts as untouched zero
 * pages, and only the data pieces' parts of it are ever written.
 */
#include "alloc.h"
#include "fault.h"
#include "log.h"
#include "pool.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROUP_BLOCKS PMFUSE_HUGE_2M_BLOCKS
#define WORDS_PER_GROUP (GROUP_BLOCKS / 64)

static inline bool bit_test(const uint64_t *bm, uint64_t b)
{
	return (bm[b / 64] >> (b % 64)) & 1;
}

/* Make room in pfree for piece id; false without memory. */
static bool pfree_fit(struct alloc *a, uint32_t id)
{
	if (id < a->pfree_cap)
		return true;
	uint32_t cap = a->pfree_cap ? a->pfree_cap : 64;
	while (cap <= id)
		cap *= 2;
	uint64_t *n = realloc(a->pfree, cap * sizeof(*n));
	if (!n)
		return false;
	memset(n + a->pfree_cap, 0, (cap - a->pfree_cap) * sizeof(*n));
	a->pfree = n;
	a->pfree_cap = cap;
	return true;
}

/* A range is always inside one piece (pieces never touch: pieces.c). */
static void mark_range(struct alloc *a, uint64_t phys, uint64_t n, bool used)
{
	uint32_t id = pool_piece_of(a->pool, phys);

	if (id && id < a->pfree_cap) {
		if (used)
			a->pfree[id] -= n;
		else
			a->pfree[id] += n;
	}
	for (uint64_t b = phys; b < phys + n; b++) {
		if (used) {
			a->free[b / 64] &= ~(1ull << (b % 64));
			a->group_free[b / GROUP_BLOCKS]--;
		} else {
			a->free[b / 64] |= 1ull << (b % 64);
			a->group_free[b / GROUP_BLOCKS]++;
		}
	}
	if (used)
		a->free_blocks -= n;
	else
		a->free_blocks += n;
}

/* The blocks of piece id become allocatable. */
static int piece_attach(struct alloc *a, uint32_t id)
{
	const struct pool_piece *pc = pool_piece(a->pool, id);

	if (!pfree_fit(a, id))
		return -ENOMEM;
	a->pfree[id] = 0;
	mark_range(a, pc->off >> PMFUSE_BLOCK_SHIFT, pc->len >> PMFUSE_BLOCK_SHIFT, false);
	a->data_blocks += pc->len >> PMFUSE_BLOCK_SHIFT;
	return 0;
}

int alloc_init(struct alloc *a, struct pool *p, bool attach)
{
	memset(a, 0, sizeof(*a));
	pthread_mutex_init(&a->lock, NULL);
	a->pool = p;
	a->piece_default = pool_piece_default(p->size);
	a->nblocks = p->size >> PMFUSE_BLOCK_SHIFT;
	a->ngroups = (a->nblocks + GROUP_BLOCKS - 1) / GROUP_BLOCKS;
	/* everything starts used (clear bits); a piece's blocks become free */
	a->free = calloc(a->ngroups * WORDS_PER_GROUP, sizeof(uint64_t));
	a->group_free = calloc(a->ngroups, sizeof(uint16_t));
	if (!a->free || !a->group_free) {
		alloc_destroy(a);
		return -ENOMEM;
	}
	a->cursor = pool_backup_block(p);
	if (!attach)
		return 0;	/* alloc_decode() fills it */
	for (uint32_t id = 1; id <= p->npiece; id++)
		if (pool_piece(p, id)->live && piece_attach(a, id)) {
			alloc_destroy(a);
			return -ENOMEM;
		}
	alloc_claim(a, pool_backup_block(p), 1);
	return 0;
}

/* ------------------------------------------------- the clean-unmount record */

/*
 * A piece need not start on a 2 MiB boundary (run 0 of format 2 does not),
 * so the record describes each piece in segments of 512 blocks from its own
 * first block: a free count per segment, and the segment's bits (bit set =
 * free) only when it is neither wholly free nor wholly used.
 */
#define SEG_BLOCKS 512u
#define SEG_WORDS (SEG_BLOCKS / 64)

/* 64 bits of the bitmap from block b on (past nblocks: 0). */
static uint64_t get_bits(const struct alloc *a, uint64_t b)
{
	uint64_t i = b / 64, s = b % 64, nw = a->ngroups * WORDS_PER_GROUP;
	uint64_t w = i < nw ? a->free[i] : 0;

	if (!s)
		return w;
	return w >> s | (i + 1 < nw ? a->free[i + 1] << (64 - s) : 0);
}

/* OR bits (the low n of w) into the bitmap from block b on. */
static void put_bits(struct alloc *a, uint64_t b, uint64_t w)
{
	uint64_t i = b / 64, s = b % 64;

	a->free[i] |= w << s;
	if (s && w >> (64 - s))
		a->free[i + 1] |= w >> (64 - s);
}

/* The low n bits set (n <= 64). */
static uint64_t low_bits(uint64_t n)
{
	return n >= 64 ? UINT64_MAX : (1ull << n) - 1;
}

/* One piece's part of the record, into out (NULL: count); its length in words. */
static uint64_t encode_piece(const struct alloc *a, const struct pool_piece *pc, uint64_t *out)
{
	uint64_t b0 = pc->off >> PMFUSE_BLOCK_SHIFT, nb = pc->len >> PMFUSE_BLOCK_SHIFT;
	uint64_t nseg = (nb + SEG_BLOCKS - 1) / SEG_BLOCKS, n = 2 + (nseg + 3) / 4;

	if (out) {
		out[0] = pc->off;
		out[1] = pc->len;
		memset(out + 2, 0, (nseg + 3) / 4 * sizeof(uint64_t));
	}
	for (uint64_t k = 0; k < nseg; k++) {
		uint64_t len = nb - k * SEG_BLOCKS < SEG_BLOCKS ? nb - k * SEG_BLOCKS : SEG_BLOCKS;
		uint64_t w[SEG_WORDS] = { 0 }, c = 0;
		for (unsigned j = 0; j * 64 < len; j++) {
			w[j] = get_bits(a, b0 + k * SEG_BLOCKS + j * 64) & low_bits(len - j * 64);
			c += (uint64_t)__builtin_popcountll(w[j]);
		}
		if (out)
			out[2 + k / 4] |= c << (16 * (k % 4));
		if (c == 0 || c == len)
			continue;
		if (out)
			memcpy(out + n, w, sizeof(w));
		n += SEG_WORDS;
	}
	return n;
}

uint64_t alloc_encode(struct alloc *a, uint64_t *out, uint64_t *npieces)
{
	uint64_t n = 0;

	pthread_mutex_lock(&a->lock);
	*npieces = 0;
	for (uint32_t id = 1; id <= a->pool->npiece; id++) {
		const struct pool_piece *pc = pool_piece(a->pool, id);
		if (!pc->live)
			continue;
		n += encode_piece(a, pc, out ? out + n : NULL);
		++*npieces;
	}
	pthread_mutex_unlock(&a->lock);
	return n;
}

static int bad(char *why, size_t whylen, const char *what, uint64_t v)
{
	snprintf(why, whylen, "%s (%" PRIu64 ")", what, v);
	return -EUCLEAN;
}

/*
 * One piece's part of the record: its bits into the allocator (whose
 * bitmap starts all used), or (compare) checked against the allocator's
 * own encoding of the piece.
 */
static int decode_piece(struct alloc *a, const uint64_t *in, uint64_t avail, bool compare,
			uint8_t *seen, uint64_t *used, char *why, size_t whylen)
{
	if (avail < 2)
		return bad(why, whylen, "record ends inside a piece", avail);
	uint64_t off = in[0], len = in[1];
	uint32_t id = off % PMFUSE_BLOCK_SIZE || !len ? 0 :
		      pool_piece_of(a->pool, off >> PMFUSE_BLOCK_SHIFT);
	const struct pool_piece *pc = id ? pool_piece(a->pool, id) : NULL;

	if (!pc || !pc->live || pc->off != off || pc->len != len || seen[id - 1])
		return bad(why, whylen, "record names a data piece the pool does not have, at", off);
	seen[id - 1] = 1;
	uint64_t b0 = off >> PMFUSE_BLOCK_SHIFT, nb = len >> PMFUSE_BLOCK_SHIFT;
	uint64_t nseg = (nb + SEG_BLOCKS - 1) / SEG_BLOCKS, n = 2 + (nseg + 3) / 4;
	if (avail < n)
		return bad(why, whylen, "record ends inside a piece", off);
	for (uint64_t k = 0, w = n; k < nseg; k++) {
		uint64_t c = in[2 + k / 4] >> (16 * (k % 4)) & 0xffff;
		uint64_t slen = nb - k * SEG_BLOCKS < SEG_BLOCKS ? nb - k * SEG_BLOCKS : SEG_BLOCKS;
		if (c == 0 || c == slen)
			continue;
		if (c > slen || avail < w + SEG_WORDS)
			return bad(why, whylen, "record: a segment's free count is out of range, at",
				   off);
		n = w += SEG_WORDS;
	}
	if (compare) {
		uint64_t *mine = malloc(n * sizeof(uint64_t));
		if (!mine)
			return -ENOMEM;
		bool same = encode_piece(a, pc, mine) == n && !memcmp(mine, in, n * sizeof(uint64_t));
		free(mine);
		if (!same)
			return bad(why, whylen, "record: free blocks differ from the file maps' in the "
				   "data piece at", off);
		*used = n;
		return 0;
	}
	if (!pfree_fit(a, id))
		return -ENOMEM;
	a->pfree[id] = 0;
	a->data_blocks += nb;
	for (uint64_t k = 0, w = 2 + (nseg + 3) / 4; k < nseg; k++) {
		uint64_t c = in[2 + k / 4] >> (16 * (k % 4)) & 0xffff, pop = 0;
		uint64_t slen = nb - k * SEG_BLOCKS < SEG_BLOCKS ? nb - k * SEG_BLOCKS : SEG_BLOCKS;
		for (unsigned j = 0; j * 64 < slen; j++) {
			uint64_t bits = c == 0 ? 0 : c == slen ? UINT64_MAX : in[w + j];
			bits &= low_bits(slen - j * 64);
			pop += (uint64_t)__builtin_popcountll(bits);
			put_bits(a, b0 + k * SEG_BLOCKS + j * 64, bits);
		}
		if (c != 0 && c != slen)
			w += SEG_WORDS;
		if (pop != c)
			return bad(why, whylen, "record: a segment's count and bits disagree, at block",
				   b0 + k * SEG_BLOCKS);
		a->pfree[id] += c;
		a->free_blocks += c;
	}
	*used = n;
	return 0;
}

int alloc_decode(struct alloc *a, const uint64_t *in, uint64_t n, uint64_t npieces, bool compare,
		 char *why, size_t whylen)
{
	struct pool *p = a->pool;
	uint8_t *seen = calloc(p->npiece ? p->npiece : 1, 1);
	uint64_t at = 0, live = 0;
	int ret = 0;

	if (!seen)
		return -ENOMEM;
	pthread_mutex_lock(&a->lock);
	for (uint64_t k = 0; k < npieces && !ret; k++) {
		uint64_t used;
		ret = decode_piece(a, in + at, n - at, compare, seen, &used, why, whylen);
		at += ret ? 0 : used;
	}
	for (uint32_t id = 1; id <= p->npiece; id++)
		live += pool_piece(p, id)->live;
	if (!ret && (live != npieces || at != n))
		ret = bad(why, whylen, "record: data pieces or length differ from the pool's", live);
	if (!ret && bit_test(a->free, pool_backup_block(p)))
		ret = bad(why, whylen, "record: the backup superblock's block is free", 0);
	/* a group's count is its bits, whichever pieces they came from */
	for (uint32_t id = 1; !ret && !compare && id <= p->npiece; id++) {
		const struct pool_piece *pc = pool_piece(p, id);
		if (!pc->live)
			continue;
		uint64_t b0 = pc->off >> PMFUSE_BLOCK_SHIFT, b1 = b0 + (pc->len >> PMFUSE_BLOCK_SHIFT);
		for (uint64_t g = b0 / GROUP_BLOCKS; g * GROUP_BLOCKS < b1; g++) {
			uint64_t c = 0;
			for (unsigned k = 0; k < WORDS_PER_GROUP; k++)
				c += (uint64_t)__builtin_popcountll(a->free[g * WORDS_PER_GROUP + k]);
			a->group_free[g] = (uint16_t)c;
		}
	}
	pthread_mutex_unlock(&a->lock);
	free(seen);
	return ret;
}

bool alloc_is_used(struct alloc *a, uint64_t phys, uint64_t n)
{
	bool ok = phys < a->nblocks && n <= a->nblocks - phys;

	pthread_mutex_lock(&a->lock);
	for (uint64_t b = phys; ok && b < phys + n; b++)
		ok = !bit_test(a->free, b);
	pthread_mutex_unlock(&a->lock);
	return ok;
}

void alloc_destroy(struct alloc *a)
{
	free(a->quar);
	free(a->held);
	a->quar = a->held = NULL;
	free(a->free);
	free(a->group_free);
	free(a->pfree);
	a->free = NULL;
	a->group_free = NULL;
	a->pfree = NULL;
	pthread_mutex_destroy(&a->lock);
}

int alloc_claim(struct alloc *a, uint64_t phys, uint64_t n)
{
	int ret = 0;

	pthread_mutex_lock(&a->lock);
	if (phys >= a->nblocks || n > a->nblocks - phys) {
		ret = -EUCLEAN;
		goto out;
	}
	for (uint64_t b = phys; b < phys + n; b++)
		if (!bit_test(a->free, b)) {
			ret = -EUCLEAN;
			goto out;
		}
	mark_range(a, phys, n, true);
out:
	pthread_mutex_unlock(&a->lock);
	return ret;
}

/* Length of the free run starting at b, at most max. */
static uint64_t free_run_at(struct alloc *a, uint64_t b, uint64_t max)
{
	uint64_t n = 0;

	while (n < max && b + n < a->nblocks && bit_test(a->free, b + n)) {
		if ((b + n) % 64 == 0 && max - n >= 64 && b + n + 64 <= a->nblocks &&
		    a->free[(b + n) / 64] == UINT64_MAX) {
			n += 64;
			continue;
		}
		n++;
	}
	return n;
}

/* First free block at or after from (wrapping once); nblocks if none. */
static uint64_t next_free(struct alloc *a, uint64_t from)
{
	for (uint64_t pass = 0; pass < 2; pass++) {
		uint64_t b = pass ? 0 : from;
		uint64_t end = pass ? from : a->nblocks;
		while (b < end) {
			uint64_t g = b / GROUP_BLOCKS;
			if (a->group_free[g] == 0) {
				b = (g + 1) * GROUP_BLOCKS;
				continue;
			}
			uint64_t w = a->free[b / 64] & ~((1ull << (b % 64)) - 1);
			if (w)
				return b / 64 * 64 + (uint64_t)__builtin_ctzll(w);
			b = (b / 64 + 1) * 64;
		}
	}
	return a->nblocks;
}

/* First wholly free 2 MiB group at or after from; ngroups if none. */
static uint64_t next_free_group(struct alloc *a, uint64_t from_group)
{
	for (uint64_t i = 0; i < a->ngroups; i++) {
		uint64_t g = (from_group + i) % a->ngroups;
		if (a->group_free[g] == GROUP_BLOCKS)
			return g;
	}
	return a->ngroups;
}

#define HUGE_1G_BLOCKS (1ull << 18)
#define GROUPS_PER_1G (HUGE_1G_BLOCKS / GROUP_BLOCKS)

/* First group of a wholly free, 1 GiB-aligned gigabyte; UINT64_MAX if none. */
static uint64_t next_free_1g(struct alloc *a)
{
	for (uint64_t g = 0; g + GROUPS_PER_1G <= a->ngroups; g += GROUPS_PER_1G) {
		uint64_t k = 0;
		while (k < GROUPS_PER_1G && a->group_free[g + k] == GROUP_BLOCKS)
			k++;
		if (k == GROUPS_PER_1G)
			return g;
	}
	return UINT64_MAX;
}

/*
 * Add pieces until n blocks are free: each as large as a growth asks for,
 * or as n needs (a gigabyte more when it wants a 1 GiB-aligned gigabyte,
 * so one lies inside), as the heap allows.  False if the heap has no more.
 */
static bool grow(struct alloc *a, uint64_t n, bool want_1g)
{
	while (a->free_blocks < n) {
		uint64_t need = n > a->free_blocks ? (n - a->free_blocks) << PMFUSE_BLOCK_SHIFT : 0;
		uint64_t want = need + (want_1g ? (1ull << 30) : (4ull << 20));
		uint32_t id;
		if (want < a->piece_default)
			want = a->piece_default;
		if (want > (15ull << 30))
			want = 15ull << 30;
		/*
		 * Free blocks in a piece are lost to metadata until the piece
		 * empties: beside it the heap keeps what the files so far
		 * needed in metadata for as much data (4 KiB files: about 8%;
		 * at most a quarter), so a region of small files fills with
		 * data and names alike.  Only a preference: where the heap
		 * has no piece beside that much, the reserve alone is kept.
		 */
		uint64_t used = (a->data_blocks - a->free_blocks) << PMFUSE_BLOCK_SHIFT;
		int64_t meta = atomic_load(&a->pool->meta_bytes);
		uint64_t keep = want / 4;
		if (meta >= 0 && (uint64_t)meta < used / 4)
			keep = (uint64_t)((double)want * (double)meta / (double)used);
		if (pool_piece_add(a->pool, want, 4ull << 20, keep, &id) &&
		    (!keep || pool_piece_add(a->pool, want, 4ull << 20, 0, &id)))
			return false;
		if (piece_attach(a, id)) {
			pool_piece_remove(a->pool, id);
			return false;
		}
		a->pieces_added++;
		a->cursor = pool_piece(a->pool, id)->off >> PMFUSE_BLOCK_SHIFT;
		log_debug("data area: piece %u added at %" PRIu64 ", %" PRIu64 " KiB (asked %" PRIu64
			  " KiB)", id, pool_piece(a->pool, id)->off, pool_piece(a->pool, id)->len >> 10,
			  want >> 10);
	}
	return true;
}

/* Give piece id back to the heap if it holds no data and may go. */
static void maybe_shrink(struct alloc *a, uint32_t id)
{
	const struct pool_piece *pc;

	if (!id || id >= a->pfree_cap)
		return;
	pc = pool_piece(a->pool, id);
	if (pc->slot < 0 || a->pfree[id] != pc->len >> PMFUSE_BLOCK_SHIFT)
		return;
	uint64_t first = pc->off >> PMFUSE_BLOCK_SHIFT, n = pc->len >> PMFUSE_BLOCK_SHIFT;
	int r = pool_piece_remove(a->pool, id);
	if (r) {
		/* not now (in a transaction, or no log space): a later free retries */
		log_debug("data area: piece %u stays for now: %s", id, strerror(-r));
		return;
	}
	/* its blocks (all free) are no data any more: used, and not counted */
	for (uint64_t b = first; b < first + n; b++) {
		a->free[b / 64] &= ~(1ull << (b % 64));
		a->group_free[b / GROUP_BLOCKS]--;
	}
	a->free_blocks -= n;
	a->data_blocks -= n;
	a->pfree[id] = 0;
	a->pieces_removed++;
	log_debug("data area: piece %u given back, %" PRIu64 " KiB", id, n << 2);
}

static void trim_locked(struct alloc *a)
{
	for (uint32_t id = 1; id <= a->pool->npiece; id++)
		if (pool_piece(a->pool, id)->live)
			maybe_shrink(a, id);
}

void alloc_trim(struct alloc *a)
{
	pthread_mutex_lock(&a->lock);
	trim_locked(a);
	pthread_mutex_unlock(&a->lock);
}

/*
 * Place the first of *left blocks for file block fb where the file's windows
 * line up: a whole gigabyte from a gigabyte boundary (the PUD analogue), else
 * fb's offset in a free 2 MiB group.  Takes what is free there, or nothing.
 */
static void line_up(struct alloc *a, uint64_t fb, uint64_t *left, struct alloc_run *runs,
		    int *nr)
{
	uint64_t g1;

	if (fb % HUGE_1G_BLOCKS == 0 && *left >= HUGE_1G_BLOCKS &&
	    (g1 = next_free_1g(a)) != UINT64_MAX) {
		uint64_t b = g1 * GROUP_BLOCKS;
		runs[(*nr)++] = (struct alloc_run){ b, HUGE_1G_BLOCKS };
		mark_range(a, b, HUGE_1G_BLOCKS, true);
		*left -= HUGE_1G_BLOCKS;
		a->cursor = b + HUGE_1G_BLOCKS;
		return;
	}
	uint64_t g = next_free_group(a, a->cursor / GROUP_BLOCKS);
	/*
	 * None left, only blocks scattered in partly used groups: a new piece
	 * rather than those for a file past its first 2 MiB or a write of
	 * 1 MiB or more, which can make huge extents (the scattered blocks
	 * stay for small files; an empty piece goes back to the heap when its
	 * data is freed).
	 */
	if (g == a->ngroups && (fb >= GROUP_BLOCKS || *left >= GROUP_BLOCKS / 2) &&
	    grow(a, a->free_blocks + *left, false))
		g = next_free_group(a, a->cursor / GROUP_BLOCKS);
	if (g != a->ngroups) {
		uint64_t b = g * GROUP_BLOCKS + fb % GROUP_BLOCKS;
		uint64_t len = free_run_at(a, b, *left);
		runs[(*nr)++] = (struct alloc_run){ b, len };
		mark_range(a, b, len, true);
		*left -= len;
		a->cursor = b + len;
	}
}

static int alloc_locked(struct alloc *a, uint64_t n, uint64_t goal, uint64_t align_fblock,
			struct alloc_run *runs, int maxruns)
{
	uint64_t left = n;
	int nr = 0;

	if (n == 0)
		return 0;
	if (a->free_blocks < n &&
	    !grow(a, n, align_fblock != UINT64_MAX && align_fblock % (1ull << 18) == 0 &&
		  n >= (1ull << 18))) {
		/* what this growth added goes back: nothing reserved, nothing kept */
		trim_locked(a);
		return -ENOSPC;
	}
	/*
	 * At a 2 MiB boundary of the file, alignment wins over a misaligned
	 * predecessor: the file's first 2 MiB may be small blocks, the rest
	 * lines up.  Otherwise contiguity with the previous block comes first.
	 */
	if (align_fblock != UINT64_MAX && align_fblock % GROUP_BLOCKS == 0 &&
	    goal % GROUP_BLOCKS != 0)
		goal = 0;
	if (goal && goal < a->nblocks && bit_test(a->free, goal)) {
		uint64_t len = free_run_at(a, goal, left);
		runs[nr++] = (struct alloc_run){ goal, len };
		mark_range(a, goal, len, true);
		left -= len;
	}
	/* what the predecessor's run could not take lines up on its own */
	if (left && align_fblock != UINT64_MAX)
		line_up(a, align_fblock + (n - left), &left, runs, &nr);
	/* large requests: whole 2 MiB groups, so huge extents line up */
	while (left >= GROUP_BLOCKS && nr < maxruns) {
		uint64_t g = next_free_group(a, a->cursor / GROUP_BLOCKS);
		if (g == a->ngroups)
			break;
		uint64_t b = g * GROUP_BLOCKS;
		uint64_t len = free_run_at(a, b, left);
		runs[nr++] = (struct alloc_run){ b, len };
		mark_range(a, b, len, true);
		left -= len;
		a->cursor = b + len;
	}
	while (left && nr < maxruns) {
		uint64_t b = next_free(a, a->cursor);
		if (b == a->nblocks)
			break;
		uint64_t len = free_run_at(a, b, left);
		runs[nr++] = (struct alloc_run){ b, len };
		mark_range(a, b, len, true);
		left -= len;
		a->cursor = b + len;
	}
	/* left > 0 only when maxruns ran out: the caller asks again */
	return nr;
}

int alloc_blocks(struct alloc *a, uint64_t n, uint64_t goal,
		 struct alloc_run *runs, int maxruns)
{
	if (fault_alloc())
		return -ENOSPC;
	pthread_mutex_lock(&a->lock);
	int ret = alloc_locked(a, n, goal, UINT64_MAX, runs, maxruns);
	pthread_mutex_unlock(&a->lock);
	return ret;
}

int alloc_blocks_aligned(struct alloc *a, uint64_t n, uint64_t goal, uint64_t fblock,
			 struct alloc_run *runs, int maxruns)
{
	if (fault_alloc())
		return -ENOSPC;
	pthread_mutex_lock(&a->lock);
	int ret = alloc_locked(a, n, goal, fblock, runs, maxruns);
	pthread_mutex_unlock(&a->lock);
	return ret;
}

/* Remember [phys, +n) as held (a->lock held); false without memory. */
static bool hold_run(struct alloc *a, uint64_t phys, uint64_t n)
{
	struct alloc_run *last = a->nheld ? &a->held[a->nheld - 1] : NULL;

	a->held_blocks += n;
	if (last && last->phys + last->len == phys) {
		last->len += n;
		return true;
	}
	if (a->nheld == a->held_cap) {
		size_t cap = a->held_cap ? a->held_cap * 2 : 64;
		struct alloc_run *h = realloc(a->held, cap * sizeof(*h));
		if (!h)
			return false;	/* kept used, not listed: the next mount frees it */
		a->held = h;
		a->held_cap = cap;
	}
	a->held[a->nheld++] = (struct alloc_run){ phys, n };
	return true;
}

/*
 * The first quarantined range ending after phys (ranges are sorted and
 * disjoint), or NULL.
 */
static const struct alloc_run *quarantine_after(const struct alloc *a, uint64_t phys)
{
	for (size_t i = 0; i < a->nquar; i++)
		if (a->quar[i].phys + a->quar[i].len > phys)
			return &a->quar[i];
	return NULL;
}

/* Free [phys, +n), except what the quarantine covers, which is held (a->lock held). */
static void free_run(struct alloc *a, uint64_t phys, uint64_t n)
{
	uint64_t end = phys + n;

	while (phys < end) {
		const struct alloc_run *q = quarantine_after(a, phys);
		uint64_t qs = q && q->phys < end ? q->phys : end;
		if (phys < qs) {
			mark_range(a, phys, qs - phys, false);
			phys = qs;
			continue;
		}
		uint64_t qe = q->phys + q->len < end ? q->phys + q->len : end;
		hold_run(a, phys, qe - phys);
		phys = qe;
	}
}

void alloc_free(struct alloc *a, uint64_t phys, uint64_t n)
{
	pthread_mutex_lock(&a->lock);
	if (a->nquar)
		free_run(a, phys, n);
	else
		mark_range(a, phys, n, false);
	maybe_shrink(a, pool_piece_of(a->pool, phys));
	pthread_mutex_unlock(&a->lock);
}

void alloc_set_quarantine(struct alloc *a, struct alloc_run *ranges, size_t n)
{
	pthread_mutex_lock(&a->lock);
	free(a->quar);
	a->quar = ranges;
	a->nquar = n;
	/* held blocks the new ranges no longer cover go free */
	struct alloc_run *old = a->held;
	size_t nold = a->nheld;
	a->held = NULL;
	a->nheld = a->held_cap = 0;
	a->held_blocks = 0;
	for (size_t i = 0; i < nold; i++)
		free_run(a, old[i].phys, old[i].len);
	for (size_t i = 0; i < nold; i++)
		maybe_shrink(a, pool_piece_of(a->pool, old[i].phys));
	free(old);
	/* free blocks the ranges cover are held, block by block (data pieces only) */
	for (size_t i = 0; i < n; i++)
		for (uint64_t b = ranges[i].phys; b < ranges[i].phys + ranges[i].len && b < a->nblocks; b++)
			if (bit_test(a->free, b)) {
				mark_range(a, b, 1, true);
				hold_run(a, b, 1);
			}
	pthread_mutex_unlock(&a->lock);
}

size_t alloc_quarantine_ranges(struct alloc *a)
{
	pthread_mutex_lock(&a->lock);
	size_t n = a->nquar;
	pthread_mutex_unlock(&a->lock);
	return n;
}

uint64_t alloc_held(struct alloc *a)
{
	pthread_mutex_lock(&a->lock);
	uint64_t n = a->held_blocks;
	pthread_mutex_unlock(&a->lock);
	return n;
}

uint64_t alloc_free_count(struct alloc *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->free_blocks;
	pthread_mutex_unlock(&a->lock);
	return n;
}

uint64_t alloc_used_blocks(struct alloc *a)
{
	uint64_t n;

	pthread_mutex_lock(&a->lock);
	n = a->data_blocks - a->free_blocks;
	pthread_mutex_unlock(&a->lock);
	return n;
}

void alloc_area(struct alloc *a, uint64_t *blocks, uint64_t *pieces, uint64_t *added,
		uint64_t *removed)
{
	uint64_t n = 0;

	pthread_mutex_lock(&a->lock);
	for (uint32_t id = 1; id <= a->pool->npiece; id++)
		n += pool_piece(a->pool, id)->live;
	*blocks = a->data_blocks;
	*pieces = n;
	*added = a->pieces_added;
	*removed = a->pieces_removed;
	pthread_mutex_unlock(&a->lock);
}
