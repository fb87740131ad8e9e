#!/usr/bin/env python3
"""pmfuse mount tests: attributes -- modes, owners, timestamps,
permission checks as unprivileged users, sticky and setgid directories,
extended attributes."""

import ctypes
import errno
import fcntl
import shutil
import subprocess
import mmap
import os
import struct
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (UTIME_NOW, UTIME_OMIT, XATTR_CREATE, XATTR_REPLACE,  # noqa: E402
                     PmfuseTestCase, as_user, fallocate, fs_stats, getxattr_raw, main,
                     pmfuse_only, read_file, requests_during, utimensat, write_file)

SEC = 1_000_000_000
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE = 0x01, 0x02, 0x10
CAP_FSETID = 4


def append_byte(path):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"y")
    finally:
        os.close(fd)


def drop_effective_capability(cap):
    """Clear one capability from this process's effective set (capset(2))."""
    libc = ctypes.CDLL(None, use_errno=True)
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)        # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()                     # {effective, permitted, inheritable} x 2
    if libc.capget(hdr, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[0 + 3 * (cap // 32)] &= ~(1 << (cap % 32))
    if libc.capset(hdr, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
OLD_NS = 1_000_000_000 * SEC + 123_456_789      # 2001-09-09


def touch(path, mode=0o644):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def tick():
    # timestamps are nanoseconds, but make "later" unambiguous
    time.sleep(0.02)


class AttrTest(PmfuseTestCase):
    # unprivileged children need to reach the mount at all
    mount_opts = ("allow_other",)

    def assertErrno(self, errs, fn, *args, **kw):
        if isinstance(errs, int):
            errs = (errs,)
        with self.assertRaises(OSError) as cm:
            fn(*args, **kw)
        self.assertIn(cm.exception.errno, errs,
                      "%s%r: expected %s, got %s" % (getattr(fn, "__name__", fn), args,
                                                     "/".join(errno.errorcode[e] for e in errs),
                                                     cm.exception))

    # ------------------------------------------------------------ mode/owner

    def test_chmod_sets_permission_and_special_bits(self):
        touch(self.p("f"))
        os.mkdir(self.p("d"))
        for m in (0o600, 0o000, 0o777, 0o4755, 0o2755, 0o6711):
            os.chmod(self.p("f"), m)
            self.assertEqual(mode_of(self.p("f")), m)
        os.chmod(self.p("d"), 0o1777)
        self.assertEqual(mode_of(self.p("d")), 0o1777)
        self.assertTrue(stat.S_ISREG(os.stat(self.p("f")).st_mode), "chmod must keep the file type")
        self.remount()
        self.assertEqual(mode_of(self.p("f")), 0o6711)
        self.assertEqual(mode_of(self.p("d")), 0o1777)
        self.assertTrue(stat.S_ISDIR(os.stat(self.p("d")).st_mode))

    def test_chown_as_root_changes_owner_and_group(self):
        touch(self.p("f"))
        st = os.stat(self.p("f"))
        self.assertEqual((st.st_uid, st.st_gid), (0, 0), "files are created with the caller's ids")
        os.chown(self.p("f"), 1000, 2000)
        st = os.stat(self.p("f"))
        self.assertEqual((st.st_uid, st.st_gid), (1000, 2000))
        os.chown(self.p("f"), -1, 3000)
        st = os.stat(self.p("f"))
        self.assertEqual((st.st_uid, st.st_gid), (1000, 3000))
        os.chown(self.p("f"), 4000, -1)
        self.assertEqual((os.stat(self.p("f")).st_uid, os.stat(self.p("f")).st_gid), (4000, 3000))
        os.symlink("f", self.p("l"))
        os.lchown(self.p("l"), 5000, 5000)
        self.assertEqual(os.lstat(self.p("l")).st_uid, 5000)
        self.assertEqual(os.stat(self.p("f")).st_uid, 4000, "lchown must not follow the link")
        self.remount()
        st = os.stat(self.p("f"))
        self.assertEqual((st.st_uid, st.st_gid), (4000, 3000))
        self.assertEqual(os.lstat(self.p("l")).st_gid, 5000)

    def test_chown_clears_setuid_and_setgid_of_a_file_but_not_of_a_directory(self):
        touch(self.p("f"))
        os.chmod(self.p("f"), 0o6755)
        os.chown(self.p("f"), 1000, 1000)
        self.assertEqual(mode_of(self.p("f")), 0o0755)
        os.mkdir(self.p("d"))
        os.chmod(self.p("d"), 0o2775)
        os.chown(self.p("d"), 1000, 1000)
        self.assertEqual(mode_of(self.p("d")), 0o2775)

    def test_write_by_a_non_root_user_clears_setuid_and_setgid(self):
        p = self.p("suid")
        write_file(p, b"#!/bin/true\n")
        os.chmod(p, 0o6777)

        def child():
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, b"# appended\n")
            finally:
                os.close(fd)
        as_user(child)
        self.assertEqual(mode_of(p), 0o0777)
        self.assertEqual(read_file(p), b"#!/bin/true\n# appended\n")

    def direct_write(self, p, data):
        """pwrite at 0 through an O_DIRECT descriptor (a page-aligned buffer)."""
        fd = os.open(p, os.O_WRONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            buf[:len(data)] = data
            os.pwritev(fd, [memoryview(buf)[:4096]], 0)
        finally:
            buf.close()
            os.close(fd)

    def test_o_direct_write_by_a_non_root_user_clears_setuid_and_setgid(self):
        # the kernel's direct path leaves this to the filesystem
        p = self.p("suid-direct")
        write_file(p, b"x" * 8192)
        os.chmod(p, 0o6777)
        as_user(self.direct_write, p, b"y" * 4096)
        self.assertEqual(mode_of(p), 0o0777)
        self.assertEqual(read_file(p), b"y" * 4096 + b"x" * 4096)
        os.chmod(p, 0o2767)            # setgid without group execute, writer outside the group
        as_user(self.direct_write, p, b"z" * 4096)
        self.assertEqual(mode_of(p), 0o0767)

    def test_o_direct_write_by_root_keeps_setuid_and_setgid(self):
        p = self.p("suid-root-direct")
        write_file(p, b"x" * 4096)
        os.chmod(p, 0o6755)
        self.direct_write(p, b"y" * 4096)
        self.assertEqual(mode_of(p), 0o6755)
        self.assertEqual(read_file(p), b"y" * 4096)

    def test_any_write_drops_file_capabilities(self):
        # as the page-cache path does (the kernel's cap_inode_killpriv), for
        # root too; on the O_DIRECT path the daemon does it
        cap = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)   # v2, effective, net_bind
        for name, write in (("cap-cached", lambda p: write_file(p, b"y" * 4096)),
                            ("cap-direct", lambda p: self.direct_write(p, b"y" * 4096))):
            p = self.p(name)
            write_file(p, b"x" * 4096)
            os.setxattr(p, "user.keep", b"1")
            os.setxattr(p, "security.capability", cap)
            self.assertEqual(os.getxattr(p, "security.capability"), cap)
            write(p)
            self.assertErrno(errno.ENODATA, os.getxattr, p, "security.capability")
            self.assertEqual(os.getxattr(p, "user.keep"), b"1", name)
            self.assertEqual(read_file(p), b"y" * 4096)
        self.remount()
        self.assertErrno(errno.ENODATA, os.getxattr, self.p("cap-direct"), "security.capability")

    # The kernel's current rules (setattr_should_drop_suidgid): setuid goes on
    # any change of contents by a caller without CAP_FSETID; setgid goes with
    # group execute, or when the caller is outside the file's group.

    def setid_file(self, name, mode, gid=0, size=8192):
        p = self.p(name)
        write_file(p, b"x" * size)
        os.chown(p, 0, gid)
        os.chmod(p, mode)
        return p

    def test_setgid_without_group_execute_goes_on_a_write_by_a_non_member(self):
        append = append_byte
        p = self.setid_file("sgid-other", 0o2666)
        as_user(append, p)
        self.assertEqual(mode_of(p), 0o0666)
        p = self.setid_file("sgid-member", 0o2666, gid=1000)
        as_user(append, p)                  # fsgid is the file's group
        self.assertEqual(mode_of(p), 0o2666)
        p = self.setid_file("sgid-supplementary", 0o2666, gid=4242)
        as_user(append, p, groups=(4242,))  # a supplementary group is membership too
        self.assertEqual(mode_of(p), 0o2666)
        p = self.setid_file("sgid-xgrp-member", 0o2676, gid=1000)
        as_user(append, p)                  # with group execute it goes for members too
        self.assertEqual(mode_of(p), 0o0676)
        self.remount()
        self.assertEqual(mode_of(self.p("sgid-other")), 0o0666)
        self.assertEqual(mode_of(self.p("sgid-supplementary")), 0o2666)
        self.assertEqual(read_file(self.p("sgid-other")), b"x" * 8192 + b"y")

    def test_truncate_by_another_user_drops_setuid_and_setgid(self):
        def ftruncate(p, n):
            fd = os.open(p, os.O_WRONLY)
            try:
                os.ftruncate(fd, n)
            finally:
                os.close(fd)

        def open_trunc(p):
            os.close(os.open(p, os.O_WRONLY | os.O_TRUNC))
        for name, fn in (("truncate", lambda p: os.truncate(p, 100)),
                         ("ftruncate", lambda p: ftruncate(p, 100)),
                         ("extend", lambda p: os.truncate(p, 1 << 20)),
                         ("o-trunc", open_trunc)):
            for mode, after in ((0o4666, 0o0666), (0o2666, 0o0666), (0o6676, 0o0676)):
                p = self.setid_file("%s-%o" % (name, mode), mode)
                as_user(fn, p)
                self.assertEqual(mode_of(p), after, "%s of a %o file" % (name, mode))
        p = self.setid_file("root-truncate", 0o6777)
        os.truncate(p, 10)
        self.assertEqual(mode_of(p), 0o6777, "root holds CAP_FSETID")
        self.assertEqual(os.stat(p).st_size, 10)

    def test_fallocate_and_copy_range_by_another_user_drop_setuid_and_setgid(self):
        def falloc(p, mode, off, n):
            fd = os.open(p, os.O_WRONLY)
            try:
                fallocate(fd, mode, off, n)
            finally:
                os.close(fd)
        for name, mode in (("alloc", 0), ("keep-size", FALLOC_FL_KEEP_SIZE),
                           ("punch", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE),
                           ("zero", FALLOC_FL_ZERO_RANGE)):
            p = self.setid_file("falloc-" + name, 0o6666)
            as_user(falloc, p, mode, 0, 4096)
            self.assertEqual(mode_of(p), 0o0666, name)
        src = self.p("src")
        write_file(src, b"s" * 4096)
        os.chmod(src, 0o644)
        dst = self.setid_file("copy-dst", 0o6666)

        def copy(a, b):
            fi, fo = os.open(a, os.O_RDONLY), os.open(b, os.O_WRONLY)
            try:
                return os.copy_file_range(fi, fo, 4096, 0, 0)
            finally:
                os.close(fi)
                os.close(fo)
        self.assertEqual(as_user(copy, src, dst), 4096)
        self.assertEqual(mode_of(dst), 0o0666)
        self.assertEqual(read_file(dst)[:4096], b"s" * 4096)

    def test_pwritev2_and_o_direct_writes_follow_the_same_rules(self):
        def pwritev2(p):
            fd = os.open(p, os.O_WRONLY)
            try:
                os.pwritev(fd, [b"v" * 100], 0, os.RWF_DSYNC)
            finally:
                os.close(fd)
        p = self.setid_file("pwritev2", 0o2666)
        as_user(pwritev2, p)
        self.assertEqual(mode_of(p), 0o0666)
        self.assertEqual(read_file(p)[:101], b"v" * 100 + b"x")
        p = self.setid_file("direct-member", 0o2666, gid=1000)
        as_user(self.direct_write, p, b"d" * 4096)
        self.assertEqual(mode_of(p), 0o2666)

    def test_root_without_cap_fsetid_drops_setuid_on_write(self):
        def drop_fsetid_and_append(p):
            drop_effective_capability(CAP_FSETID)
            append_byte(p)
        p = self.setid_file("root-nocap", 0o6766)
        as_user(drop_fsetid_and_append, p, uid=0, gid=0)
        # setgid without group execute stays: root is in the file's group
        self.assertEqual(mode_of(p), 0o2766)
        p = self.setid_file("root-nocap-other-group", 0o6766, gid=4242)
        as_user(drop_fsetid_and_append, p, uid=0, gid=0)
        self.assertEqual(mode_of(p), 0o0766)

    @pmfuse_only
    def test_buffered_writes_do_not_ask_for_security_capability(self):
        # HANDLE_KILLPRIV_V2 leaves set-id and capability dropping to the
        # daemon, and lets the kernel mark inodes S_NOSEC: no GETXATTR
        # round trip before every buffered write
        p = self.p("plain")
        write_file(p, b"x" * 65536)

        def writes():
            fd = os.open(p, os.O_WRONLY)
            try:
                for i in range(200):
                    os.pwrite(fd, b"y" * 4096, (i % 16) * 4096)
            finally:
                os.close(fd)
        # write-through (the default): each write is a WRITE request
        self.assertEqual(fs_stats(self.mnt)["writeback_cache"], 0)
        self.assertGreaterEqual(requests_during(self.mnt, "write", writes), 200)
        self.assertLessEqual(requests_during(self.mnt, "getxattr", writes), 2,
                             "a GETXATTR per buffered write")
        # -o writeback_cache: the page cache gathers them, still no GETXATTR
        self.unmount()
        self.m = self.mount(opts=("writeback_cache",))
        self.assertEqual(fs_stats(self.mnt)["writeback_cache"], 1)
        self.assertLessEqual(requests_during(self.mnt, "getxattr", writes), 2,
                             "a GETXATTR per buffered write")

    def test_write_by_root_keeps_setuid_and_setgid(self):
        p = self.p("suid-root")
        write_file(p, b"x")
        os.chmod(p, 0o6755)
        with open(p, "ab") as f:
            f.write(b"y")
        self.assertEqual(mode_of(p), 0o6755)

    def test_chmod_and_chown_by_a_non_owner_fail_with_eperm(self):
        touch(self.p("f"), 0o666)
        self.assertErrno(errno.EPERM, as_user, os.chmod, self.p("f"), 0o777)
        self.assertErrno(errno.EPERM, as_user, os.chown, self.p("f"), 1000, 1000)
        self.assertEqual(mode_of(self.p("f")), 0o644 & 0o666)
        self.assertEqual(os.stat(self.p("f")).st_uid, 0)

    def test_owner_can_chmod_its_file(self):
        touch(self.p("mine"))
        os.chown(self.p("mine"), 1000, 1000)
        as_user(os.chmod, self.p("mine"), 0o600)
        self.assertEqual(mode_of(self.p("mine")), 0o600)

    # ------------------------------------------------------------ times

    def test_utime_with_nanoseconds_is_exact_and_persists(self):
        p = self.p("t")
        touch(p)
        at, mt = OLD_NS, 1_500_000_000 * SEC + 987_654_321
        os.utime(p, ns=(at, mt))
        st = os.stat(p)
        self.assertEqual(st.st_atime_ns, at)
        self.assertEqual(st.st_mtime_ns, mt)
        far = 10_413_792_000 * SEC + 1          # year 2300
        os.mkdir(self.p("d"))
        os.utime(self.p("d"), ns=(far, far))
        self.remount()
        st = os.stat(p)
        self.assertEqual((st.st_atime_ns, st.st_mtime_ns), (at, mt))
        st = os.stat(self.p("d"))
        self.assertEqual((st.st_atime_ns, st.st_mtime_ns), (far, far))

    def test_utimensat_omit_leaves_a_time_alone_and_now_sets_the_current_time(self):
        p = self.p("t")
        touch(p)
        os.utime(p, ns=(OLD_NS, OLD_NS))
        # mtime only
        utimensat(p, UTIME_OMIT, (1_200_000_000, 5))
        st = os.stat(p)
        self.assertEqual(st.st_atime_ns, OLD_NS, "UTIME_OMIT must leave atime unchanged")
        self.assertEqual(st.st_mtime_ns, 1_200_000_000 * SEC + 5)
        # atime = now, mtime omitted
        t0 = time.time_ns()
        utimensat(p, UTIME_NOW, UTIME_OMIT)
        t1 = time.time_ns()
        st = os.stat(p)
        self.assertEqual(st.st_mtime_ns, 1_200_000_000 * SEC + 5, "UTIME_OMIT must leave mtime unchanged")
        self.assertGreaterEqual(st.st_atime_ns, t0 - 10 * 1_000_000)
        self.assertLessEqual(st.st_atime_ns, t1 + SEC)
        # both now (utime(NULL))
        os.utime(p, ns=(OLD_NS, OLD_NS))
        t0 = time.time_ns()
        os.utime(p)
        st = os.stat(p)
        self.assertGreaterEqual(st.st_mtime_ns, t0 - 10 * 1_000_000)
        self.assertGreaterEqual(st.st_atime_ns, t0 - 10 * 1_000_000)

    def test_setting_times_updates_ctime(self):
        p = self.p("t")
        touch(p)
        c0 = os.stat(p).st_ctime_ns
        tick()
        os.utime(p, ns=(OLD_NS, OLD_NS))
        self.assertGreater(os.stat(p).st_ctime_ns, c0)

    def test_write_updates_mtime_and_ctime(self):
        p = self.p("w")
        write_file(p, b"before")
        os.utime(p, ns=(OLD_NS, OLD_NS))
        c0 = os.stat(p).st_ctime_ns
        tick()
        t0 = time.time_ns()
        fd = os.open(p, os.O_WRONLY)
        try:
            os.pwrite(fd, b"after", 2)
            os.fsync(fd)
        finally:
            os.close(fd)
        st = os.stat(p)
        self.assertGreaterEqual(st.st_mtime_ns, t0 - 10 * 1_000_000, "write must update mtime")
        self.assertGreater(st.st_ctime_ns, c0, "write must update ctime")
        self.assertEqual(st.st_atime_ns, OLD_NS, "write must not touch atime")

    def test_truncate_updates_mtime_and_ctime(self):
        p = self.p("tr")
        write_file(p, b"12345678")
        os.utime(p, ns=(OLD_NS, OLD_NS))
        c0 = os.stat(p).st_ctime_ns
        tick()
        os.truncate(p, 3)
        st = os.stat(p)
        self.assertGreater(st.st_mtime_ns, OLD_NS)
        self.assertGreater(st.st_ctime_ns, c0)

    def test_read_does_not_change_mtime_or_ctime(self):
        p = self.p("r")
        write_file(p, b"read me")
        os.utime(p, ns=(OLD_NS, OLD_NS))
        st0 = os.stat(p)
        tick()
        self.assertEqual(read_file(p), b"read me")
        st = os.stat(p)
        self.assertEqual(st.st_mtime_ns, OLD_NS)
        self.assertEqual(st.st_ctime_ns, st0.st_ctime_ns)
        self.assertGreaterEqual(st.st_atime_ns, OLD_NS, "atime may only move forward")

    def test_chmod_updates_ctime_but_not_mtime(self):
        p = self.p("c")
        touch(p)
        os.utime(p, ns=(OLD_NS, OLD_NS))
        c0 = os.stat(p).st_ctime_ns
        tick()
        os.chmod(p, 0o600)
        st = os.stat(p)
        self.assertGreater(st.st_ctime_ns, c0)
        self.assertEqual(st.st_mtime_ns, OLD_NS)
        self.assertEqual(st.st_atime_ns, OLD_NS)

    def test_link_updates_ctime_of_the_inode(self):
        p = self.p("l")
        touch(p)
        c0 = os.stat(p).st_ctime_ns
        tick()
        os.link(p, self.p("l2"))
        self.assertGreater(os.stat(p).st_ctime_ns, c0)

    def test_directory_changes_update_the_parent_mtime_and_ctime(self):
        d = self.p("parent")
        os.mkdir(d)

        def reset():
            os.utime(d, ns=(OLD_NS, OLD_NS))
            c = os.stat(d).st_ctime_ns
            tick()
            return c

        def changed(what, c0):
            st = os.stat(d)
            self.assertGreater(st.st_mtime_ns, OLD_NS, "%s must update parent mtime" % what)
            self.assertGreater(st.st_ctime_ns, c0, "%s must update parent ctime" % what)

        c = reset()
        touch(os.path.join(d, "f"))
        changed("create", c)
        c = reset()
        os.mkdir(os.path.join(d, "sub"))
        changed("mkdir", c)
        c = reset()
        os.symlink("x", os.path.join(d, "sym"))
        changed("symlink", c)
        c = reset()
        os.link(os.path.join(d, "f"), os.path.join(d, "hl"))
        changed("link", c)
        c = reset()
        os.rename(os.path.join(d, "hl"), os.path.join(d, "hl2"))
        changed("rename", c)
        c = reset()
        os.unlink(os.path.join(d, "hl2"))
        changed("unlink", c)
        c = reset()
        os.rmdir(os.path.join(d, "sub"))
        changed("rmdir", c)
        # rename out of the directory changes both parents
        os.mkdir(self.p("other"))
        os.utime(self.p("other"), ns=(OLD_NS, OLD_NS))
        c = reset()
        os.rename(os.path.join(d, "f"), self.p("other", "f"))
        changed("rename out", c)
        self.assertGreater(os.stat(self.p("other")).st_mtime_ns, OLD_NS)

    def test_new_file_times_are_now(self):
        t0 = time.time_ns()
        touch(self.p("new"))
        t1 = time.time_ns()
        st = os.stat(self.p("new"))
        for v in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns):
            self.assertGreaterEqual(v, t0 - 10 * 1_000_000)
            self.assertLessEqual(v, t1 + SEC)

    # ------------------------------------------------------------ permissions

    def test_non_owner_cannot_read_or_write_a_0600_root_file(self):
        p = self.p("secret")
        write_file(p, b"top secret", mode=0o600)
        os.chmod(p, 0o600)
        self.assertErrno(errno.EACCES, as_user, read_file, p)
        self.assertErrno(errno.EACCES, as_user, os.open, p, os.O_WRONLY)
        self.assertErrno(errno.EACCES, as_user, os.truncate, p, 0)
        self.assertEqual(read_file(p), b"top secret")
        # but anyone may stat it
        self.assertEqual(as_user(lambda: os.stat(p).st_size), 10)

    def test_non_root_cannot_create_or_remove_in_a_0755_root_directory(self):
        d = self.p("rootdir")
        os.mkdir(d, 0o755)
        touch(os.path.join(d, "existing"))
        os.chmod(os.path.join(d, "existing"), 0o666)
        self.assertErrno(errno.EACCES, as_user, os.open, os.path.join(d, "new"),
                         os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertErrno(errno.EACCES, as_user, os.mkdir, os.path.join(d, "sub"))
        self.assertErrno(errno.EACCES, as_user, os.unlink, os.path.join(d, "existing"))
        self.assertErrno(errno.EACCES, as_user, os.rename, os.path.join(d, "existing"),
                         os.path.join(d, "moved"))
        self.assertErrno(errno.EACCES, as_user, os.symlink, "x", os.path.join(d, "sym"))
        self.assertEqual(os.listdir(d), ["existing"])
        # the 0666 file inside is still writable by the user
        as_user(write_file, os.path.join(d, "existing"), b"by user")
        self.assertEqual(read_file(os.path.join(d, "existing")), b"by user")

    def test_non_root_creates_files_owned_by_itself(self):
        d = self.p("open")
        os.mkdir(d)
        os.chmod(d, 0o777)
        as_user(touch, os.path.join(d, "f"), uid=1000, gid=1500)
        as_user(os.mkdir, os.path.join(d, "sub"), uid=1000, gid=1500)
        for n in ("f", "sub"):
            st = os.stat(os.path.join(d, n))
            self.assertEqual((st.st_uid, st.st_gid), (1000, 1500), n)

    def test_search_permission_is_needed_to_reach_files_in_a_directory(self):
        d = self.p("closed")
        os.mkdir(d, 0o700)
        touch(os.path.join(d, "f"), 0o644)
        self.assertErrno(errno.EACCES, as_user, os.stat, os.path.join(d, "f"))
        self.assertErrno(errno.EACCES, as_user, os.listdir, d)
        os.chmod(d, 0o711)        # search but not read
        as_user(os.stat, os.path.join(d, "f"))
        self.assertErrno(errno.EACCES, as_user, os.listdir, d)

    def test_owner_and_group_permission_classes_are_honoured(self):
        p = self.p("classes")
        write_file(p, b"data")
        os.chown(p, 1000, 1234)
        os.chmod(p, 0o460)           # owner r, group rw, other none
        self.assertEqual(as_user(read_file, p, uid=1000, gid=1000), b"data")
        self.assertErrno(errno.EACCES, as_user, os.open, p, os.O_WRONLY, uid=1000, gid=1000)
        # the group may write (owner class takes precedence for the owner only)
        as_user(write_file, p, b"group", uid=1001, gid=1001, groups=(1234,))
        self.assertEqual(read_file(p), b"group")
        self.assertErrno(errno.EACCES, as_user, read_file, p, uid=1001, gid=1001)

    def test_access_reports_permissions_for_a_non_root_user(self):
        p = self.p("acc")
        touch(p, 0o640)
        os.chmod(p, 0o640)
        os.chown(p, 1000, 1000)
        self.assertEqual(as_user(lambda: (os.access(p, os.R_OK), os.access(p, os.W_OK),
                                          os.access(p, os.X_OK))), (True, True, False))
        self.assertEqual(as_user(lambda: (os.access(p, os.R_OK), os.access(p, os.W_OK)),
                                 uid=1001, gid=1001), (False, False))
        self.assertEqual(as_user(lambda: os.access(p, os.R_OK), uid=1001, gid=1000), True)
        self.assertTrue(as_user(lambda: os.access(p, os.F_OK), uid=1001, gid=1001))

    def test_non_owner_may_touch_but_not_set_explicit_times(self):
        p = self.p("times")
        touch(p, 0o666)
        os.chmod(p, 0o666)
        as_user(os.utime, p)            # write permission is enough for "now"
        self.assertErrno(errno.EPERM, as_user, lambda: os.utime(p, ns=(OLD_NS, OLD_NS)))
        self.assertNotEqual(os.stat(p).st_mtime_ns, OLD_NS)

    def test_sticky_directory_protects_other_users_files(self):
        d = self.p("tmp")
        os.mkdir(d)
        os.chmod(d, 0o1777)
        victim = os.path.join(d, "owned-by-1001")
        as_user(write_file, victim, b"mine", uid=1001, gid=1001)
        self.assertEqual(os.stat(victim).st_uid, 1001)
        self.assertErrno((errno.EPERM, errno.EACCES), as_user, os.unlink, victim, uid=1000, gid=1000)
        self.assertErrno((errno.EPERM, errno.EACCES), as_user, os.rename, victim,
                         os.path.join(d, "stolen"), uid=1000, gid=1000)
        self.assertEqual(read_file(victim), b"mine")
        # a user may create and remove its own files there
        own = os.path.join(d, "owned-by-1000")
        as_user(write_file, own, b"x", uid=1000, gid=1000)
        as_user(os.unlink, own, uid=1000, gid=1000)
        as_user(os.unlink, victim, uid=1001, gid=1001)
        self.assertEqual(os.listdir(d), [])

    def test_setgid_directory_passes_its_group_and_bit_on(self):
        d = self.p("shared")
        os.mkdir(d)
        os.chown(d, 0, 1234)
        os.chmod(d, 0o2777)
        as_user(touch, os.path.join(d, "file"), uid=1000, gid=1000)
        as_user(os.mkdir, os.path.join(d, "subdir"), 0o755, uid=1000, gid=1000)
        st = os.stat(os.path.join(d, "file"))
        self.assertEqual((st.st_uid, st.st_gid), (1000, 1234), "new file inherits the group")
        self.assertFalse(st.st_mode & stat.S_ISGID)
        st = os.stat(os.path.join(d, "subdir"))
        self.assertEqual((st.st_uid, st.st_gid), (1000, 1234), "new dir inherits the group")
        self.assertTrue(st.st_mode & stat.S_ISGID, "new dir inherits the setgid bit")
        # and again one level down
        touch(os.path.join(d, "subdir", "deeper"))
        self.assertEqual(os.stat(os.path.join(d, "subdir", "deeper")).st_gid, 1234)
        self.remount()
        self.assertEqual(os.stat(os.path.join(d, "subdir")).st_gid, 1234)
        self.assertTrue(os.stat(os.path.join(d, "subdir")).st_mode & stat.S_ISGID)

    # ------------------------------------------------------------ xattrs

    def test_xattr_set_get_list_and_remove(self):
        p = self.p("x")
        touch(p)
        self.assertEqual([n for n in os.listxattr(p) if n.startswith("user.")], [])
        os.setxattr(p, "user.one", b"1")
        os.setxattr(p, "user.two", b"\x00binary\xff\x00")
        os.setxattr(p, "user.empty", b"")
        self.assertEqual(os.getxattr(p, "user.one"), b"1")
        self.assertEqual(os.getxattr(p, "user.two"), b"\x00binary\xff\x00")
        self.assertEqual(os.getxattr(p, "user.empty"), b"")
        self.assertEqual(sorted(n for n in os.listxattr(p) if n.startswith("user.")),
                         ["user.empty", "user.one", "user.two"])
        os.setxattr(p, "user.one", b"replaced value")
        self.assertEqual(os.getxattr(p, "user.one"), b"replaced value")
        os.removexattr(p, "user.two")
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.two")
        self.assertEqual(sorted(n for n in os.listxattr(p) if n.startswith("user.")),
                         ["user.empty", "user.one"])
        # directories carry xattrs too
        os.mkdir(self.p("d"))
        os.setxattr(self.p("d"), "user.dir", b"yes")
        self.assertEqual(os.getxattr(self.p("d"), "user.dir"), b"yes")

    def test_xattr_create_on_an_existing_name_fails_with_eexist(self):
        p = self.p("x")
        touch(p)
        os.setxattr(p, "user.k", b"v1", XATTR_CREATE)
        self.assertErrno(errno.EEXIST, os.setxattr, p, "user.k", b"v2", XATTR_CREATE)
        self.assertEqual(os.getxattr(p, "user.k"), b"v1")

    def test_xattr_replace_on_a_missing_name_fails_with_enodata(self):
        p = self.p("x")
        touch(p)
        self.assertErrno(errno.ENODATA, os.setxattr, p, "user.k", b"v", XATTR_REPLACE)
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.k")
        os.setxattr(p, "user.k", b"v")
        os.setxattr(p, "user.k", b"w", XATTR_REPLACE)
        self.assertEqual(os.getxattr(p, "user.k"), b"w")

    def test_getxattr_and_removexattr_of_a_missing_name_fail_with_enodata(self):
        p = self.p("x")
        touch(p)
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.nothing")
        self.assertErrno(errno.ENODATA, os.removexattr, p, "user.nothing")

    def test_getxattr_with_a_too_small_buffer_fails_with_erange(self):
        p = self.p("x")
        touch(p)
        os.setxattr(p, "user.long", b"0123456789")
        self.assertEqual(getxattr_raw(p, "user.long", 0), 10, "size 0 asks for the length")
        self.assertErrno(errno.ERANGE, getxattr_raw, p, "user.long", 1)
        self.assertErrno(errno.ERANGE, getxattr_raw, p, "user.long", 9)
        self.assertEqual(getxattr_raw(p, "user.long", 10), 10)

    def test_a_64_kib_xattr_value_works(self):
        p = self.p("x")
        touch(p)
        value = bytes(range(256)) * 256          # 65536 bytes
        os.setxattr(p, "user.big", value)
        self.assertEqual(os.getxattr(p, "user.big"), value)
        self.assertEqual(getxattr_raw(p, "user.big", 0), 65536)
        self.remount()
        self.assertEqual(os.getxattr(p, "user.big"), value)

    @pmfuse_only
    def test_the_user_pmfuse_prefix_is_reserved(self):
        p = self.p("x")
        touch(p)
        self.assertErrno((errno.EPERM, errno.EACCES, errno.EINVAL),
                         os.setxattr, p, "user.pmfuse.anything", b"v")
        self.assertNotIn("user.pmfuse.anything", os.listxattr(p))

    def test_non_owner_cannot_set_user_xattrs_without_write_permission(self):
        p = self.p("x")
        touch(p, 0o644)
        os.setxattr(p, "user.a", b"root's")
        self.assertErrno((errno.EACCES, errno.EPERM), as_user, os.setxattr, p, "user.a", b"mine")
        self.assertEqual(as_user(os.getxattr, p, "user.a"), b"root's")
        self.assertEqual(os.getxattr(p, "user.a"), b"root's")

    def test_xattrs_persist_across_remount(self):
        p = self.p("x")
        touch(p)
        os.mkdir(self.p("d"))
        vals = {"user.a": b"alpha", "user.b": b"\x00" * 100, "user." + "n" * 200: b"long name",
                "user.c": os.urandom(3000)}
        for k, v in vals.items():
            os.setxattr(p, k, v)
        os.setxattr(self.p("d"), "user.d", b"dir")
        self.remount()
        for k, v in vals.items():
            self.assertEqual(os.getxattr(p, k), v, k)
        self.assertEqual(sorted(n for n in os.listxattr(p) if n.startswith("user.")), sorted(vals))
        self.assertEqual(os.getxattr(self.p("d"), "user.d"), b"dir")

    def test_a_recreated_file_does_not_inherit_old_xattrs(self):
        p = self.p("x")
        touch(p)
        os.setxattr(p, "user.stale", b"old")
        os.unlink(p)
        for i in range(10):
            touch(self.p("y%d" % i))
            self.assertEqual([n for n in os.listxattr(self.p("y%d" % i)) if n.startswith("user.")], [])
        touch(p)
        self.assertErrno(errno.ENODATA, os.getxattr, p, "user.stale")

    # ------------------------------------------------------------ access times

    def read_then_atime(self, p, flags=0):
        fd = os.open(p, os.O_RDONLY | flags)
        try:
            os.read(fd, 100)
        finally:
            os.close(fd)
        return os.stat(p).st_atime_ns

    def test_relatime_updates_atime_on_the_first_read_after_a_change(self):
        p = self.p("f")
        write_file(p, b"data")
        os.utime(p, ns=(OLD_NS, OLD_NS))          # atime = mtime, long ago
        t1 = self.read_then_atime(p)
        self.assertGreater(t1, os.stat(p).st_ctime_ns, "atime not later than ctime: update")
        tick()
        self.assertEqual(self.read_then_atime(p), t1, "atime later than mtime and ctime: kept")
        with open(p, "r+b") as f:
            f.write(b"D")
        tick()
        t2 = self.read_then_atime(p)
        self.assertGreater(t2, os.stat(p).st_mtime_ns, "a read after a write updates it")
        self.remount()
        self.assertEqual(os.stat(p).st_atime_ns, t2)

    def test_listing_a_directory_updates_its_atime(self):
        d = self.p("d")
        os.mkdir(d)
        touch(os.path.join(d, "x"))
        os.utime(d, ns=(OLD_NS, OLD_NS))
        os.listdir(d)
        self.assertGreater(os.stat(d).st_atime_ns, OLD_NS)

    def test_o_noatime_reads_leave_atime_alone(self):
        p = self.p("f")
        write_file(p, b"data")
        os.utime(p, ns=(OLD_NS, OLD_NS))
        self.assertEqual(self.read_then_atime(p, os.O_NOATIME), OLD_NS)

    @pmfuse_only
    def test_noatime_and_nodiratime_mounts_never_update_atime(self):
        self.unmount()
        self.m = self.mount(opts=["allow_other", "noatime"])
        p, d = self.p("f"), self.p("d")
        write_file(p, b"data")
        os.mkdir(d)
        os.utime(p, ns=(OLD_NS, OLD_NS))
        os.utime(d, ns=(OLD_NS, OLD_NS))
        self.assertEqual(self.read_then_atime(p), OLD_NS)
        os.listdir(d)
        self.assertEqual(os.stat(d).st_atime_ns, OLD_NS)
        self.unmount()
        self.m = self.mount(opts=["allow_other", "nodiratime"])
        os.listdir(d)
        self.assertEqual(os.stat(d).st_atime_ns, OLD_NS, "nodiratime")
        self.assertGreater(self.read_then_atime(p), OLD_NS, "files still get relatime")

    @pmfuse_only
    def test_strictatime_updates_atime_on_every_read(self):
        self.unmount()
        self.m = self.mount(opts=["allow_other", "strictatime"])
        p = self.p("f")
        write_file(p, b"data")
        t1 = self.read_then_atime(p)
        tick()
        self.assertGreater(self.read_then_atime(p), t1)

    # ------------------------------------------------------------ statvfs

    def test_statvfs_namemax_is_255(self):
        self.assertEqual(os.statvfs(self.mnt).f_namemax, 255)



FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_COMPR_FL, FS_IMMUTABLE_FL, FS_APPEND_FL = 0x4, 0x10, 0x20
FS_NODUMP_FL, FS_NOATIME_FL = 0x40, 0x80
FS_XFLAG_IMMUTABLE, FS_XFLAG_APPEND = 0x8, 0x10


def get_iflags(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4)
    finally:
        os.close(fd)
    return struct.unpack("<i", buf)[0]


def set_iflags(path, flags):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<i", flags))
    finally:
        os.close(fd)


class ChattrTest(PmfuseTestCase):
    """chattr(1) attributes: FS_IOC_GETFLAGS/SETFLAGS through FUSE ioctl,
    enforced by the daemon, kept across remounts."""
    mount_opts = ("allow_other",)
    assertErrno = AttrTest.assertErrno

    def tearDown(self):
        # fsck and cleanup must be able to remove what the tests pinned
        for root, dirs, files in os.walk(self.mnt):
            for n in dirs + files:
                try:
                    set_iflags(os.path.join(root, n), 0)
                except OSError:
                    pass
        super().tearDown()

    def test_an_immutable_file_can_be_read_but_not_changed_renamed_or_removed(self):
        p = self.p("f")
        write_file(p, b"frozen")
        set_iflags(p, FS_IMMUTABLE_FL)
        self.assertEqual(get_iflags(p) & FS_IMMUTABLE_FL, FS_IMMUTABLE_FL)
        self.assertEqual(read_file(p), b"frozen")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_APPEND, os.O_RDONLY | os.O_TRUNC):
            self.assertErrno(errno.EPERM, os.open, p, flags)
        self.assertErrno(errno.EPERM, os.truncate, p, 0)
        self.assertErrno(errno.EPERM, os.unlink, p)
        self.assertErrno(errno.EPERM, os.rename, p, self.p("g"))
        self.assertErrno(errno.EPERM, os.link, p, self.p("h"))
        self.assertErrno(errno.EPERM, os.chmod, p, 0o600)
        self.assertErrno(errno.EPERM, os.chown, p, 1000, 1000)
        self.assertErrno(errno.EPERM, os.utime, p, ns=(OLD_NS, OLD_NS))
        self.assertErrno(errno.EPERM, os.setxattr, p, "user.x", b"1")
        write_file(self.p("other"), b"x")
        self.assertErrno(errno.EPERM, os.rename, self.p("other"), p)
        self.remount()
        self.assertEqual(get_iflags(p) & FS_IMMUTABLE_FL, FS_IMMUTABLE_FL)
        self.assertErrno(errno.EPERM, os.unlink, p)
        set_iflags(p, 0)
        with open(p, "ab") as f:
            f.write(b"!")
        self.assertEqual(read_file(p), b"frozen!")
        os.unlink(p)

    def test_an_append_only_file_takes_appends_only(self):
        p = self.p("log")
        write_file(p, b"one\n")
        set_iflags(p, FS_APPEND_FL)
        self.assertErrno(errno.EPERM, os.open, p, os.O_WRONLY)
        self.assertErrno(errno.EPERM, os.open, p, os.O_WRONLY | os.O_APPEND | os.O_TRUNC)
        with open(p, "ab") as f:
            f.write(b"two\n")
        self.assertEqual(read_file(p), b"one\ntwo\n")
        self.assertErrno(errno.EPERM, os.truncate, p, 0)
        self.assertErrno(errno.EPERM, os.unlink, p)
        self.assertErrno(errno.EPERM, os.rename, p, self.p("moved"))
        self.assertErrno(errno.EPERM, os.chmod, p, 0o600)
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            self.assertErrno(errno.EPERM, fallocate, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             0, 4096)
            fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20)      # preallocation is fine
        finally:
            os.close(fd)
        os.utime(p)                                            # times set to now are fine
        self.assertEqual(read_file(p), b"one\ntwo\n")

    def test_directories_immutable_and_append_only(self):
        d, a = self.p("frozen"), self.p("append")
        os.mkdir(d)
        os.mkdir(a)
        write_file(os.path.join(d, "inside"), b"x")
        write_file(os.path.join(a, "old"), b"x")
        set_iflags(d, FS_IMMUTABLE_FL)
        set_iflags(a, FS_APPEND_FL)
        self.assertErrno(errno.EPERM, write_file, os.path.join(d, "new"), b"y")
        self.assertErrno(errno.EPERM, os.mkdir, os.path.join(d, "sub"))
        self.assertErrno(errno.EPERM, os.unlink, os.path.join(d, "inside"))
        self.assertErrno(errno.EPERM, os.rename, os.path.join(d, "inside"), self.p("out"))
        with open(os.path.join(d, "inside"), "ab") as f:   # its files' data may change
            f.write(b"z")
        write_file(os.path.join(a, "new"), b"y")             # append-only: creation is fine
        self.assertErrno(errno.EPERM, os.unlink, os.path.join(a, "old"))
        self.assertErrno(errno.EPERM, os.rename, os.path.join(a, "old"), self.p("out"))
        self.assertEqual(sorted(os.listdir(a)), ["new", "old"])

    def test_nodump_and_noatime_are_kept_and_noatime_acts(self):
        p = self.p("f")
        write_file(p, b"data")
        os.chown(p, 1000, 1000)
        as_user(set_iflags, p, FS_NODUMP_FL | FS_NOATIME_FL)    # the owner needs no capability
        self.assertEqual(get_iflags(p), FS_NODUMP_FL | FS_NOATIME_FL)
        os.utime(p, ns=(OLD_NS, OLD_NS))
        read_file(p)
        self.assertEqual(os.stat(p).st_atime_ns, OLD_NS)
        self.remount()
        self.assertEqual(get_iflags(p), FS_NODUMP_FL | FS_NOATIME_FL)

    def test_who_may_set_what(self):
        p = self.p("f")
        write_file(p, b"x")
        os.chown(p, 1000, 1000)
        self.assertErrno(errno.EPERM, as_user, set_iflags, p, FS_IMMUTABLE_FL)   # CAP_LINUX_IMMUTABLE
        self.assertErrno(errno.EPERM, as_user, set_iflags, p, FS_NODUMP_FL, uid=1001, gid=1001)
        self.assertErrno(errno.EOPNOTSUPP, set_iflags, p, FS_COMPR_FL)
        self.assertEqual(get_iflags(p), 0)

    def test_lsattr_and_xfs_style_flags_agree(self):
        p = self.p("f")
        write_file(p, b"x")
        set_iflags(p, FS_IMMUTABLE_FL | FS_APPEND_FL)
        fd = os.open(p, os.O_RDONLY)
        try:
            fsx = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, b"\0" * 28)
        finally:
            os.close(fd)
        self.assertEqual(struct.unpack_from("<I", fsx)[0], FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND)
        if shutil.which("lsattr"):
            out = subprocess.run(["lsattr", p], capture_output=True, text=True).stdout
            self.assertRegex(out.split()[0], r"^----ia")

# POSIX ACLs in the form the kernel stores them (acl_ea.h): version 2, then
# (tag, perm, id) entries in the kernel's order
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 1, 2, 4, 8, 0x10, 0x20
ACL_ACCESS, ACL_DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
NO_ID = 0xFFFFFFFF


def acl(*entries):
    """acl((ACL_USER_OBJ, 6), (ACL_USER, 4, 1000), ...) -> xattr value."""
    out = struct.pack("<I", 2)
    for e in entries:
        out += struct.pack("<HHI", e[0], e[1], e[2] if len(e) > 2 else NO_ID)
    return out


def acl_entries(value):
    return [struct.unpack_from("<HHI", value, off) for off in range(4, len(value), 8)]


def can(path, flags):
    try:
        os.close(os.open(path, flags))
        return True
    except PermissionError:
        return False


class AclTest(PmfuseTestCase):
    """POSIX ACLs act: the kernel checks them (FUSE_POSIX_ACL), the daemon
    keeps them and the mode in step and hands default ACLs down."""
    mount_opts = ("allow_other",)
    assertErrno = AttrTest.assertErrno

    def test_an_acl_entry_grants_a_named_user_access(self):
        p = self.p("f")
        write_file(p, b"secret", mode=0o600)
        os.chmod(p, 0o600)
        self.assertFalse(as_user(can, p, os.O_RDONLY))
        os.setxattr(p, ACL_ACCESS, acl((ACL_USER_OBJ, 6), (ACL_USER, 4, 1000), (ACL_GROUP_OBJ, 0),
                                       (ACL_MASK, 4), (ACL_OTHER, 0)))
        self.assertEqual(mode_of(p), 0o640, "the mask is the group class")
        self.assertTrue(as_user(can, p, os.O_RDONLY))
        self.assertFalse(as_user(can, p, os.O_WRONLY))
        self.assertFalse(as_user(can, p, os.O_RDONLY, uid=1001, gid=1001))
        self.assertEqual(as_user(read_file, p), b"secret")
        # a named group entry, through a supplementary group
        os.setxattr(p, ACL_ACCESS, acl((ACL_USER_OBJ, 6), (ACL_GROUP_OBJ, 0), (ACL_GROUP, 6, 4242),
                                       (ACL_MASK, 6), (ACL_OTHER, 0)))
        self.assertFalse(as_user(can, p, os.O_RDONLY))
        self.assertTrue(as_user(can, p, os.O_RDWR, groups=(4242,)))
        self.remount()
        self.assertTrue(as_user(can, p, os.O_RDWR, groups=(4242,)))
        self.assertFalse(as_user(can, p, os.O_RDONLY))

    def test_the_mask_limits_named_entries_and_chmod_sets_it(self):
        p = self.p("f")
        write_file(p, b"x")
        os.setxattr(p, ACL_ACCESS, acl((ACL_USER_OBJ, 6), (ACL_USER, 6, 1000), (ACL_GROUP_OBJ, 4),
                                       (ACL_MASK, 6), (ACL_OTHER, 0)))
        self.assertTrue(as_user(can, p, os.O_WRONLY))
        os.chmod(p, 0o640)                      # group class r--: the mask becomes r--
        entries = acl_entries(os.getxattr(p, ACL_ACCESS))
        self.assertIn((ACL_MASK, 4, NO_ID), entries)
        self.assertIn((ACL_USER, 6, 1000), entries, "chmod leaves named entries alone")
        self.assertFalse(as_user(can, p, os.O_WRONLY), "the mask limits the named user")
        self.assertTrue(as_user(can, p, os.O_RDONLY))
        os.chmod(p, 0o604)
        entries = acl_entries(os.getxattr(p, ACL_ACCESS))
        self.assertIn((ACL_USER_OBJ, 6, NO_ID), entries)
        self.assertIn((ACL_MASK, 0, NO_ID), entries)
        self.assertIn((ACL_OTHER, 4, NO_ID), entries)
        self.remount()
        self.assertEqual(mode_of(p), 0o604)
        self.assertIn((ACL_MASK, 0, NO_ID), acl_entries(os.getxattr(p, ACL_ACCESS)))

    def test_an_acl_the_mode_can_express_is_not_stored(self):
        p = self.p("f")
        write_file(p, b"x")
        os.setxattr(p, ACL_ACCESS, acl((ACL_USER_OBJ, 7), (ACL_GROUP_OBJ, 5), (ACL_OTHER, 1)))
        self.assertEqual(mode_of(p), 0o751)
        self.assertErrno(errno.ENODATA, os.getxattr, p, ACL_ACCESS)

    def test_malformed_and_misplaced_acls_are_refused(self):
        p = self.p("f")
        write_file(p, b"x")
        bad = [acl((ACL_USER_OBJ, 6), (ACL_OTHER, 0)),                      # no owning group
               acl((ACL_USER_OBJ, 6), (ACL_USER, 4, 5), (ACL_GROUP_OBJ, 4), (ACL_OTHER, 0)),  # no mask
               acl((ACL_USER_OBJ, 6), (ACL_USER, 4, 5), (ACL_USER, 4, 5), (ACL_GROUP_OBJ, 4),
                   (ACL_MASK, 4), (ACL_OTHER, 0)),                           # a user twice
               acl((ACL_USER_OBJ, 9), (ACL_GROUP_OBJ, 4), (ACL_OTHER, 0)),   # permission 9
               b"\x02\x00\x00\x00\x01"]                                      # torn entry
        for value in bad:
            self.assertErrno(errno.EINVAL, os.setxattr, p, ACL_ACCESS, value)
        # an unknown version: the kernel's own answer
        self.assertErrno((errno.EOPNOTSUPP, errno.EINVAL), os.setxattr, p, ACL_ACCESS,
                         struct.pack("<I", 1) + acl((ACL_USER_OBJ, 6))[4:])
        self.assertErrno(errno.EACCES, os.setxattr, p, ACL_DEFAULT,
                         acl((ACL_USER_OBJ, 6), (ACL_GROUP_OBJ, 4), (ACL_OTHER, 0)))
        self.assertEqual(mode_of(p), 0o644)
        self.assertErrno(errno.ENODATA, os.getxattr, p, ACL_ACCESS)
        # only the owner may set one
        os.chmod(p, 0o666)
        self.assertErrno(errno.EPERM, as_user, os.setxattr, p, ACL_ACCESS,
                         acl((ACL_USER_OBJ, 6), (ACL_GROUP_OBJ, 6), (ACL_OTHER, 6)))

    def test_a_default_acl_is_inherited_and_masks_the_new_mode(self):
        d = self.p("d")
        os.mkdir(d)
        os.chmod(d, 0o777)
        default = acl((ACL_USER_OBJ, 7), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 5), (ACL_MASK, 7),
                      (ACL_OTHER, 0))
        os.setxattr(d, ACL_DEFAULT, default)
        f, sub = os.path.join(d, "f"), os.path.join(d, "sub")
        # the umask does not apply where a default ACL does
        as_user(write_file, f, b"x", 0o666, umask=0o077)
        as_user(os.mkdir, sub, 0o777, umask=0o077)
        self.assertEqual(mode_of(f), 0o660)      # owner rw, mask rw, other none
        self.assertEqual(mode_of(sub), 0o770)
        self.assertEqual(acl_entries(os.getxattr(f, ACL_ACCESS)),
                         [(ACL_USER_OBJ, 6, NO_ID), (ACL_USER, 7, 1001), (ACL_GROUP_OBJ, 5, NO_ID),
                          (ACL_MASK, 6, NO_ID), (ACL_OTHER, 0, NO_ID)])
        self.assertErrno(errno.ENODATA, os.getxattr, f, ACL_DEFAULT)
        self.assertEqual(os.getxattr(sub, ACL_DEFAULT), default, "a directory passes it on")
        self.assertTrue(as_user(can, f, os.O_RDWR, uid=1001, gid=1001))
        self.assertFalse(as_user(can, f, os.O_RDONLY, uid=1002, gid=1002))
        deeper = os.path.join(sub, "deeper")
        as_user(write_file, deeper, b"y", 0o640, umask=0o077)
        self.assertEqual(mode_of(deeper), 0o640)
        self.assertIn((ACL_MASK, 4, NO_ID), acl_entries(os.getxattr(deeper, ACL_ACCESS)))
        # a symlink gets neither
        os.symlink("f", os.path.join(d, "l"))
        self.assertEqual(stat.S_IMODE(os.lstat(os.path.join(d, "l")).st_mode), 0o777)
        self.remount()
        self.assertEqual(os.getxattr(sub, ACL_DEFAULT), default)
        self.assertTrue(as_user(can, f, os.O_RDWR, uid=1001, gid=1001))

    def test_without_a_default_acl_the_umask_applies(self):
        d = self.p("plain")
        os.mkdir(d)
        os.chmod(d, 0o777)
        as_user(write_file, os.path.join(d, "f"), b"x", 0o666, umask=0o027)
        as_user(os.mkdir, os.path.join(d, "sub"), 0o777, umask=0o027)
        self.assertEqual(mode_of(os.path.join(d, "f")), 0o640)
        self.assertEqual(mode_of(os.path.join(d, "sub")), 0o750)
        self.assertErrno(errno.ENODATA, os.getxattr, os.path.join(d, "f"), ACL_ACCESS)

    def test_setting_an_access_acl_as_a_non_member_drops_setgid(self):
        p = self.p("f")
        write_file(p, b"x")
        os.chown(p, 1000, 4242)
        os.chmod(p, 0o2775)
        as_user(os.setxattr, p, ACL_ACCESS, acl((ACL_USER_OBJ, 7), (ACL_USER, 5, 1001),
                                                 (ACL_GROUP_OBJ, 5), (ACL_MASK, 5), (ACL_OTHER, 5)))
        self.assertEqual(mode_of(p), 0o0755)
        os.chmod(p, 0o2775)
        as_user(os.setxattr, p, ACL_ACCESS, acl((ACL_USER_OBJ, 7), (ACL_GROUP_OBJ, 5),
                                                 (ACL_OTHER, 5)), groups=(4242,))
        self.assertEqual(mode_of(p), 0o2755, "a member keeps setgid")

    def test_setfacl_and_getfacl_round_trip(self):
        if not shutil.which("setfacl"):
            self.skipTest("setfacl is not installed (Debian package acl)")
        p = self.p("f")
        write_file(p, b"x", mode=0o600)
        os.chmod(p, 0o600)
        r = subprocess.run(["setfacl", "-m", "u:1000:rw,g:4242:r", p], capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = subprocess.run(["getfacl", "-cn", p], capture_output=True, text=True).stdout
        self.assertEqual(out.split(), ["user::rw-", "user:1000:rw-", "group::---", "group:4242:r--",
                                       "mask::rw-", "other::---"])
        self.assertTrue(as_user(can, p, os.O_RDWR))
        self.assertEqual(subprocess.run(["setfacl", "-b", p]).returncode, 0)
        self.assertFalse(as_user(can, p, os.O_RDONLY))
        self.assertEqual(mode_of(p), 0o600)

    @pmfuse_only
    def test_noacl_keeps_acls_as_opaque_attributes(self):
        self.unmount()
        self.m = self.mount(opts=["allow_other", "noacl"])
        p = self.p("f")
        write_file(p, b"x", mode=0o600)
        os.chmod(p, 0o600)
        value = acl((ACL_USER_OBJ, 6), (ACL_USER, 4, 1000), (ACL_GROUP_OBJ, 0), (ACL_MASK, 4),
                    (ACL_OTHER, 0))
        os.setxattr(p, ACL_ACCESS, value)
        self.assertEqual(os.getxattr(p, ACL_ACCESS), value)
        self.assertFalse(as_user(can, p, os.O_RDONLY))

if __name__ == "__main__":
    main()
