/*
 * Unit tests of the mapping index alone (daemon/core/mapping.c): entries of every
 * order, splitting, marks and their propagation, find-next-marked across
 * sparse trees, run coalescing, and concurrent writers and flushers.  Also
 * built with ThreadSanitizer (test_mapping_tsan).
 */
#include "harness.h"
#include "mapping.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define NONE UINT64_MAX

static void test_insert_lookup_erase_all_orders(void)
{
	struct mapping map;
	uint64_t first;

	mapping_init(&map);
	CHECK_EQ(mapping_insert(&map, 5, dax_mk_entry(100, DAX_ORDER_4K, 0)), 0);
	CHECK_EQ(mapping_insert(&map, 512, dax_mk_entry(4096, DAX_ORDER_2M, 0)), 0);
	CHECK_EQ(mapping_insert(&map, 1ull << 18, dax_mk_entry(1 << 20, DAX_ORDER_1G, 0)), 0);
	CHECK_EQ(mapping_insert(&map, 3ull << 18, dax_mk_zero(DAX_ORDER_1G)), 0);
	CHECK_EQ(mapping_insert(&map, 100, dax_mk_entry(1, DAX_ORDER_2M, 0)), -EINVAL);
	CHECK_EQ(mapping_insert(&map, 512 + 7, dax_mk_entry(1, DAX_ORDER_4K, 0)), -EEXIST);
	CHECK_EQ(mapping_insert(&map, 5, dax_mk_entry(1, DAX_ORDER_4K, 0)), -EEXIST);
	CHECK_EQ(map.nr_entries, 4);

	uint64_t e = mapping_lookup(&map, 5, &first);
	CHECK(dax_is_value(e) && dax_block(e) == 100 && first == 5 && dax_order(e) == 0);
	e = mapping_lookup(&map, 512 + 300, &first);	/* a sibling slot */
	CHECK(dax_block(e) == 4096 && first == 512 && dax_order(e) == DAX_ORDER_2M);
	e = mapping_lookup(&map, (1ull << 18) + 77777, &first);
	CHECK(dax_block(e) == 1 << 20 && first == 1ull << 18 && dax_order(e) == DAX_ORDER_1G);
	e = mapping_lookup(&map, (3ull << 18) + 5, &first);
	CHECK(dax_is_zero(e) && dax_order(e) == DAX_ORDER_1G);
	CHECK_EQ(mapping_lookup(&map, 6, NULL), 0);
	CHECK_EQ(mapping_lookup(&map, 1ull << 40, NULL), 0);
	CHECK_EQ(map.nr_huge[0], 1);
	CHECK_EQ(map.nr_huge[1], 2);

	CHECK(dax_block(mapping_erase(&map, 1000)) == 4096);	/* any page of it */
	CHECK_EQ(mapping_lookup(&map, 512, NULL), 0);
	CHECK_EQ(mapping_insert(&map, 512 + 7, dax_mk_entry(1, DAX_ORDER_4K, 0)), 0);
	mapping_erase(&map, 5);
	mapping_erase(&map, 512 + 7);
	mapping_erase(&map, 1ull << 18);
	mapping_erase(&map, 3ull << 18);
	CHECK_EQ(map.nr_entries, 0);
	CHECK(map.root == NULL);		/* empty nodes are pruned */
	mapping_destroy(&map);
}

static void test_split_2m_keeps_exactly_the_dirty_pages(void)
{
	struct mapping map;

	mapping_init(&map);
	CHECK_EQ(mapping_insert(&map, 1024, dax_mk_entry(8192, DAX_ORDER_2M, 0)), 0);
	CHECK_EQ(mapping_mark_dirty(&map, 1024 + 3, 1), 1);
	CHECK_EQ(mapping_mark_dirty(&map, 1024 + 200, 2), 2);
	CHECK_EQ(mapping_mark_dirty(&map, 1024 + 3, 1), 0);	/* already dirty */
	CHECK_EQ(map.nr_dirty_pages, 3);
	CHECK_EQ(mapping_split(&map, 1500), 0);
	CHECK_EQ(map.nr_entries, 512);
	CHECK_EQ(map.nr_huge[0], 0);
	CHECK_EQ(map.nr_dirty_pages, 3);
	for (uint64_t p = 1024; p < 1536; p++) {
		uint64_t first, e = mapping_lookup(&map, p, &first);
		CHECK(dax_order(e) == 0 && first == p && dax_block(e) == 8192 + p - 1024);
	}
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), 1024 + 3);
	CHECK_EQ(mapping_find_marked(&map, 1024 + 4, NONE, DAX_DIRTY), 1024 + 200);
	CHECK_EQ(mapping_find_marked(&map, 1024 + 201, NONE, DAX_DIRTY), 1024 + 201);
	CHECK_EQ(mapping_find_marked(&map, 1024 + 202, NONE, DAX_DIRTY), NONE);
	CHECK_EQ(mapping_split(&map, 1500), -ENOENT);	/* nothing huge left */
	mapping_destroy(&map);
}

static void test_split_1g_into_2m_keeps_page_dirtiness(void)
{
	struct mapping map;

	mapping_init(&map);
	CHECK_EQ(mapping_insert(&map, 0, dax_mk_entry(1ull << 18, DAX_ORDER_1G, 0)), 0);
	mapping_mark_dirty(&map, 70000, 1);
	CHECK_EQ(mapping_split(&map, 5), 0);
	CHECK_EQ(map.nr_huge[1], 0);
	CHECK_EQ(map.nr_huge[0], 512);
	CHECK_EQ(map.nr_dirty_pages, 1);
	uint64_t first, e = mapping_lookup(&map, 70000, &first);
	CHECK(dax_order(e) == DAX_ORDER_2M && first == 70000 / 512 * 512);
	CHECK_EQ(dax_block(e), (1ull << 18) + first);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), first);
	/* and the page, not the 2 MiB, is what comes out of cleaning */
	CHECK_EQ(mapping_split(&map, 70000), 0);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), 70000);
	mapping_destroy(&map);
}

static void test_marks_propagate_and_clear_across_sparse_tree(void)
{
	struct mapping map;
	uint64_t far = 5000000000ull;	/* ~18 TiB into the file */

	mapping_init(&map);
	CHECK_EQ(mapping_insert(&map, 0, dax_mk_entry(10, DAX_ORDER_4K, 0)), 0);
	CHECK_EQ(mapping_insert(&map, 1000000, dax_mk_entry(11, DAX_ORDER_4K, 0)), 0);
	CHECK_EQ(mapping_insert(&map, far, dax_mk_entry(12, DAX_ORDER_4K, 0)), 0);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), NONE);
	mapping_mark_dirty(&map, 1000000, 1);
	mapping_mark_dirty(&map, far, 1);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), 1000000);
	CHECK_EQ(mapping_find_marked(&map, 1000001, NONE, DAX_DIRTY), far);
	CHECK_EQ(mapping_find_marked(&map, 1000001, far, DAX_DIRTY), NONE);	/* end bound */
	mapping_tag_towrite(&map, 0, 2000000);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_TOWRITE), 1000000);
	CHECK_EQ(mapping_find_marked(&map, 1000001, NONE, DAX_TOWRITE), NONE);
	CHECK_EQ(map.nr_dirty_pages, 2);
	mapping_erase(&map, far);		/* erasing takes its marks along */
	CHECK_EQ(map.nr_dirty_pages, 1);
	CHECK_EQ(mapping_find_marked(&map, 1000001, NONE, DAX_DIRTY), NONE);
	mapping_destroy(&map);
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
	struct mapping map;
	struct runs r = { 0 };

	mapping_init(&map);
	CHECK_EQ(mapping_insert(&map, 512, dax_mk_entry(4096, DAX_ORDER_2M, 0)), 0);
	mapping_mark_dirty(&map, 512 + 1, 3);
	mapping_mark_dirty(&map, 512 + 10, 1);
	mapping_tag_towrite(&map, 0, NONE);
	CHECK_EQ(mapping_lock_entry(&map, 600) != 0, 1);
	CHECK_EQ(mapping_clean_entry(&map, 600, record_run, &r), 4);
	mapping_unlock_entry(&map, 600);
	CHECK_EQ(r.count, 2);
	CHECK(r.page[0] == 513 && r.n[0] == 3 && r.page[1] == 522 && r.n[1] == 1);
	CHECK_EQ(map.nr_dirty_pages, 0);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_DIRTY), NONE);
	CHECK_EQ(mapping_find_marked(&map, 0, NONE, DAX_TOWRITE), NONE);
	r.count = 0;
	CHECK_EQ(mapping_clean_entry(&map, 600, record_run, &r), 0);	/* clean: nothing */
	CHECK_EQ(r.count, 0);
	mapping_destroy(&map);
}

/* ---- concurrent writers and flushers ---- */

#define CPAGES 4096
static struct mapping cix;
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
		mapping_mark_dirty(&cix, p, 1);		/* ... then the mark */
	}
	return NULL;
}

static void flush_all(void)
{
	mapping_tag_towrite(&cix, 0, NONE);
	for (uint64_t p = 0; (p = mapping_find_marked(&cix, p, NONE, DAX_TOWRITE)) != NONE;) {
		uint64_t first, e = mapping_lock_entry(&cix, p);
		if (!e)
			break;
		mapping_lookup(&cix, p, &first);
		mapping_clean_entry(&cix, p, flush_run, NULL);
		mapping_unlock_entry(&cix, p);
		p = first + dax_pages(e);
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

	mapping_init(&cix);
	/* a mix of 4 KiB and 2 MiB entries over the range */
	for (uint64_t p = 0; p < CPAGES; p += 512)
		if ((p / 512) % 2)
			CHECK_EQ(mapping_insert(&cix, p, dax_mk_entry(p + 100000, DAX_ORDER_2M, 0)), 0);
		else
			for (uint64_t q = p; q < p + 512; q++)
				CHECK_EQ(mapping_insert(&cix, q, dax_mk_entry(q + 100000, 0, 0)), 0);
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
	mapping_destroy(&cix);
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
