#!/usr/bin/env python3
"""pmfuse mount tests: file handles, what an NFS server is built on.

name_to_handle_at gives a handle (inode number + generation); open_by_handle_at
must open the same file while the kernel holds the inode, after the kernel
has evicted it (drop_caches: the daemon answers LOOKUP of "."), after a
clean remount and after a killed daemon; a handle of a file that is gone,
or whose inode slot was reused, must get ESTALE, never the new file.  A
directory opened by handle after eviction is reconnected to the tree
through LOOKUP of "..", which must follow renames."""
import ctypes
import errno
import os
import stat
import sys
import unittest
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (PmfuseTestCase, fs_stats, main, pmfuse_only, read_file,  # noqa: E402
                     wait_until, write_file)

_libc = ctypes.CDLL(None, use_errno=True)
MAX_HANDLE_SZ = 128
AT_FDCWD = -100


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * MAX_HANDLE_SZ)]


def name_to_handle(path):
    """(handle bytes, type) of path."""
    fh = FileHandle(handle_bytes=MAX_HANDLE_SZ)
    mount_id = ctypes.c_int()
    if _libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), ctypes.byref(fh),
                               ctypes.byref(mount_id), 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return bytes(fh.f_handle[:fh.handle_bytes]), fh.handle_type


def open_by_handle(mount_fd, handle, flags=os.O_RDONLY):
    data, htype = handle
    fh = FileHandle(handle_bytes=len(data), handle_type=htype)
    ctypes.memmove(fh.f_handle, data, len(data))
    fd = _libc.open_by_handle_at(mount_fd, ctypes.byref(fh), flags | os.O_CLOEXEC)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd


def drop_caches():
    """Make the kernel forget every unused dentry and inode (the daemon gets
    FORGETs): a handle then has to be decoded by asking the daemon."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


class ExportTest(PmfuseTestCase):

    def setUp(self):
        super().setUp()
        self.mfd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)

    def tearDown(self):
        self._close_mfd()    # before the unmount
        super().tearDown()

    def _close_mfd(self):
        if self.mfd >= 0:
            os.close(self.mfd)
            self.mfd = -1

    def reopen_mount_fd(self):
        self._close_mfd()
        self.mfd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)

    def handle_lookups(self):
        return int(fs_stats(self.mnt).get("req_lookup_handle", 0))

    def read_by_handle(self, handle):
        fd = open_by_handle(self.mfd, handle)
        try:
            st = os.fstat(fd)
            return st, os.pread(fd, 1 << 20, 0)
        finally:
            os.close(fd)

    def assertStale(self, handle, what):
        with self.assertRaises(OSError, msg=what) as cm:
            fd = open_by_handle(self.mfd, handle)
            os.close(fd)
        self.assertEqual(cm.exception.errno, errno.ESTALE, "%s: %s" % (what, cm.exception))

    # ------------------------------------------------------------ files
    def test_handle_opens_the_file_while_cached(self):
        write_file(self.p("f"), b"cached data")
        h = name_to_handle(self.p("f"))
        st, data = self.read_by_handle(h)
        self.assertEqual(data, b"cached data")
        self.assertEqual(st.st_ino, os.stat(self.p("f")).st_ino)

    @pmfuse_only
    def test_handle_opens_the_file_after_the_kernel_evicted_it(self):
        payload = os.urandom(300000)
        write_file(self.p("f"), payload)
        ino = os.stat(self.p("f")).st_ino
        h = name_to_handle(self.p("f"))
        before = self.handle_lookups()
        drop_caches()
        st, data = self.read_by_handle(h)
        self.assertEqual(st.st_ino, ino)
        self.assertEqual(data, payload[:1 << 20])
        self.assertGreater(self.handle_lookups(), before,
                           "the handle was decoded without asking the daemon (LOOKUP of \".\")")
        # written through the handle, read back by name
        fd = open_by_handle(self.mfd, h, os.O_WRONLY)
        try:
            os.pwrite(fd, b"through the handle", 10)
            os.fsync(fd)
        finally:
            os.close(fd)
        got = read_file(self.p("f"))
        self.assertEqual(got[10:28], b"through the handle")
        self.assertEqual(len(got), len(payload))

    def test_handle_survives_a_remount(self):
        write_file(self.p("f"), b"before the remount")
        os.mkdir(self.p("d"))
        write_file(self.p("d", "g"), b"nested")
        hf, hg = name_to_handle(self.p("f")), name_to_handle(self.p("d", "g"))
        self._close_mfd()
        self.remount()
        self.reopen_mount_fd()
        self.assertEqual(self.read_by_handle(hf)[1], b"before the remount")
        self.assertEqual(self.read_by_handle(hg)[1], b"nested")

    @pmfuse_only
    def test_handle_survives_a_killed_daemon(self):
        write_file(self.p("f"), b"synced before the kill", fsync=True)
        h = name_to_handle(self.p("f"))
        self._close_mfd()
        self.crash()
        self.assertFsckClean()
        self.m = self.mount()
        self.reopen_mount_fd()
        self.assertEqual(self.read_by_handle(h)[1], b"synced before the kill")

    def test_handle_of_an_unlinked_file_is_stale(self):
        write_file(self.p("f"), b"doomed")
        h = name_to_handle(self.p("f"))
        os.unlink(self.p("f"))
        drop_caches()
        self.assertStale(h, "handle of an unlinked file")

    @pmfuse_only
    def test_handle_of_an_unlinked_file_held_open_still_reads_until_closed(self):
        free_before = fs_stats(self.mnt)["inodes_free"]
        write_file(self.p("f"), b"orphan data")
        h = name_to_handle(self.p("f"))
        fd = os.open(self.p("f"), os.O_RDONLY)
        os.unlink(self.p("f"))
        drop_caches()
        # the kernel still holds the inode for fd: the handle finds it
        self.assertEqual(self.read_by_handle(h)[1], b"orphan data")
        os.close(fd)
        # The kernel answers close() before the daemon sees RELEASE, and holds
        # the inode until RELEASE is answered: a handle decoded in that window
        # still finds it (as on any FUSE filesystem).  Once it let go (FORGET)
        # the daemon reclaims the orphan, and from then on the handle is stale.
        def reclaimed():
            drop_caches()
            return fs_stats(self.mnt)["inodes_free"] == free_before
        self.assertTrue(wait_until(reclaimed, 10), "the orphan was never reclaimed")
        self.assertStale(h, "handle of an orphan once closed")

    @pmfuse_only
    def test_handle_of_a_reused_inode_slot_is_stale(self):
        write_file(self.p("old"), b"the old file")
        old = os.stat(self.p("old"))
        h = name_to_handle(self.p("old"))
        os.unlink(self.p("old"))
        drop_caches()
        # create files until one takes the freed slot (the same inode number)
        reused = None
        for i in range(64):
            name = self.p("new%d" % i)
            write_file(name, b"the new file %d" % i)
            if os.stat(name).st_ino == old.st_ino:
                reused = name
                break
        self.assertIsNotNone(reused, "inode %d never reused in 64 creates" % old.st_ino)
        self.assertNotEqual(name_to_handle(reused)[0], h[0],
                            "same inode number, same handle: the generation did not change")
        # the new file is in the kernel's inode cache: its generation differs
        self.assertStale(h, "old handle, new file cached")
        drop_caches()
        self.assertStale(h, "old handle, new file evicted")
        # and generations are persistent: still stale after a remount,
        # while the new file's own handle opens it
        hn = name_to_handle(reused)
        self._close_mfd()
        self.remount()
        self.reopen_mount_fd()
        self.assertStale(h, "old handle after a remount")
        self.assertEqual(self.read_by_handle(hn)[1], read_file(reused))

    def test_handle_of_a_file_whose_inode_chunk_was_freed_is_stale(self):
        # four chunks' worth of files; deleted, their chunks go back to the
        # free space (format 6), and files made next take the same numbers
        # in chunks made anew: an old handle must never open one of them
        names = [self.p("c%03d" % i) for i in range(4 * 64)]
        for n in names:
            write_file(n, b"old")
        inos = {n: os.stat(n).st_ino for n in names}
        top = max(inos.values()) // 64
        kept = [n for n in names if inos[n] // 64 == top - 1][:8]
        handles = [(name_to_handle(n), inos[n]) for n in kept]
        freed0 = fs_stats(self.mnt)["inode_chunks_freed"]
        for n in names:
            os.unlink(n)
        drop_caches()
        self.assertTrue(wait_until(
            lambda: fs_stats(self.mnt)["inode_chunks_freed"] >= freed0 + 2, 10),
            fs_stats(self.mnt))
        for h, ino in handles:
            self.assertStale(h, "inode %d, its chunk freed" % ino)
        new = [self.p("n%03d" % i) for i in range(4 * 64)]
        for n in new:
            write_file(n, b"new")
        made = {os.stat(n).st_ino for n in new}
        for h, ino in handles:
            self.assertIn(ino, made)
            self.assertStale(h, "inode %d, its chunk made again, cached" % ino)
        drop_caches()
        for h, ino in handles:
            self.assertStale(h, "inode %d, its chunk made again, evicted" % ino)
        self._close_mfd()
        self.remount()
        self.reopen_mount_fd()
        for h, ino in handles:
            self.assertStale(h, "inode %d after a remount" % ino)

    # ------------------------------------------------------------ directories
    def test_directory_handle_lists_the_directory_after_eviction(self):
        os.makedirs(self.p("a", "b"))
        for n in ("x", "y", "z"):
            write_file(self.p("a", "b", n), n.encode())
        h = name_to_handle(self.p("a", "b"))
        drop_caches()
        fd = open_by_handle(self.mfd, h, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.assertEqual(sorted(os.listdir(fd)), ["x", "y", "z"])
            self.assertTrue(stat.S_ISDIR(os.fstat(fd).st_mode))
            self.assertEqual(os.readlink("/proc/self/fd/%d" % fd), self.p("a", "b"))
            g = os.open("y", os.O_RDONLY, dir_fd=fd)
            self.assertEqual(os.read(g, 10), b"y")
            os.close(g)
        finally:
            os.close(fd)

    @pmfuse_only
    def test_dotdot_of_a_directory_follows_a_rename_of_its_parent(self):
        os.makedirs(self.p("a", "b", "c"))
        os.mkdir(self.p("x"))
        write_file(self.p("a", "b", "c", "f"), b"deep")
        h = name_to_handle(self.p("a", "b", "c"))
        os.rename(self.p("a", "b"), self.p("x", "b"))
        drop_caches()
        before = self.handle_lookups()
        fd = open_by_handle(self.mfd, h, os.O_RDONLY | os.O_DIRECTORY)
        try:
            # the kernel reconnected c to the tree by asking ".." of c, then of b
            self.assertEqual(os.readlink("/proc/self/fd/%d" % fd), self.p("x", "b", "c"))
            self.assertEqual(os.listdir(fd), ["f"])
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            self.assertEqual(os.fstat(up).st_ino, os.stat(self.p("x", "b")).st_ino)
            os.close(up)
        finally:
            os.close(fd)
        self.assertGreaterEqual(self.handle_lookups() - before, 2)

    def test_handle_of_a_removed_directory_is_stale(self):
        os.mkdir(self.p("d"))
        h = name_to_handle(self.p("d"))
        os.rmdir(self.p("d"))
        drop_caches()
        self.assertStale(h, "handle of a removed directory")

    def test_root_handle(self):
        h = name_to_handle(self.mnt)
        drop_caches()
        fd = open_by_handle(self.mfd, h, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self.assertEqual(os.fstat(fd).st_ino, os.stat(self.mnt).st_ino)
        finally:
            os.close(fd)

    @pmfuse_only
    def test_many_handles_after_eviction_and_concurrent_unlinks(self):
        # handles decoded while other files are unlinked: each either opens
        # its own file or is stale, never another file
        os.mkdir(self.p("d"))
        handles = {}
        for i in range(200):
            name = self.p("d", "f%03d" % i)
            write_file(name, b"file %03d" % i)
            handles[i] = name_to_handle(name)
        for i in range(0, 200, 2):
            os.unlink(self.p("d", "f%03d" % i))
        drop_caches()
        for i, h in handles.items():
            if i % 2 == 0:
                self.assertStale(h, "f%03d unlinked" % i)
            else:
                self.assertEqual(self.read_by_handle(h)[1], b"file %03d" % i)


if __name__ == "__main__":
    main()
