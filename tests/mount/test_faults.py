#!/usr/bin/env python3
"""Injected faults through a real mount: media errors in the data mapping.

A page of real pmem can go bad (poison); a load or store to it raises
SIGBUS.  The test-only preload library tests/fault/poison.c makes chosen
pages of the daemon's mappings fault exactly so.  The request that meets
the bad page gets EIO and is logged, the daemon lives on, the rest of the
file and the filesystem keep working, and metadata stays consistent."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import main  # noqa: E402

POISON_LIB = os.path.join(h.BUILD, "tests", "fault", "libpmfuse-poison.so")
BLK = 4096
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10


class PoisonCase(h.PmfuseTestCase):
    region_size = "64M"
    granularity = None          # PMEM2_FORCE_GRANULARITY for the daemon

    def setUp(self):
        self.fds = []
        self.ctl = None
        super().setUp()

    def mount(self, opts=None, region=None, mnt=None):
        self.ctl = os.path.join(self.workdir, "poison-ctl-%d" % len(self.mounts))
        env = {"LD_PRELOAD": POISON_LIB, "PMFUSE_POISON_REGION": region or self.region,
               "PMFUSE_POISON_CTL": self.ctl,
               # the ASan build: our library comes before libasan in the list
               "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") +
               ":verify_asan_link_order=0"}
        if self.granularity:
            env["PMEM2_FORCE_GRANULARITY"] = self.granularity
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return super().mount(opts, region, mnt)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def tearDown(self):
        while self.fds:
            os.close(self.fds.pop())
        super().tearDown()

    def command(self, what, off, length):
        done = self.ctl + ".done"
        if os.path.exists(done):
            os.unlink(done)
        with open(self.ctl + ".tmp", "w") as f:
            f.write("%s %d %d\n" % (what, off, length))
        os.rename(self.ctl + ".tmp", self.ctl)
        self.assertTrue(h.wait_until(lambda: os.path.exists(done), 10),
                        "the poison library did not answer")
        with open(done) as f:
            ans = f.read().split()
        self.assertEqual(ans[0], "ok", ans)
        self.assertGreater(int(ans[1]), 0, "no mapping of the region was remapped")

    def stats(self):
        raw = os.getxattr(self.mnt, "user.pmfuse.stats").decode()
        return dict(line.split() for line in raw.splitlines())

    def file_with_data(self, name, nblocks):
        data = os.urandom(nblocks * BLK)
        fd = os.open(self.p(name), os.O_CREAT | os.O_RDWR, 0o644)
        self.fds.append(fd)
        h.pwrite_all(fd, data, 0)
        os.fsync(fd)
        return fd, data

    def region_offset(self, block_bytes):
        """Where in the region file a (unique, random) block of data lives."""
        with open(self.region, "rb") as f:
            img = f.read()
        off = img.find(block_bytes)
        self.assertGreater(off, 0)
        self.assertEqual(off % BLK, 0)
        self.assertEqual(img.find(block_bytes, off + 1), -1)
        return off

    def fresh_pread(self, name, n, off):
        """Read through the daemon, not the kernel's page cache."""
        fd = os.open(self.p(name), os.O_RDONLY | os.O_DIRECT)
        try:
            return os.pread(fd, n, off)
        finally:
            os.close(fd)

    def eio_lines(self):
        return [ln for ln in self.m.log().splitlines() if "request refused with EIO" in ln]


class MediaErrorTest(PoisonCase):

    def test_read_and_write_of_a_bad_page_get_eio_and_the_rest_works(self):
        fd, data = self.file_with_data("victim", 16)
        bad = self.region_offset(data[5 * BLK:6 * BLK])
        self.command("poison", bad, BLK)
        errors_before = int(self.stats()["media_errors"])
        # a read that covers the bad page: the kernel's copy meets it
        with self.assertRaises(OSError) as cm:
            self.fresh_pread("victim", 3 * BLK, 4 * BLK)
        self.assertEqual(cm.exception.errno, 5)
        # an overwrite of it: the daemon's store meets it
        with self.assertRaises(OSError) as cm:
            os.pwrite(fd, b"z" * 100, 5 * BLK + 10)
        self.assertEqual(cm.exception.errno, 5)
        self.assertTrue(self.m.alive(), "the daemon died of the bad page")
        self.assertGreater(int(self.stats()["media_errors"]), errors_before)
        # the good pages of the same file, and other files, still work
        self.assertEqual(self.fresh_pread("victim", 5 * BLK, 0), data[:5 * BLK])
        self.assertEqual(self.fresh_pread("victim", 10 * BLK, 6 * BLK), data[6 * BLK:])
        h.pwrite_all(fd, b"good" * 1024, 8 * BLK)
        os.fsync(fd)
        h.write_file(self.p("other"), b"unaffected", fsync=True)
        self.assertEqual(h.read_file(self.p("other")), b"unaffected")
        # one log line for the file, however many requests failed
        lines = self.eio_lines()
        self.assertEqual(len(lines), 1, self.m.log())
        self.assertIn("inode %d:" % os.fstat(fd).st_ino, lines[0])
        # the page comes back (as a repaired / replaced page would): the
        # failed write stored nothing, metadata is consistent
        self.command("heal", bad, BLK)
        self.assertEqual(self.fresh_pread("victim", BLK, 5 * BLK), data[5 * BLK:6 * BLK])
        expect = data[:8 * BLK] + b"good" * 1024 + data[9 * BLK:]
        self.assertEqual(self.fresh_pread("victim", 16 * BLK, 0), expect)

    def test_an_appending_write_into_a_bad_fresh_block_publishes_nothing(self):
        fd, data = self.file_with_data("grow", 4)
        # the block the allocator gives next: right after the file's last one
        last = self.region_offset(data[3 * BLK:])
        self.command("poison", last + BLK, BLK)
        with self.assertRaises(OSError) as cm:
            os.pwrite(fd, b"n" * BLK, 4 * BLK)
        self.assertEqual(cm.exception.errno, 5)
        self.assertEqual(os.fstat(fd).st_size, 4 * BLK)
        self.assertEqual(self.fresh_pread("grow", 8 * BLK, 0), data)
        free_before = int(self.stats()["blocks_free"])
        self.command("heal", last + BLK, BLK)
        h.pwrite_all(fd, b"n" * BLK, 4 * BLK)
        os.fsync(fd)
        self.assertEqual(int(self.stats()["blocks_free"]), free_before - 1)
        self.assertEqual(self.fresh_pread("grow", 8 * BLK, 0), data + b"n" * BLK)

    def test_punch_and_zero_range_over_a_bad_partial_block_get_eio(self):
        fd, data = self.file_with_data("edges", 4)
        bad = self.region_offset(data[BLK:2 * BLK])
        self.command("poison", bad, BLK)
        for mode in (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE):
            with self.assertRaises(OSError) as cm:
                h.fallocate(fd, mode, BLK + 100, 200)
            self.assertEqual(cm.exception.errno, 5)
        self.command("heal", bad, BLK)
        self.assertEqual(self.fresh_pread("edges", 4 * BLK, 0), data)


class MediaErrorThroughCacheTest(PoisonCase):
    """With the writeback cache a write(2) lands in the kernel's pages; a
    bad page met when they are written back fails fsync with EIO, and the
    daemon lives on."""
    mount_opts = ("writeback_cache",)

    def test_a_bad_page_met_by_write_back_fails_fsync(self):
        self.assertEqual(int(self.stats()["writeback_cache"]), 1)
        fd, data = self.file_with_data("cached", 4)
        bad = self.region_offset(data[BLK:2 * BLK])
        self.command("poison", bad, BLK)
        os.pwrite(fd, b"w" * 100, BLK + 10)        # the page cache takes it
        with self.assertRaises(OSError) as cm:
            os.fsync(fd)
        self.assertEqual(cm.exception.errno, 5)
        self.assertTrue(self.m.alive(), "the daemon died of the bad page")
        self.command("heal", bad, BLK)
        # the failed write-back stored nothing: the old bytes are there
        self.assertEqual(self.fresh_pread("cached", 4 * BLK, 0), data)


class MediaErrorAtFlushTest(PoisonCase):
    """At cache-line granularity fsync flushes lines itself: a bad page
    there makes fsync fail with EIO, as it must, instead of killing us."""
    granularity = "cache_line"

    def test_fsync_of_dirty_data_on_a_bad_page_gets_eio(self):
        self.assertEqual(self.stats()["granularity"], "cache_line")
        fd, data = self.file_with_data("dirty", 4)
        bad = self.region_offset(data[2 * BLK:3 * BLK])
        h.pwrite_all(fd, b"d" * 64, 2 * BLK)        # in place: DIRTY until fsync
        self.assertGreater(int(self.stats()["dirty_pages"]), 0)
        self.command("poison", bad, BLK)
        with self.assertRaises(OSError) as cm:
            os.fsync(fd)
        self.assertEqual(cm.exception.errno, 5)
        self.assertTrue(self.m.alive())
        self.command("heal", bad, BLK)
        os.fsync(fd)
        self.assertEqual(self.fresh_pread("dirty", BLK, 2 * BLK),
                         b"d" * 64 + data[2 * BLK + 64:3 * BLK])


if __name__ == "__main__":
    main()
