#!/usr/bin/env python3
"""pmfuse mount tests: a directory of 100,000 entries (slow)."""

import errno
import os
import random
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PmfuseTestCase, main, wait_until  # noqa: E402

N = 100_000


class BigDirTest(PmfuseTestCase):
    # 2 GiB gives 128 Ki inodes at the default 16 KiB per inode
    region_size = "2G"
    test_timeout = 600

    def test_a_directory_of_100000_files_lists_stats_and_empties(self):
        d = self.p("big")
        st0 = os.statvfs(self.mnt)
        os.mkdir(d)
        self.assertGreaterEqual(st0.f_ffree, N + 10, "region too small for the test")
        names = ["file-%06d" % i for i in range(N)]
        t0 = time.monotonic()
        for n in names:
            os.close(os.open(os.path.join(d, n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        t_create = time.monotonic() - t0
        st1 = os.statvfs(self.mnt)
        self.assertEqual(st0.f_ffree - st1.f_ffree, N + 1, "each file takes exactly one inode")

        def check_listing(context):
            t = time.monotonic()
            listed = os.listdir(d)
            self.assertEqual(len(listed), N, context)
            self.assertEqual(len(set(listed)), N, "%s: duplicates in listing" % context)
            self.assertEqual(set(listed), set(names), context)
            return time.monotonic() - t

        t_list = check_listing("after create")
        self.assertEqual(os.stat(d).st_nlink, 2)
        rng = random.Random(100)
        for n in rng.sample(names, 200):
            st = os.stat(os.path.join(d, n))
            self.assertTrue(stat.S_ISREG(st.st_mode), n)
            self.assertEqual(st.st_size, 0)
        for n in ("file-100000", "file-0", "nope"):
            with self.assertRaises(OSError) as cm:
                os.stat(os.path.join(d, n))
            self.assertEqual(cm.exception.errno, errno.ENOENT)
        with self.assertRaises(OSError) as cm:
            os.open(os.path.join(d, names[54321]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.assertEqual(cm.exception.errno, errno.EEXIST)

        self.remount()
        check_listing("after remount")
        with os.scandir(d) as it:
            inos = {e.name: e.inode() for e in it}
        for n in rng.sample(names, 100):
            self.assertEqual(os.stat(os.path.join(d, n)).st_ino, inos[n], n)

        t0 = time.monotonic()
        for n in names:
            os.unlink(os.path.join(d, n))
        t_unlink = time.monotonic() - t0
        self.assertEqual(os.listdir(d), [])
        os.rmdir(d)
        # inodes may be freed when the kernel forgets them, a little later
        wait_until(lambda: os.statvfs(self.mnt).f_ffree >= st0.f_ffree, 10)
        st2 = os.statvfs(self.mnt)
        self.assertEqual(st2.f_ffree, st0.f_ffree, "inodes not returned after unlinking all")
        # all space back but the inode chunks (16 KiB per 64 inodes), which
        # stay allocated for the next files, as an inode table does
        chunks = (N + 1 + 63) // 64 + 1
        self.assertLessEqual(st0.f_bfree - st2.f_bfree, chunks * 5)
        self.remount()
        st3 = os.statvfs(self.mnt)
        self.assertEqual((st3.f_ffree, st3.f_bfree), (st0.f_ffree, st2.f_bfree),
                         "free inodes/blocks differ after remount")
        sys.stderr.write("[create %.1fs, list %.1fs, unlink %.1fs] " % (t_create, t_list, t_unlink))


if __name__ == "__main__":
    main()
