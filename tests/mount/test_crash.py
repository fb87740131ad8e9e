#!/usr/bin/env python3
"""pmfuse mount tests: crash consistency.

The daemon is SIGKILLed in the middle of a metadata-heavy workload; after
every kill the region must check clean, mount again, have a consistent tree
(every name resolves, directory nlink = 2 + subdirectories, file nlink =
number of names), and every file the workload fsync'd (it never touches
those again) must have exactly the recorded content.

PMFUSE_CRASH_SEED=N reproduces a run; PMFUSE_CRASH_ROUNDS=N changes the
number of kill rounds (default 15)."""

import errno
import hashlib
import os
import random
import shutil
import signal
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (RENAME_EXCHANGE, PmfuseTestCase, fs_stats, fsck, main, pread_all,  # noqa: E402
                     pwrite_all, renameat2, wait_until)

MiB = 1 << 20


# ------------------------------------------------------------ the workload

def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise(e):
    raise e


def _line(fd, *fields):
    os.write(fd, ("\t".join(str(f) for f in fields) + "\n").encode())


class Workload:
    """Runs in a forked child until the first error (the daemon's death)."""

    def __init__(self, mnt, rel, journal, errors, seed):
        self.mnt = mnt
        self.rel = rel
        self.base = os.path.join(mnt, rel)
        self.keep = os.path.join(self.base, "keep")
        self.churn = os.path.join(self.base, "churn")
        self.rng = random.Random(seed)
        self.seed = seed
        self.n = 0
        self.jfd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.efd = os.open(errors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.keep_dirs = []
        self.orphans = []
        self._dirs = None

    def run(self):
        op = "setup"
        try:
            os.mkdir(self.base)
            _fsync_dir(self.mnt)
            os.mkdir(self.keep)
            os.mkdir(self.churn)
            _fsync_dir(self.base)
            self.keep_dirs.append(self.keep)
            ops = [(self.create, 10), (self.overwrite, 6), (self.truncate, 3),
                   (self.rename_file, 8), (self.unlink, 6), (self.link, 4), (self.symlink, 3),
                   (self.mkdir, 5), (self.rmdir, 3), (self.rename_dir, 4), (self.exchange, 2),
                   (self.setxattr, 3), (self.orphan, 2), (self.sync_file, 8),
                   (self.keep_mkdir, 1)]
            funcs = [f for f, _ in ops]
            weights = [w for _, w in ops]
            while True:
                self.n += 1
                f = self.rng.choices(funcs, weights)[0]
                op = f.__name__
                f()
        except OSError as e:
            _line(self.efd, repr(time.monotonic()), op, e.errno, str(e).replace("\t", " "))
        except BaseException as e:     # a bug in the workload itself
            _line(self.efd, repr(time.monotonic()), op, -1, repr(e).replace("\t", " "))

    # -- helpers
    def dirs(self):
        if self._dirs is None:
            self._dirs = [d for d, _, _ in os.walk(self.churn, onerror=_raise)]
        return self._dirs

    def rand_dir(self):
        return self.rng.choice(self.dirs())

    def entries(self, d, want):
        out = []
        with os.scandir(d) as it:
            for e in it:
                if want == "file" and e.is_file(follow_symlinks=False):
                    out.append(e.path)
                elif want == "dir" and e.is_dir(follow_symlinks=False):
                    out.append(e.path)
        return out

    def rand_file(self):
        for _ in range(3):
            files = self.entries(self.rand_dir(), "file")
            if files:
                return self.rng.choice(files)
        return None

    def data(self, maxlen=32 * 1024):
        return self.rng.randbytes(self.rng.choice([0, 1, 100, 4096, 4097, self.rng.randrange(maxlen)]))

    def name(self, prefix):
        return "%s%d-%d" % (prefix, self.seed % 10000, self.n)

    # -- churn operations (anything goes)
    def create(self):
        p = os.path.join(self.rand_dir(), self.name("f"))
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            pwrite_all(fd, self.data(), 0)
            if self.rng.random() < 0.2:
                os.fsync(fd)
        finally:
            os.close(fd)

    def overwrite(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        fd = os.open(p, os.O_WRONLY)
        try:
            pwrite_all(fd, self.data(), self.rng.randrange(64 * 1024))
        finally:
            os.close(fd)

    def truncate(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        os.truncate(p, self.rng.choice([0, 1, 5000, self.rng.randrange(200000)]))

    def rename_file(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        target_dir = self.rand_dir()
        existing = self.entries(target_dir, "file")
        if existing and self.rng.random() < 0.3:
            dst = self.rng.choice(existing)         # replace a file
        else:
            dst = os.path.join(target_dir, self.name("r"))
        os.rename(p, dst)

    def unlink(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        os.unlink(p)

    def link(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        os.link(p, os.path.join(self.rand_dir(), self.name("h")))

    def symlink(self):
        target = "x" * self.rng.choice([1, 50, 200, 1000])
        os.symlink(target, os.path.join(self.rand_dir(), self.name("l")))

    def mkdir(self):
        os.mkdir(os.path.join(self.rand_dir(), self.name("d")))
        self._dirs = None

    def rmdir(self):
        cands = [d for d in self.dirs() if d != self.churn]
        self.rng.shuffle(cands)
        for d in cands[:5]:
            if not os.listdir(d):
                os.rmdir(d)
                self._dirs = None
                return

    def rename_dir(self):
        cands = [d for d in self.dirs() if d != self.churn]
        if not cands:
            return self.mkdir()
        d = self.rng.choice(cands)
        parents = [p for p in self.dirs() if p != d and not p.startswith(d + "/")]
        os.rename(d, os.path.join(self.rng.choice(parents), self.name("m")))
        self._dirs = None

    def exchange(self):
        a, b = self.rand_file(), self.rand_file()
        if a is None or b is None or a == b:
            return self.create()
        renameat2(a, b, RENAME_EXCHANGE)

    def setxattr(self):
        p = self.rand_file()
        if p is None:
            return self.create()
        os.setxattr(p, "user.w%d" % self.rng.randrange(4), self.rng.randbytes(self.rng.randrange(300)))

    def orphan(self):
        p = os.path.join(self.rand_dir(), self.name("o"))
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        pwrite_all(fd, self.rng.randbytes(self.rng.randrange(1, 300000)), 0)
        os.unlink(p)
        self.orphans.append(fd)
        if len(self.orphans) > 4:
            os.close(self.orphans.pop(self.rng.randrange(len(self.orphans))))

    # -- durable files: written once, fsync'd, recorded, never touched again
    def keep_mkdir(self):
        parent = self.rng.choice(self.keep_dirs)
        d = os.path.join(parent, self.name("k"))
        os.mkdir(d)
        _fsync_dir(parent)
        self.keep_dirs.append(d)

    def sync_file(self):
        d = self.rng.choice(self.keep_dirs)
        p = os.path.join(d, self.name("s"))
        data = self.rng.randbytes(self.rng.choice(
            [0, 1, 4095, 4096, 10000, self.rng.randrange(1, 256 * 1024)]))
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            # several writes, some out of order
            cut = self.rng.randrange(len(data) + 1)
            pwrite_all(fd, data[cut:], cut)
            pwrite_all(fd, data[:cut], 0)
            if self.rng.random() < 0.5:
                os.fdatasync(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(d)
        _line(self.jfd, os.path.relpath(p, self.mnt), hashlib.sha256(data).hexdigest(), len(data))


def start_workload(mnt, rel, journal, errors, seed):
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            Workload(mnt, rel, journal, errors, seed).run()
        finally:
            os._exit(0)
    return pid


# ------------------------------------------------------------ the tests

class CrashTest(PmfuseTestCase):
    region_size = "512M"
    test_timeout = 300

    def setUp(self):
        super().setUp()
        self.journal = os.path.join(self.workdir, "fsynced.journal")
        self.errors = os.path.join(self.workdir, "workload.errors")

    def check_tree(self, context):
        """Walk everything; return (unique data blocks in 512 B units, #files)."""
        names_of = {}       # ino -> [paths] for non-directories
        nlink_of = {}
        blocks = {}

        def walk(d):
            names = os.listdir(d)
            self.assertEqual(len(names), len(set(names)), "%s: duplicate names in %s" % (context, d))
            subdirs = 0
            for n in names:
                p = os.path.join(d, n)
                try:
                    st = os.lstat(p)
                except OSError as e:
                    self.fail("%s: %s is listed but does not resolve: %s" % (context, p, e))
                if stat.S_ISDIR(st.st_mode):
                    subdirs += 1
                    walk(p)
                    continue
                names_of.setdefault(st.st_ino, []).append(p)
                nlink_of[st.st_ino] = st.st_nlink
                blocks[st.st_ino] = st.st_blocks
                if stat.S_ISLNK(st.st_mode):
                    self.assertEqual(len(os.readlink(p)), st.st_size, "%s: %s" % (context, p))
                elif stat.S_ISREG(st.st_mode):
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        got = pread_all(fd, st.st_size + 1, 0)
                    finally:
                        os.close(fd)
                    self.assertEqual(len(got), st.st_size, "%s: %s reads %d of %d bytes"
                                     % (context, p, len(got), st.st_size))
            st = os.lstat(d)
            self.assertEqual(st.st_nlink, 2 + subdirs,
                             "%s: directory %s has nlink %d but %d subdirectories"
                             % (context, d, st.st_nlink, subdirs))
        walk(self.mnt)
        for ino, paths in names_of.items():
            self.assertEqual(nlink_of[ino], len(paths),
                             "%s: inode %d has nlink %d but names %s"
                             % (context, ino, nlink_of[ino], paths))
        return sum(blocks.values()), len(names_of)

    def check_journal(self, context):
        if not os.path.exists(self.journal):
            return 0
        n = 0
        with open(self.journal) as f:
            for line in f:
                rel, digest, size = line.rstrip("\n").split("\t")
                p = os.path.join(self.mnt, rel)
                try:
                    with open(p, "rb") as g:
                        data = g.read()
                except OSError as e:
                    self.fail("%s: fsync'd file %s is gone: %s" % (context, rel, e))
                self.assertEqual(len(data), int(size), "%s: fsync'd file %s has the wrong size"
                                 % (context, rel))
                self.assertEqual(hashlib.sha256(data).hexdigest(), digest,
                                 "%s: fsync'd file %s has the wrong content" % (context, rel))
                n += 1
        return n

    def check_statvfs(self, context, used_blocks_512):
        st = os.statvfs(self.mnt)
        self.assertGreaterEqual(st.f_blocks, st.f_bfree, context)
        self.assertGreaterEqual(st.f_bfree, st.f_bavail, context)
        self.assertGreaterEqual(st.f_files, st.f_ffree, context)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        self.assertGreaterEqual(used, used_blocks_512 * 512,
                                "%s: statfs says %d bytes used but files hold %d"
                                % (context, used, used_blocks_512 * 512))

    def unexpected_errors(self, t_kill):
        if not os.path.exists(self.errors):
            return []
        bad = []
        with open(self.errors) as f:
            for line in f:
                t, op, err, msg = line.rstrip("\n").split("\t", 3)
                if float(t) < t_kill or int(err) < 0:
                    bad.append("%s: %s (errno %s)" % (op, msg, err))
        os.unlink(self.errors)
        return bad

    def test_sigkill_during_a_metadata_heavy_workload_leaves_a_consistent_filesystem(self):
        seed = int(os.environ.get("PMFUSE_CRASH_SEED") or random.randrange(1 << 30))
        rounds = int(os.environ.get("PMFUSE_CRASH_ROUNDS") or 15)
        rng = random.Random(seed)
        fresh = os.statvfs(self.mnt)
        recorded = 0
        for r in range(rounds):
            ctx = "round %d (PMFUSE_CRASH_SEED=%d)" % (r, seed)
            delay = rng.uniform(0.05, 0.5)
            pid = start_workload(self.mnt, "it%02d" % r, self.journal, self.errors,
                                 rng.randrange(1 << 30))
            time.sleep(delay)
            t_kill = time.monotonic()
            self.crash()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            bad = self.unexpected_errors(t_kill)
            self.assertEqual(bad, [], "%s: the workload failed while the daemon was alive" % ctx)
            rc, out = fsck(self.region, "-n")
            self.assertEqual(rc, 0, "%s: fsck after SIGKILL exited %d:\n%s" % (ctx, rc, out[-3000:]))
            self.m = self.mount()
            used, nfiles = self.check_tree(ctx)
            recorded = self.check_journal(ctx)
            self.check_statvfs(ctx, used)
            if os.environ.get("PMFUSE_TEST_VERBOSE"):
                st = os.statvfs(self.mnt)
                sys.stderr.write("\n  %s: killed after %.2fs; %d files (%d KiB in files), "
                                 "statfs used %d KiB, free %d KiB, %d inodes free"
                                 % (ctx, delay, nfiles, used // 2,
                                    (st.f_blocks - st.f_bfree) * st.f_frsize // 1024,
                                    st.f_bfree * st.f_frsize // 1024, st.f_ffree))
            self.remount()          # clean unmount (exit 0) + fsck clean + mount
            self.check_tree(ctx + " after clean remount")
        sys.stderr.write("[%d rounds, %d fsync'd files verified, seed %d] " % (rounds, recorded, seed))
        # nothing leaked: removing everything gives back all blocks and inodes
        for n in os.listdir(self.mnt):
            shutil.rmtree(os.path.join(self.mnt, n))
        self.remount()
        self.assertEqual(os.listdir(self.mnt), [])
        ok = wait_until(lambda: os.statvfs(self.mnt).f_bfree == fresh.f_bfree, 5)
        st = os.statvfs(self.mnt)
        self.assertTrue(ok, "blocks leaked: bfree %d, fresh %d" % (st.f_bfree, fresh.f_bfree))
        self.assertEqual(st.f_ffree, fresh.f_ffree, "inodes leaked")
        self.assertEqual(os.stat(self.mnt).st_nlink, 2)

    def test_an_unlinked_open_file_of_a_killed_daemon_is_reclaimed_on_the_next_mount(self):
        fresh = os.statvfs(self.mnt)
        p = self.p("orphan")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            pwrite_all(fd, os.urandom(8 * MiB), 0)
            os.fsync(fd)
            os.unlink(p)
            st = os.statvfs(self.mnt)
            self.assertLessEqual(st.f_bfree, fresh.f_bfree - 8 * MiB // st.f_frsize)
        except BaseException:
            os.close(fd)
            raise
        self.crash_with_open_orphan(fd)
        self.assertReclaimedAtMount(fresh)

    def test_fsynced_data_survives_sigkill_right_after_fsync(self):
        data = {}
        for i in range(20):
            d = os.urandom(random.Random(i).randrange(1, 3 * MiB))
            p = self.p("f%02d" % i)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                pwrite_all(fd, d, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            data[p] = d
        dfd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        for p, d in data.items():
            with open(p, "rb") as f:
                self.assertEqual(f.read(), d, p)

    def remount_armed(self, point):
        """Remount with crash point point armed in the daemon."""
        self.unmount()
        os.environ["PMFUSE_FAULT_CRASH"] = point
        try:
            self.m = self.mount()
        finally:
            del os.environ["PMFUSE_FAULT_CRASH"]

    def kill_in_the_middle_of_reclaim(self, point, last_reference):
        """The daemon dies at a crash point of an unlinked file's eviction."""
        fresh = os.statvfs(self.mnt)
        keep = os.urandom(300000)
        with open(self.p("keep"), "wb") as f:
            f.write(keep)
            os.fsync(f.fileno())
        self.remount_armed(point)
        p = self.p("victim")
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        pwrite_all(fd, os.urandom(3 * MiB), 0)
        pwrite_all(fd, os.urandom(MiB), MiB)    # overwrites: dirty pages
        os.unlink(p)
        if last_reference == "close":
            os.close(fd)                        # RELEASE evicts it
        else:
            os.close(fd)
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")                    # and so does a FORGET
        died = wait_until(lambda: not self.m.alive(), 10)
        self.assertTrue(died, "the daemon did not reach crash point %s" % point)
        self.crash()                            # detach the dead mount
        self.assertFsckClean()
        self.m = self.mount()
        self.assertEqual(os.listdir(self.mnt), ["keep"])
        with open(self.p("keep"), "rb") as f:
            self.assertEqual(f.read(), keep)
        st = os.statvfs(self.mnt)
        keep_blocks = (len(keep) + st.f_frsize - 1) // st.f_frsize
        self.assertEqual(st.f_bfree, fresh.f_bfree - keep_blocks, "the victim's blocks")
        self.assertEqual(st.f_ffree, fresh.f_ffree - 1, "the victim's inode")

    def test_sigkill_as_an_unlinked_file_starts_eviction_leaves_it_to_the_next_mount(self):
        self.kill_in_the_middle_of_reclaim("evict", "close")

    def test_sigkill_inside_the_reclaim_transaction_leaves_it_to_the_next_mount(self):
        self.kill_in_the_middle_of_reclaim("reclaim-tx", "close")

    def test_sigkill_inside_a_reclaim_started_by_forget_leaves_it_to_the_next_mount(self):
        self.kill_in_the_middle_of_reclaim("reclaim-tx", "forget")

    def kill_as_an_inode_chunk_is_freed(self, point):
        """The daemon dies as the chunks of deleted files go back: the next
        mount gives them back (all but the one kept spare)."""
        fresh = os.statvfs(self.mnt)
        fresh_stats = fs_stats(self.mnt)
        self.remount_armed(point)
        names = [self.p("c%03d" % i) for i in range(4 * 64)]
        for n in names:
            with open(n, "wb") as f:
                f.write(b"c")
        gone = 0
        try:
            for n in names:
                os.unlink(n)        # the kernel FORGETs each: reclaims, chunks emptied
                gone += 1
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")
        except OSError as e:        # the daemon died under it
            self.assertIn(e.errno, (errno.ECANCELED, errno.ENOTCONN, errno.ECONNABORTED), e)
        died = wait_until(lambda: not self.m.alive(), 10)
        self.assertTrue(died, "the daemon did not reach crash point %s" % point)
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        # every unlink that returned holds, the one in flight either way
        left = sorted(os.listdir(self.mnt))
        self.assertLessEqual(set(left), {os.path.basename(n) for n in names[gone:]})
        self.assertGreaterEqual(len(left), len(names) - gone - 1)
        self.assertEqual(os.statvfs(self.mnt).f_ffree, fresh.f_ffree - len(left))
        s = fs_stats(self.mnt)
        # the mount gave back what the dead daemon had emptied, but a spare
        self.assertGreaterEqual(s["inode_chunks_freed"], 1, s)
        for n in left:
            os.unlink(self.p(n))
        self.assertTrue(wait_until(lambda: fs_stats(self.mnt)["inode_chunks"] == 2, 10),
                        fs_stats(self.mnt))       # the root's, and the spare
        self.assertEqual(os.statvfs(self.mnt).f_ffree, fresh.f_ffree)
        # the spare (16 KiB) and the root's grown directory table (33 KiB
        # in all, 2026-12-08); three more chunks would be 48 KiB more
        self.assertLessEqual(fs_stats(self.mnt)["metadata_bytes"],
                             fresh_stats["metadata_bytes"] + 40 * 1024)
        # the numbers come back, in chunks made again
        for n in names:
            open(n, "w").close()
        self.assertEqual(fs_stats(self.mnt)["inode_chunks"], 5)
        self.unmount()
        self.assertFsckClean()
        self.m = self.mount()

    def test_sigkill_as_an_inode_chunk_empties_leaves_it_to_the_next_mount(self):
        self.kill_as_an_inode_chunk_is_freed("ichunk-empty")

    def test_sigkill_inside_the_transaction_that_frees_an_inode_chunk(self):
        self.kill_as_an_inode_chunk_is_freed("ichunk-free-tx")

    def test_sigkill_of_an_idle_daemon_loses_nothing(self):
        os.makedirs(self.p("a", "b"))
        with open(self.p("a", "b", "f"), "wb") as f:
            f.write(b"idle")
        os.symlink("a/b/f", self.p("s"))
        os.setxattr(self.p("a"), "user.x", b"y")
        time.sleep(0.2)
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        with open(self.p("s"), "rb") as f:
            self.assertEqual(f.read(), b"idle")
        self.assertEqual(os.getxattr(self.p("a"), "user.x"), b"y")
        self.assertEqual(os.stat(self.p("a")).st_nlink, 3)


if __name__ == "__main__":
    main()
