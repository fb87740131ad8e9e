/*
 * fsck: output, failure and signals; inode records, metadata ownership, the block bitmap.
 */
#include "check.h"

/* ------------------------------------------------------------------ */
/* output and failure */

/* the process-wide state of check.h */
struct fsck *active;
sigjmp_buf heap_jmp;		/* the walk of the pmemobj heap (pass 6), guarded */
volatile sig_atomic_t in_pmemobj;
volatile sig_atomic_t cancel_requested, repairing, asking, changed;

void problem(struct fsck *f, const char *fmt, ...)
{
	va_list ap;

	f->problems++;
	if (f->quiet)
		return;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}


void cleanup(struct fsck *f)
{
	if (f->protected)
		mprotect(f->pool.base, f->pool.size, PROT_READ | PROT_WRITE);
	f->protected = false;
	if (f->opened && !f->heap_broken)
		pool_close(&f->pool);	/* else exit() drops the mapping and the lock */
	f->opened = false;
}

void fatal(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "fsck.pmfuse: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	if (active)
		cleanup(active);
	exit(FSCK_OPERATIONAL);
}

void *xsparse(size_t bytes)
{
	void *m = pool_sparse_zalloc(bytes);

	if (!m)
		fatal("out of memory (%zu bytes)", bytes);
	return m;
}

void *xcalloc(size_t n, size_t size)
{
	void *m = calloc(n ? n : 1, size);

	if (!m)
		fatal("out of memory (%zu x %zu bytes)", n, size);
	return m;
}

/*
 * libpmemobj trusts its own metadata (lanes, heap headers): damage there can
 * crash it inside pmemobj_open() or the heap walk.  Those crashes become an
 * operational error; a crash anywhere else is a bug in fsck and stays one.
 */

void say(const char *msg)
{
	if (write(STDERR_FILENO, msg, strlen(msg)) < 0) {
		/* nothing left to do */
	}
}

void on_fault(int sig)
{
	if (sig == SIGBUS) {
		say("fsck.pmfuse: media error (SIGBUS) while reading the region\n");
		_exit(FSCK_OPERATIONAL);
	}
	if (in_pmemobj == 2)
		siglongjmp(heap_jmp, sig);
	if (in_pmemobj) {
		say("fsck.pmfuse: libpmemobj crashed reading its own pool metadata: the pmemobj pool"
		    " structures (lanes or heap) of the region are damaged\n");
		_exit(FSCK_OPERATIONAL);
	}
	signal(sig, SIG_DFL);	/* returning re-faults: an honest crash */
}

void install_fault_handlers(void)
{
	struct sigaction sa = { .sa_handler = on_fault };

	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGABRT, &sa, NULL);
	sigaction(SIGFPE, &sa, NULL);
	sigaction(SIGILL, &sa, NULL);
}

int refuse_in_use(const struct fsck *f)
{
	fprintf(stderr, "fsck.pmfuse: %s is in use (mounted?)\n", f->region);
	return FSCK_OPERATIONAL;
}

/* A name for messages: printable ASCII as is, the rest as \xNN. */
const char *esc(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 5 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
			out[o++] = (char)c;
		else
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}


const char *type_name(uint32_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "regular file";
	case S_IFDIR: return "directory";
	case S_IFLNK: return "symlink";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFIFO: return "fifo";
	case S_IFSOCK: return "socket";
	default: return "file of unknown type";
	}
}

/* ------------------------------------------------------------------ */
/* inode records */

struct pmfuse_inode *rec(struct fsck *f, uint64_t ino)
{
	uint64_t c = ino / PMFUSE_INODES_PER_CHUNK;

	if (ino == 0 || ino >= f->max_inodes || !f->chunk_ok[c])
		return NULL;
	return (struct pmfuse_inode *)pool_ptr(f->p, pool_ichunk(f->p, c)) +
	       ino % PMFUSE_INODES_PER_CHUNK;
}

/*
 * The inode number after ino whose chunk holds records: the passes skip
 * chunks never allocated (or not trusted) whole -- a 4 TiB region has 2^28
 * numbers, almost all of them in chunks that do not exist.
 */
uint64_t next_ino(const struct fsck *f, uint64_t ino)
{
	/* past the last readable chunk there is nothing: passes cost what is used */
	for (ino++; ino < f->ino_end; ino = (ino / PMFUSE_INODES_PER_CHUNK + 1) *
					   PMFUSE_INODES_PER_CHUNK)
		if (f->chunk_ok[ino / PMFUSE_INODES_PER_CHUNK])
			return ino;
	return f->max_inodes;
}

/* A used inode whose structures may be read. */
struct pmfuse_inode *good(struct fsck *f, uint64_t ino)
{
	struct pmfuse_inode *pi = rec(f, ino);

	return pi && (f->st[ino] & (I_USED | I_BAD)) == I_USED ? pi : NULL;
}

/* ------------------------------------------------------------------ */
/* metadata ownership */

static const char *kind_name(uint8_t kind)
{
	switch (kind) {
	case K_SUPER: return "superblock";
	case K_ITABLE: return "inode table";
	case K_ICHUNK: return "inode table chunk";
	case K_DIRTAB: return "directory table";
	case K_DIRCHUNK: return "directory chunk";
	case K_NAME: return "entry name";
	case K_XATTR: return "xattr object";
	case K_SYMLINK: return "symlink target";
	case K_MAPNODE: return "file map node";
	default: return "object";
	}
}

/*
 * A metadata structure in words: as the subject of a problem line
 * ("inode 5: directory chunk") or as its owner ("a directory chunk of
 * inode 5").
 */
const char *describe(const struct ref *r, bool as_owner, char *buf, size_t len)
{
	const char *kind = kind_name(r->kind);

	switch (r->kind) {
	case K_SUPER: case K_ITABLE:
		snprintf(buf, len, "%s%s", as_owner ? "the " : "", kind);
		break;
	case K_ICHUNK:
		snprintf(buf, len, "inode table chunk %" PRIu64, r->owner);
		break;
	default:
		if (!as_owner)
			snprintf(buf, len, "inode %" PRIu64 ": %s", r->owner, kind);
		else if (r->kind == K_NAME)
			snprintf(buf, len, "an entry name in directory %" PRIu64, r->owner);
		else
			snprintf(buf, len, "a %s of inode %" PRIu64, kind, r->owner);
		break;
	}
	return buf;
}

/* The inode whose structure r is, or 0 (superblock, inode table and its chunks). */
uint64_t ref_inode(const struct ref *r)
{
	return r->kind == K_SUPER || r->kind == K_ITABLE || r->kind == K_ICHUNK ? 0 : r->owner;
}

/* Something of ino is damaged or shared with another owner: repairs never free it. */
void sicken(struct fsck *f, uint64_t ino)
{
	if (ino && ino < f->max_inodes)
		f->st[ino] |= I_SICK;
}

static size_t ref_hash(uint64_t off, size_t cap)
{
	return (size_t)((off >> 3) * 0x9e3779b97f4a7c15ULL) & (cap - 1);
}

static void ref_grow(struct fsck *f)
{
	struct ref *old = f->refs;
	size_t ocap = f->refcap, cap = ocap ? ocap * 2 : 4096;

	f->refs = xcalloc(cap, sizeof(*f->refs));
	f->refcap = cap;
	for (size_t i = 0; i < ocap; i++) {
		if (!old[i].off)
			continue;
		size_t j = ref_hash(old[i].off, cap);
		while (f->refs[j].off)
			j = (j + 1) & (cap - 1);
		f->refs[j] = old[i];
	}
	free(old);
}

/*
 * Record that owner uses [off, +len) as kind.  Returns false (and reports)
 * if something else already uses the same offset.
 */
bool ref_add(struct fsck *f, uint64_t off, uint64_t len, uint8_t kind, uint64_t owner)
{
	size_t j;

	if ((f->nrefs + 1) * 2 > f->refcap)
		ref_grow(f);
	for (j = ref_hash(off, f->refcap); f->refs[j].off; j = (j + 1) & (f->refcap - 1)) {
		if (f->refs[j].off != off)
			continue;
		struct ref mine = { off, len, owner, kind };
		char a[128], b[128];
		problem(f, "%s at offset %" PRIu64 " is also used as %s", describe(&mine, false, a, sizeof(a)),
			off, describe(&f->refs[j], true, b, sizeof(b)));
		sicken(f, ref_inode(&mine));
		sicken(f, ref_inode(&f->refs[j]));
		f->incomplete = true;
		return false;
	}
	f->refs[j] = (struct ref){ off, len, owner, kind };
	f->nrefs++;
	return true;
}

/* ------------------------------------------------------------------ */
/* block bitmap */

uint64_t popcount(uint64_t w)
{
	return (uint64_t)__builtin_popcountll(w);
}

/* Mark blocks [phys, +n) used; blocks already used go to the dup map. */
void mark_blocks(struct fsck *f, uint64_t phys, uint64_t n)
{
	if (phys >= f->nblocks || n > f->nblocks - phys)
		return;		/* pool_block_range_ok() rules this out */
	if (!n)
		return;
	if (f->bmap_lo >= f->bmap_hi || phys >> 6 < f->bmap_lo)
		f->bmap_lo = phys >> 6;
	if (((phys + n - 1) >> 6) + 1 > f->bmap_hi)
		f->bmap_hi = ((phys + n - 1) >> 6) + 1;
	while (n) {
		uint64_t w = phys >> 6, bit = phys & 63;
		uint64_t k = 64 - bit < n ? 64 - bit : n;
		uint64_t mask = (k == 64 ? ~0ULL : ((1ULL << k) - 1)) << bit;
		uint64_t dup = f->bmap[w] & mask;
		if (dup) {
			f->ndup += popcount(dup & ~f->dmap[w]);
			f->dmap[w] |= dup;
		}
		f->bmap[w] |= mask;
		phys += k;
		n -= k;
	}
}
