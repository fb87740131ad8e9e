/*
 * Unit tests of the mapping index alone (daemon/index.c): entries of every
 * order, splitting, marks and their propagation, find-next-marked across
 * sparse trees, run coalescing, and concurrent writers and flushers.  Also
 * built with ThreadSanitizer (test_index_tsan).
 */
#include "harness.h"
#include "index.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define NONE UINT64_MAX

static void test_insert_lookup_erase_all_orders(void)
{
	struct index ix;
	uint64_t first;

	index_init(&ix);
	CHECK_EQ(index_insert(&ix, 5, ix_mk_entry(100, IX_ORDER_4K, 0)), 0);
	CHECK_EQ(index_insert(&ix, 512, ix_mk_entry(4096, IX_ORDER_2M, 0)), 0);
	CHECK_EQ(index_insert(&ix, 1ull << 18, ix_mk_entry(1 << 20, IX_ORDER_1G, 0)), 0);
	CHECK_EQ(index_insert(&ix, 3ull << 18, ix_mk_zero(IX_ORDER_1G)), 0);
	CHECK_EQ(index_insert(&ix, 100, ix_mk_entry(1, IX_ORDER_2M, 0)), -EINVAL);
	CHECK_EQ(index_insert(&ix, 512 + 7, ix_mk_entry(1, IX_ORDER_4K, 0)), -EEXIST);
	CHECK_EQ(index_insert(&ix, 5, ix_mk_entry(1, IX_ORDER_4K, 0)), -EEXIST);
	CHECK_EQ(ix.nr_entries, 4);

	uint64_t e = index_lookup(&ix, 5, &first);
	CHECK(ix_is_value(e) && ix_block(e) == 100 && first == 5 && ix_order(e) == 0);
	e = index_lookup(&ix, 512 + 300, &first);	/* a sibling slot */
	CHECK(ix_block(e) == 4096 && first == 512 && ix_order(e) == IX_ORDER_2M);
	e = index_lookup(&ix, (1ull << 18) + 77777, &first);
	CHECK(ix_block(e) == 1 << 20 && first == 1ull << 18 && ix_order(e) == IX_ORDER_1G);
	e = index_lookup(&ix, (3ull << 18) + 5, &first);
	CHECK(ix_is_zero(e) && ix_order(e) == IX_ORDER_1G);
	CHECK_EQ(index_lookup(&ix, 6, NULL), 0);
	CHECK_EQ(index_lookup(&ix, 1ull << 40, NULL), 0);
	CHECK_EQ(ix.nr_huge[0], 1);
	CHECK_EQ(ix.nr_huge[1], 2);

	CHECK(ix_block(index_erase(&ix, 1000)) == 4096);	/* any page of it */
	CHECK_EQ(index_lookup(&ix, 512, NULL), 0);
	CHECK_EQ(index_insert(&ix, 512 + 7, ix_mk_entry(1, IX_ORDER_4K, 0)), 0);
	index_erase(&ix, 5);
	index_erase(&ix, 512 + 7);
	index_erase(&ix, 1ull << 18);
	index_erase(&ix, 3ull << 18);
	CHECK_EQ(ix.nr_entries, 0);
	CHECK(ix.root == NULL);		/* empty nodes are pruned */
	index_destroy(&ix);
}

static void test_split_2m_keeps_exactly_the_dirty_pages(void)
{
	struct index ix;

	index_init(&ix);
	CHECK_EQ(index_insert(&ix, 1024, ix_mk_entry(8192, IX_ORDER_2M, 0)), 0);
	CHECK_EQ(index_mark_dirty(&ix, 1024 + 3, 1), 1);
	CHECK_EQ(index_mark_dirty(&ix, 1024 + 200, 2), 2);
	CHECK_EQ(index_mark_dirty(&ix, 1024 + 3, 1), 0);	/* already dirty */
	CHECK_EQ(ix.nr_dirty_pages, 3);
	CHECK_EQ(index_split(&ix, 1500), 0);
	CHECK_EQ(ix.nr_entries, 512);
	CHECK_EQ(ix.nr_huge[0], 0);
	CHECK_EQ(ix.nr_dirty_pages, 3);
	for (uint64_t p = 1024; p < 1536; p++) {
		uint64_t first, e = index_lookup(&ix, p, &first);
		CHECK(ix_order(e) == 0 && first == p && ix_block(e) == 8192 + p - 1024);
	}
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), 1024 + 3);
	CHECK_EQ(index_find_marked(&ix, 1024 + 4, NONE, IX_DIRTY), 1024 + 200);
	CHECK_EQ(index_find_marked(&ix, 1024 + 201, NONE, IX_DIRTY), 1024 + 201);
	CHECK_EQ(index_find_marked(&ix, 1024 + 202, NONE, IX_DIRTY), NONE);
	CHECK_EQ(index_split(&ix, 1500), -ENOENT);	/* nothing huge left */
	index_destroy(&ix);
}

static void test_split_1g_into_2m_keeps_page_dirtiness(void)
{
	struct index ix;

	index_init(&ix);
	CHECK_EQ(index_insert(&ix, 0, ix_mk_entry(1ull << 18, IX_ORDER_1G, 0)), 0);
	index_mark_dirty(&ix, 70000, 1);
	CHECK_EQ(index_split(&ix, 5), 0);
	CHECK_EQ(ix.nr_huge[1], 0);
	CHECK_EQ(ix.nr_huge[0], 512);
	CHECK_EQ(ix.nr_dirty_pages, 1);
	uint64_t first, e = index_lookup(&ix, 70000, &first);
	CHECK(ix_order(e) == IX_ORDER_2M && first == 70000 / 512 * 512);
	CHECK_EQ(ix_block(e), (1ull << 18) + first);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), first);
	/* and the page, not the 2 MiB, is what comes out of cleaning */
	CHECK_EQ(index_split(&ix, 70000), 0);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), 70000);
	index_destroy(&ix);
}

static void test_marks_propagate_and_clear_across_sparse_tree(void)
{
	struct index ix;
	uint64_t far = 5000000000ull;	/* ~18 TiB into the file */

	index_init(&ix);
	CHECK_EQ(index_insert(&ix, 0, ix_mk_entry(10, IX_ORDER_4K, 0)), 0);
	CHECK_EQ(index_insert(&ix, 1000000, ix_mk_entry(11, IX_ORDER_4K, 0)), 0);
	CHECK_EQ(index_insert(&ix, far, ix_mk_entry(12, IX_ORDER_4K, 0)), 0);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), NONE);
	index_mark_dirty(&ix, 1000000, 1);
	index_mark_dirty(&ix, far, 1);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), 1000000);
	CHECK_EQ(index_find_marked(&ix, 1000001, NONE, IX_DIRTY), far);
	CHECK_EQ(index_find_marked(&ix, 1000001, far, IX_DIRTY), NONE);	/* end bound */
	index_tag_towrite(&ix, 0, 2000000);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_TOWRITE), 1000000);
	CHECK_EQ(index_find_marked(&ix, 1000001, NONE, IX_TOWRITE), NONE);
	CHECK_EQ(ix.nr_dirty_pages, 2);
	index_erase(&ix, far);		/* erasing takes its marks along */
	CHECK_EQ(ix.nr_dirty_pages, 1);
	CHECK_EQ(index_find_marked(&ix, 1000001, NONE, IX_DIRTY), NONE);
	index_destroy(&ix);
}

struct runs {
	uint64_t page[16], n[16];
	int count;
};

static void record_run(void *ctx, uint64_t entry, uint64_t page, uint64_t npages)
{
	struct runs *r = ctx;
	(void)entry;
	if (r->count < 16) {
		r->page[r->count] = page;
		r->n[r->count++] = npages;
	}
}

static void test_clean_coalesces_dirty_runs_of_a_huge_entry(void)
{
	struct index ix;
	struct runs r = { 0 };

	index_init(&ix);
	CHECK_EQ(index_insert(&ix, 512, ix_mk_entry(4096, IX_ORDER_2M, 0)), 0);
	index_mark_dirty(&ix, 512 + 1, 3);
	index_mark_dirty(&ix, 512 + 10, 1);
	index_tag_towrite(&ix, 0, NONE);
	CHECK_EQ(index_lock_entry(&ix, 600) != 0, 1);
	CHECK_EQ(index_clean_entry(&ix, 600, record_run, &r), 4);
	index_unlock_entry(&ix, 600);
	CHECK_EQ(r.count, 2);
	CHECK(r.page[0] == 513 && r.n[0] == 3 && r.page[1] == 522 && r.n[1] == 1);
	CHECK_EQ(ix.nr_dirty_pages, 0);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_DIRTY), NONE);
	CHECK_EQ(index_find_marked(&ix, 0, NONE, IX_TOWRITE), NONE);
	r.count = 0;
	CHECK_EQ(index_clean_entry(&ix, 600, record_run, &r), 0);	/* clean: nothing */
	CHECK_EQ(r.count, 0);
	index_destroy(&ix);
}

/* ---- concurrent writers and flushers ---- */

#define CPAGES 4096
static struct index cix;
static _Atomic uint64_t written[CPAGES], flushed[CPAGES];
static _Atomic int stop;

static void flush_run(void *ctx, uint64_t entry, uint64_t page, uint64_t n)
{
	(void)ctx;
	(void)entry;
	for (uint64_t p = page; p < page + n; p++)
		atomic_store(&flushed[p], atomic_load(&written[p]));
}

static void *writer(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 2654435761u + 1;

	for (int i = 0; i < 200000 && !atomic_load(&stop); i++) {
		seed = seed * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t p = (seed >> 33) % CPAGES;
		atomic_fetch_add(&written[p], 1);	/* the data store ... */
		index_mark_dirty(&cix, p, 1);		/* ... then the mark */
	}
	return NULL;
}

static void flush_all(void)
{
	index_tag_towrite(&cix, 0, NONE);
	for (uint64_t p = 0; (p = index_find_marked(&cix, p, NONE, IX_TOWRITE)) != NONE;) {
		uint64_t first, e = index_lock_entry(&cix, p);
		if (!e)
			break;
		index_lookup(&cix, p, &first);
		index_clean_entry(&cix, p, flush_run, NULL);
		index_unlock_entry(&cix, p);
		p = first + ix_pages(e);
	}
}

static void *flusher(void *arg)
{
	(void)arg;
	while (!atomic_load(&stop))
		flush_all();
	return NULL;
}

static void test_concurrent_writers_and_flushers_lose_no_write(void)
{
	pthread_t w[3], f[2];

	index_init(&cix);
	/* a mix of 4 KiB and 2 MiB entries over the range */
	for (uint64_t p = 0; p < CPAGES; p += 512)
		if ((p / 512) % 2)
			CHECK_EQ(index_insert(&cix, p, ix_mk_entry(p + 100000, IX_ORDER_2M, 0)), 0);
		else
			for (uint64_t q = p; q < p + 512; q++)
				CHECK_EQ(index_insert(&cix, q, ix_mk_entry(q + 100000, 0, 0)), 0);
	for (int i = 0; i < 2; i++)
		pthread_create(&f[i], NULL, flusher, NULL);
	for (int i = 0; i < 3; i++)
		pthread_create(&w[i], NULL, writer, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < 3; i++)
		pthread_join(w[i], NULL);
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(f[i], NULL);
	flush_all();	/* the final fsync */
	int lost = 0;
	for (int p = 0; p < CPAGES; p++)
		if (atomic_load(&flushed[p]) != atomic_load(&written[p]))
			lost++;
	CHECK_EQ(lost, 0);
	CHECK_EQ(cix.nr_dirty_pages, 0);
	index_destroy(&cix);
}

int main(void)
{
	RUN(test_insert_lookup_erase_all_orders);
	RUN(test_split_2m_keeps_exactly_the_dirty_pages);
	RUN(test_split_1g_into_2m_keeps_page_dirtiness);
	RUN(test_marks_propagate_and_clear_across_sparse_tree);
	RUN(test_clean_coalesces_dirty_runs_of_a_huge_entry);
	RUN(test_concurrent_writers_and_flushers_lose_no_write);
	return test_failures ? 1 : 0;
}
