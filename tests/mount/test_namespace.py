#!/usr/bin/env python3
"""pmfuse mount tests: the namespace -- create, mkdir, link, symlink,
rename, special files, readdir, inode numbers."""

import collections
import ctypes
import errno
import os
import random
import stat
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (RENAME_EXCHANGE, RENAME_NOREPLACE, PmfuseTestCase,  # noqa: E402
                     getdents, main, mount_entry, pmfuse_only, pwrite_all, read_file,
                     renameat2, wait_until, write_file)

DT_FIFO, DT_CHR, DT_DIR, DT_BLK, DT_REG, DT_LNK, DT_SOCK = 1, 2, 4, 6, 8, 10, 12


def touch(path, mode=0o644):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, mode))


class NamespaceTest(PmfuseTestCase):

    def assertErrno(self, err, fn, *args, **kw):
        with self.assertRaises(OSError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.errno, err,
                         "%s%r: expected %s, got %s" % (getattr(fn, "__name__", fn), args,
                                                        errno.errorcode[err], cm.exception))

    def nlink(self, *parts):
        return os.lstat(self.p(*parts)).st_nlink

    # ------------------------------------------------------------ create

    @pmfuse_only
    def test_mount_is_listed_in_mountinfo_as_fuse_pmfuse(self):
        ent = mount_entry(self.mnt)
        self.assertIsNotNone(ent)
        self.assertEqual(ent[0], "fuse.pmfuse")

    def test_root_directory_is_an_empty_directory_with_nlink_2(self):
        st = os.stat(self.mnt)
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual(st.st_nlink, 2)
        self.assertEqual(os.listdir(self.mnt), [])
        ents = {name: ino for ino, _, name in getdents(self.mnt)}
        self.assertEqual(set(ents), {".", ".."})
        self.assertEqual(ents["."], st.st_ino)

    def test_create_with_o_excl_fails_with_eexist_on_any_existing_name(self):
        touch(self.p("f"))
        os.mkdir(self.p("d"))
        os.symlink("nowhere", self.p("dangling"))
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for name in ("f", "d", "dangling"):
            self.assertErrno(errno.EEXIST, os.open, self.p(name), flags, 0o644)
        self.assertFalse(os.path.exists(self.p("nowhere")), "O_EXCL must not follow a symlink")
        fd = os.open(self.p("fresh"), flags, 0o600)
        os.close(fd)
        st = os.stat(self.p("fresh"))
        self.assertTrue(stat.S_ISREG(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        self.assertEqual(st.st_nlink, 1)

    def test_o_creat_in_a_missing_directory_fails_with_enoent(self):
        self.assertErrno(errno.ENOENT, os.open, self.p("missing", "f"), os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertErrno(errno.ENOENT, os.open, self.p("nofile"), os.O_RDONLY)
        self.assertErrno(errno.ENOENT, os.stat, self.p("nofile"))
        self.assertErrno(errno.ENOENT, os.mkdir, self.p("missing", "d"))

    def test_path_through_a_regular_file_fails_with_enotdir(self):
        touch(self.p("file"))
        self.assertErrno(errno.ENOTDIR, os.stat, self.p("file", "x"))
        self.assertErrno(errno.ENOTDIR, os.open, self.p("file", "x"), os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertErrno(errno.ENOTDIR, os.open, self.p("file"), os.O_RDONLY | os.O_DIRECTORY)

    def test_created_file_mode_respects_umask(self):
        old = os.umask(0o027)
        try:
            touch(self.p("masked"), 0o777)
            os.mkdir(self.p("maskdir"), 0o777)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(os.stat(self.p("masked")).st_mode), 0o750)
        self.assertEqual(stat.S_IMODE(os.stat(self.p("maskdir")).st_mode), 0o750)

    # ------------------------------------------------------------ mkdir/rmdir

    def test_mkdir_creates_a_directory_and_rmdir_removes_it(self):
        os.mkdir(self.p("d"), 0o755)
        st = os.stat(self.p("d"))
        self.assertTrue(stat.S_ISDIR(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)
        self.assertEqual(os.listdir(self.p("d")), [])
        self.assertErrno(errno.EEXIST, os.mkdir, self.p("d"))
        os.rmdir(self.p("d"))
        self.assertErrno(errno.ENOENT, os.stat, self.p("d"))
        self.assertErrno(errno.ENOENT, os.rmdir, self.p("d"))
        self.assertEqual(os.listdir(self.mnt), [])

    def test_rmdir_of_a_non_empty_directory_fails_with_enotempty(self):
        os.mkdir(self.p("d"))
        touch(self.p("d", "f"))
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("d"))
        os.mkdir(self.p("e"))
        os.mkdir(self.p("e", "sub"))
        self.assertErrno(errno.ENOTEMPTY, os.rmdir, self.p("e"))
        os.unlink(self.p("d", "f"))
        os.rmdir(self.p("d"))
        os.rmdir(self.p("e", "sub"))
        os.rmdir(self.p("e"))

    def test_rmdir_of_a_file_fails_with_enotdir(self):
        touch(self.p("f"))
        self.assertErrno(errno.ENOTDIR, os.rmdir, self.p("f"))
        self.assertTrue(os.path.isfile(self.p("f")))

    def test_unlink_of_a_directory_fails_with_eisdir(self):
        os.mkdir(self.p("d"))
        self.assertErrno(errno.EISDIR, os.unlink, self.p("d"))
        self.assertTrue(os.path.isdir(self.p("d")))

    def test_unlink_removes_the_name(self):
        write_file(self.p("f"), b"data")
        os.unlink(self.p("f"))
        self.assertErrno(errno.ENOENT, os.stat, self.p("f"))
        self.assertErrno(errno.ENOENT, os.unlink, self.p("f"))
        self.assertEqual(os.listdir(self.mnt), [])
        write_file(self.p("f"), b"")     # the name is reusable, the data gone
        self.assertEqual(read_file(self.p("f")), b"")

    # ------------------------------------------------------------ names

    def test_names_of_255_bytes_work_and_256_bytes_fail_with_enametoolong(self):
        n255 = "n" * 255
        n256 = "m" * 256
        touch(self.p(n255))
        os.mkdir(self.p("d" * 255))
        os.symlink("target", self.p("s" * 255))
        self.assertTrue(os.path.isfile(self.p(n255)))
        self.assertErrno(errno.ENAMETOOLONG, os.open, self.p(n256), os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertErrno(errno.ENAMETOOLONG, os.mkdir, self.p(n256))
        self.assertErrno(errno.ENAMETOOLONG, os.symlink, "target", self.p(n256))
        self.assertErrno(errno.ENAMETOOLONG, os.link, self.p(n255), self.p(n256))
        self.assertErrno(errno.ENAMETOOLONG, os.rename, self.p(n255), self.p(n256))
        self.assertErrno(errno.ENAMETOOLONG, os.stat, self.p(n256))
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted([n255, "d" * 255, "s" * 255]))
        self.remount()
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted([n255, "d" * 255, "s" * 255]))
        self.assertEqual(os.readlink(self.p("s" * 255)), "target")

    def test_names_with_unusual_bytes_round_trip(self):
        names = ["with space", "new\nline", "tab\there", "ümlaut-ß-日本", "-dash", ".hidden",
                 "..dots", "a" * 32, "b" * 33, os.fsdecode(b"bin\xff\xfe\x01")]
        for i, n in enumerate(names):
            write_file(self.p(n), str(i).encode())
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted(names))
        self.remount()
        self.assertEqual(sorted(os.listdir(self.mnt)), sorted(names))
        for i, n in enumerate(names):
            self.assertEqual(read_file(self.p(n)), str(i).encode(), repr(n))

    def test_names_differing_only_in_case_are_distinct(self):
        write_file(self.p("Name"), b"1")
        write_file(self.p("name"), b"2")
        self.assertEqual(read_file(self.p("Name")), b"1")
        self.assertEqual(read_file(self.p("name")), b"2")

    # ------------------------------------------------------------ links

    def test_hard_link_shares_the_inode_and_counts_links(self):
        write_file(self.p("a"), b"shared")
        os.link(self.p("a"), self.p("b"))
        sa, sb = os.stat(self.p("a")), os.stat(self.p("b"))
        self.assertEqual(sa.st_ino, sb.st_ino)
        self.assertEqual(sa.st_nlink, 2)
        with open(self.p("b"), "ab") as f:
            f.write(b"+more")
        self.assertEqual(read_file(self.p("a")), b"shared+more")
        os.link(self.p("a"), self.p("c"))
        self.assertEqual(self.nlink("b"), 3)
        os.unlink(self.p("a"))
        self.assertEqual(self.nlink("b"), 2)
        self.assertEqual(read_file(self.p("c")), b"shared+more")
        self.remount()
        self.assertEqual(self.nlink("c"), 2)
        self.assertEqual(os.stat(self.p("b")).st_ino, os.stat(self.p("c")).st_ino)
        os.unlink(self.p("b"))
        self.assertEqual(self.nlink("c"), 1)

    def test_link_to_an_existing_name_fails_with_eexist(self):
        touch(self.p("a"))
        touch(self.p("b"))
        os.mkdir(self.p("d"))
        self.assertErrno(errno.EEXIST, os.link, self.p("a"), self.p("b"))
        self.assertErrno(errno.EEXIST, os.link, self.p("a"), self.p("d"))
        self.assertEqual(self.nlink("a"), 1)

    def test_link_to_a_directory_fails_with_eperm(self):
        os.mkdir(self.p("d"))
        self.assertErrno(errno.EPERM, os.link, self.p("d"), self.p("d2"))
        self.assertEqual(self.nlink("d"), 2)

    def test_hard_link_across_directories_works(self):
        os.mkdir(self.p("x"))
        os.mkdir(self.p("y"))
        write_file(self.p("x", "f"), b"cross")
        os.link(self.p("x", "f"), self.p("y", "g"))
        self.assertEqual(os.stat(self.p("x", "f")).st_ino, os.stat(self.p("y", "g")).st_ino)
        self.assertEqual(self.nlink("x", "f"), 2)
        self.assertEqual(self.nlink("x"), 2, "a file link must not change a dir's nlink")
        self.remount()
        os.unlink(self.p("x", "f"))
        self.assertEqual(read_file(self.p("y", "g")), b"cross")
        self.assertEqual(self.nlink("y", "g"), 1)

    def test_directory_link_counts_follow_subdirectories(self):
        os.mkdir(self.p("p"))
        self.assertEqual(self.nlink("p"), 2)
        root0 = os.stat(self.mnt).st_nlink
        self.assertEqual(root0, 3)
        for i in range(3):
            os.mkdir(self.p("p", "c%d" % i))
            self.assertEqual(self.nlink("p"), 3 + i)
            self.assertEqual(self.nlink("p", "c%d" % i), 2)
        touch(self.p("p", "file"))
        self.assertEqual(self.nlink("p"), 5, "a file must not count as a subdirectory")
        os.rmdir(self.p("p", "c1"))
        self.assertEqual(self.nlink("p"), 4)
        self.remount()
        self.assertEqual(self.nlink("p"), 4)
        self.assertEqual(os.stat(self.mnt).st_nlink, 3)

    # ------------------------------------------------------------ symlinks

    def test_symlinks_of_short_medium_and_4000_byte_targets_read_back(self):
        targets = {"short": "t", "medium": "m" * 79, "inline-edge": "e" * 80,
                   "long": "dir/" * 60 + "x", "huge": "h" * 4000}
        for name, t in targets.items():
            os.symlink(t, self.p(name))
        for name, t in targets.items():
            st = os.lstat(self.p(name))
            self.assertTrue(stat.S_ISLNK(st.st_mode), name)
            self.assertEqual(st.st_size, len(t), name)
            self.assertEqual(os.readlink(self.p(name)), t, name)
        self.remount()
        for name, t in targets.items():
            self.assertEqual(os.readlink(self.p(name)), t, name)
            self.assertEqual(os.lstat(self.p(name)).st_size, len(t), name)
        for name in targets:
            os.unlink(self.p(name))
        self.assertEqual(os.listdir(self.mnt), [])

    def test_symlink_is_followed_to_its_target(self):
        os.mkdir(self.p("d"))
        write_file(self.p("d", "real"), b"contents")
        os.symlink("d/real", self.p("rel"))
        os.symlink(self.p("d"), self.p("abs"))
        self.assertEqual(read_file(self.p("rel")), b"contents")
        self.assertEqual(read_file(self.p("abs", "real")), b"contents")
        self.assertEqual(os.stat(self.p("rel")).st_ino, os.stat(self.p("d", "real")).st_ino)
        self.assertErrno(errno.EINVAL, os.readlink, self.p("d", "real"))

    def test_symlink_loop_fails_with_eloop(self):
        os.symlink("b", self.p("a"))
        os.symlink("a", self.p("b"))
        os.symlink("self", self.p("self"))
        self.assertErrno(errno.ELOOP, os.stat, self.p("a"))
        self.assertErrno(errno.ELOOP, os.open, self.p("self"), os.O_RDONLY)
        self.assertErrno(errno.ELOOP, os.open, self.p("b"), os.O_WRONLY | os.O_CREAT, 0o644)
        self.assertEqual(os.readlink(self.p("a")), "b")

    # ------------------------------------------------------------ rename

    def test_rename_file_moves_name_and_keeps_inode(self):
        write_file(self.p("a"), b"payload")
        ino = os.stat(self.p("a")).st_ino
        os.rename(self.p("a"), self.p("b"))
        self.assertErrno(errno.ENOENT, os.stat, self.p("a"))
        self.assertEqual(os.stat(self.p("b")).st_ino, ino)
        self.assertEqual(read_file(self.p("b")), b"payload")
        self.assertEqual(os.listdir(self.mnt), ["b"])

    def test_rename_missing_source_fails_with_enoent(self):
        self.assertErrno(errno.ENOENT, os.rename, self.p("nope"), self.p("x"))

    def test_rename_file_over_file_replaces_it(self):
        write_file(self.p("src"), b"new")
        write_file(self.p("dst"), b"old contents")
        ino = os.stat(self.p("src")).st_ino
        os.rename(self.p("src"), self.p("dst"))
        self.assertEqual(read_file(self.p("dst")), b"new")
        self.assertEqual(os.stat(self.p("dst")).st_ino, ino)
        self.assertEqual(os.listdir(self.mnt), ["dst"])

    def test_file_replaced_by_rename_stays_readable_while_open(self):
        write_file(self.p("victim"), b"v" * 100000)
        write_file(self.p("src"), b"s")
        fd = os.open(self.p("victim"), os.O_RDONLY)
        try:
            os.rename(self.p("src"), self.p("victim"))
            self.assertEqual(os.fstat(fd).st_nlink, 0)
            self.assertEqual(os.pread(fd, 100000, 0), b"v" * 100000)
        finally:
            os.close(fd)
        self.assertEqual(read_file(self.p("victim")), b"s")

    def test_rename_dir_over_empty_dir_replaces_it(self):
        os.mkdir(self.p("a"))
        touch(self.p("a", "inside"))
        os.mkdir(self.p("b"))
        ino = os.stat(self.p("a")).st_ino
        os.rename(self.p("a"), self.p("b"))
        self.assertEqual(os.stat(self.p("b")).st_ino, ino)
        self.assertEqual(os.listdir(self.p("b")), ["inside"])
        self.assertEqual(os.listdir(self.mnt), ["b"])
        self.assertEqual(os.stat(self.mnt).st_nlink, 3)

    def test_rename_dir_over_non_empty_dir_fails_with_enotempty(self):
        os.mkdir(self.p("a"))
        os.mkdir(self.p("b"))
        touch(self.p("b", "f"))
        self.assertErrno(errno.ENOTEMPTY, os.rename, self.p("a"), self.p("b"))
        self.assertTrue(os.path.isdir(self.p("a")))
        self.assertEqual(os.listdir(self.p("b")), ["f"])

    def test_rename_file_over_dir_fails_with_eisdir(self):
        touch(self.p("f"))
        os.mkdir(self.p("d"))
        self.assertErrno(errno.EISDIR, os.rename, self.p("f"), self.p("d"))
        self.assertTrue(os.path.isfile(self.p("f")))

    def test_rename_dir_over_file_fails_with_enotdir(self):
        touch(self.p("f"))
        os.mkdir(self.p("d"))
        self.assertErrno(errno.ENOTDIR, os.rename, self.p("d"), self.p("f"))
        self.assertTrue(os.path.isdir(self.p("d")))

    def test_rename_dir_across_directories_updates_dotdot_and_link_counts(self):
        os.makedirs(self.p("old", "d", "deep"))
        os.mkdir(self.p("new"))
        self.assertEqual(self.nlink("old"), 3)
        self.assertEqual(self.nlink("new"), 2)
        os.rename(self.p("old", "d"), self.p("new", "d"))
        self.assertEqual(self.nlink("old"), 2)
        self.assertEqual(self.nlink("new"), 3)
        new_ino = os.stat(self.p("new")).st_ino
        self.assertEqual(os.stat(self.p("new", "d", "..")).st_ino, new_ino)

        def dotdot(*parts):
            return {name: ino for ino, _, name in getdents(self.p(*parts))}[".."]
        self.assertEqual(dotdot("new", "d"), new_ino, "'..' entry of a moved dir")
        self.assertEqual(dotdot("new", "d", "deep"), os.stat(self.p("new", "d")).st_ino)
        self.remount()
        self.assertEqual(dotdot("new", "d"), os.stat(self.p("new")).st_ino)
        self.assertEqual(os.stat(self.p("new", "d", "..")).st_ino, os.stat(self.p("new")).st_ino)
        self.assertEqual(self.nlink("old"), 2)
        self.assertEqual(self.nlink("new"), 3)
        os.rmdir(self.p("old"))       # really empty

    def test_moving_a_directory_into_its_own_subdirectory_fails_with_einval(self):
        os.makedirs(self.p("a", "b", "c"))
        self.assertErrno(errno.EINVAL, os.rename, self.p("a"), self.p("a", "b", "c", "a"))
        self.assertErrno(errno.EINVAL, os.rename, self.p("a"), self.p("a", "x"))
        self.assertTrue(os.path.isdir(self.p("a", "b", "c")))

    def test_rename_to_itself_is_a_no_op(self):
        write_file(self.p("f"), b"same")
        os.rename(self.p("f"), self.p("f"))
        self.assertEqual(read_file(self.p("f")), b"same")
        os.mkdir(self.p("d"))
        os.rename(self.p("d"), self.p("d"))
        self.assertTrue(os.path.isdir(self.p("d")))
        # two links to one inode: POSIX says rename does nothing
        os.link(self.p("f"), self.p("g"))
        os.rename(self.p("f"), self.p("g"))
        self.assertTrue(os.path.exists(self.p("f")))
        self.assertEqual(self.nlink("g"), 2)
        self.assertEqual(sorted(os.listdir(self.mnt)), ["d", "f", "g"])

    def test_renameat2_noreplace_fails_with_eexist_and_works_on_a_free_name(self):
        write_file(self.p("a"), b"A")
        write_file(self.p("b"), b"B")
        self.assertErrno(errno.EEXIST, renameat2, self.p("a"), self.p("b"), RENAME_NOREPLACE)
        self.assertEqual(read_file(self.p("a")), b"A")
        self.assertEqual(read_file(self.p("b")), b"B")
        renameat2(self.p("a"), self.p("c"), RENAME_NOREPLACE)
        self.assertEqual(sorted(os.listdir(self.mnt)), ["b", "c"])
        self.assertEqual(read_file(self.p("c")), b"A")

    def test_renameat2_exchange_swaps_a_file_and_a_directory_across_parents(self):
        os.mkdir(self.p("p1"))
        os.mkdir(self.p("p2"))
        write_file(self.p("p1", "x"), b"file")
        os.mkdir(self.p("p2", "y"))
        touch(self.p("p2", "y", "child"))
        fino = os.stat(self.p("p1", "x")).st_ino
        dino = os.stat(self.p("p2", "y")).st_ino
        renameat2(self.p("p1", "x"), self.p("p2", "y"), RENAME_EXCHANGE)
        self.assertEqual(os.stat(self.p("p1", "x")).st_ino, dino)
        self.assertEqual(os.stat(self.p("p2", "y")).st_ino, fino)
        self.assertEqual(os.listdir(self.p("p1", "x")), ["child"])
        self.assertEqual(read_file(self.p("p2", "y")), b"file")
        self.assertEqual(self.nlink("p1"), 3)
        self.assertEqual(self.nlink("p2"), 2)
        p1 = os.stat(self.p("p1")).st_ino
        self.assertEqual({n: i for i, _, n in getdents(self.p("p1", "x"))}[".."], p1)
        self.remount()
        self.assertEqual(os.stat(self.p("p1", "x")).st_ino, dino)
        self.assertEqual(self.nlink("p1"), 3)
        self.assertEqual(self.nlink("p2"), 2)
        self.assertEqual({n: i for i, _, n in getdents(self.p("p1", "x"))}[".."], p1)

    def test_renameat2_exchange_of_two_files_in_one_directory(self):
        write_file(self.p("a"), b"AAA")
        write_file(self.p("b"), b"B")
        renameat2(self.p("a"), self.p("b"), RENAME_EXCHANGE)
        self.assertEqual(read_file(self.p("a")), b"B")
        self.assertEqual(read_file(self.p("b")), b"AAA")
        self.assertErrno(errno.ENOENT, renameat2, self.p("a"), self.p("zz"), RENAME_EXCHANGE)

    # ------------------------------------------------------------ special files

    def test_fifo_socket_and_device_nodes_have_the_right_mode_and_rdev(self):
        os.mkfifo(self.p("fifo"), 0o640)
        os.mknod(self.p("null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(self.p("blk"), stat.S_IFBLK | 0o600, os.makedev(7, 200))
        os.mknod(self.p("sock"), stat.S_IFSOCK | 0o755)

        def check():
            st = os.lstat(self.p("fifo"))
            self.assertTrue(stat.S_ISFIFO(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
            st = os.lstat(self.p("null"))
            self.assertTrue(stat.S_ISCHR(st.st_mode))
            self.assertEqual(st.st_rdev, os.makedev(1, 3))
            self.assertEqual((os.major(st.st_rdev), os.minor(st.st_rdev)), (1, 3))
            st = os.lstat(self.p("blk"))
            self.assertTrue(stat.S_ISBLK(st.st_mode))
            self.assertEqual(st.st_rdev, os.makedev(7, 200))
            st = os.lstat(self.p("sock"))
            self.assertTrue(stat.S_ISSOCK(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o755)
            types = {n: t for _, t, n in getdents(self.mnt)}
            self.assertEqual(types["fifo"], DT_FIFO)
            self.assertEqual(types["null"], DT_CHR)
            self.assertEqual(types["blk"], DT_BLK)
            self.assertEqual(types["sock"], DT_SOCK)
        check()
        self.remount()
        check()
        for n in ("fifo", "null", "blk", "sock"):
            os.unlink(self.p(n))

    def test_fifo_on_the_mount_passes_data(self):
        os.mkfifo(self.p("pipe"))
        pid = os.fork()
        if pid == 0:
            try:
                fd = os.open(self.p("pipe"), os.O_WRONLY)
                os.write(fd, b"through the fifo")
                os.close(fd)
            finally:
                os._exit(0)
        fd = os.open(self.p("pipe"), os.O_RDONLY)
        try:
            self.assertEqual(os.read(fd, 100), b"through the fifo")
        finally:
            os.close(fd)
            os.waitpid(pid, 0)

    # ------------------------------------------------------------ inode numbers

    def test_inode_numbers_are_unique_and_stable_across_remount(self):
        os.makedirs(self.p("a", "b"))
        touch(self.p("a", "f"))
        os.link(self.p("a", "f"), self.p("hl"))
        os.symlink("a", self.p("sym"))
        os.mkfifo(self.p("a", "b", "fifo"))
        names = [(), ("a",), ("a", "b"), ("a", "f"), ("hl",), ("sym",), ("a", "b", "fifo")]
        inos = {n: os.lstat(self.p(*n)).st_ino for n in names}
        self.assertEqual(inos[("a", "f")], inos[("hl",)])
        self.assertEqual(len(set(inos.values())), len(names) - 1, inos)
        dents = {n: i for i, _, n in getdents(self.p("a"))}
        self.assertEqual(dents["f"], inos[("a", "f")])
        self.assertEqual(dents["b"], inos[("a", "b")])
        self.assertEqual(dents["."], inos[("a",)])
        self.assertEqual(dents[".."], inos[()])
        self.remount()
        self.assertEqual({n: os.lstat(self.p(*n)).st_ino for n in names}, inos)
        self.assertEqual({n: i for i, _, n in getdents(self.p("a"))}, dents)

    def test_a_freed_inode_number_reused_gets_a_fresh_file(self):
        write_file(self.p("a"), b"old data")
        os.unlink(self.p("a"))
        for i in range(20):
            touch(self.p("n%d" % i))
        for i in range(20):
            self.assertEqual(read_file(self.p("n%d" % i)), b"")
            self.assertEqual(self.nlink("n%d" % i), 1)

    # ------------------------------------------------------------ readdir

    def test_readdir_lists_exactly_the_entries_with_their_types(self):
        os.mkdir(self.p("dir"))
        write_file(self.p("file"), b"x")
        os.symlink("file", self.p("link"))
        os.mkfifo(self.p("fifo"))
        os.mknod(self.p("chr"), stat.S_IFCHR | 0o600, os.makedev(1, 5))
        os.mknod(self.p("sock"), stat.S_IFSOCK | 0o600)
        for i in range(40):
            touch(self.p("many-%02d" % i))
        expected = {"dir", "file", "link", "fifo", "chr", "sock"} | {"many-%02d" % i for i in range(40)}
        names = os.listdir(self.mnt)
        self.assertEqual(len(names), len(set(names)), "duplicate names in readdir")
        self.assertEqual(set(names), expected)
        with os.scandir(self.mnt) as it:
            ents = {e.name: e for e in it}
        self.assertTrue(ents["dir"].is_dir(follow_symlinks=False))
        self.assertTrue(ents["file"].is_file(follow_symlinks=False))
        self.assertTrue(ents["link"].is_symlink())
        self.assertFalse(ents["link"].is_file(follow_symlinks=False))
        for name, e in ents.items():
            self.assertEqual(e.inode(), os.lstat(self.p(name)).st_ino, name)
        types = {n: t for _, t, n in getdents(self.mnt)}
        self.assertEqual(types["dir"], DT_DIR)
        self.assertEqual(types["file"], DT_REG)
        self.assertEqual(types["link"], DT_LNK)
        self.assertEqual(types["fifo"], DT_FIFO)
        self.assertEqual(types["chr"], DT_CHR)
        self.assertEqual(types["sock"], DT_SOCK)
        self.assertEqual(types["."], DT_DIR)
        self.assertEqual(types[".."], DT_DIR)
        self.assertEqual(set(types), expected | {".", ".."})
        # the listing changes with the namespace
        os.unlink(self.p("file"))
        os.rename(self.p("fifo"), self.p("renamed"))
        self.assertEqual(set(os.listdir(self.mnt)), expected - {"file", "fifo"} | {"renamed"})

    def test_readdir_of_an_empty_subdirectory_has_only_dot_and_dotdot(self):
        os.mkdir(self.p("e"))
        ents = getdents(self.p("e"))
        self.assertEqual(sorted(n for _, _, n in ents), [".", ".."])
        d = {n: i for i, _, n in ents}
        self.assertEqual(d["."], os.stat(self.p("e")).st_ino)
        self.assertEqual(d[".."], os.stat(self.mnt).st_ino)

    def test_readdir_while_entries_are_added_and_removed_returns_survivors_exactly_once(self):
        rng = random.Random(2000)
        d = self.p("busy")
        os.mkdir(d)
        originals = ["e%04d" % i for i in range(2000)]
        for n in originals:
            touch(os.path.join(d, n))
        seen = collections.Counter()
        deleted, added = set(), []
        count = 0
        with os.scandir(d) as it:
            for entry in it:
                seen[entry.name] += 1
                count += 1
                if count % 200 == 0:
                    unseen = [n for n in originals if n not in seen and n not in deleted]
                    for n in rng.sample(unseen, min(40, len(unseen))):
                        os.unlink(os.path.join(d, n))
                        deleted.add(n)
                    for j in range(40):
                        name = "new-%d-%d" % (count, j)
                        touch(os.path.join(d, name))
                        added.append(name)
        self.assertGreater(len(deleted), 100)
        survivors = set(originals) - deleted
        missing = sorted(n for n in survivors if seen[n] == 0)
        dup = sorted(n for n, c in seen.items() if c > 1)
        bogus = sorted(n for n in seen if n not in set(originals) | set(added))
        self.assertEqual(missing, [], "entries that existed throughout were not returned")
        self.assertEqual(dup, [], "entries returned more than once")
        self.assertEqual(bogus, [], "names that never existed were returned")
        self.assertEqual(set(os.listdir(d)), survivors | set(added))
        self.assertEqual(len(os.listdir(d)), len(survivors) + len(added))

    def test_readdir_of_a_directory_with_long_names_in_several_chunks(self):
        d = self.p("long")
        os.mkdir(d)
        names = {("%03d-" % i) + "L" * (200 + i % 50) for i in range(300)}
        for n in names:
            touch(os.path.join(d, n))
        self.assertEqual(set(os.listdir(d)), names)
        self.assertEqual(len(os.listdir(d)), 300)
        for n in list(names)[:150]:
            os.unlink(os.path.join(d, n))
        self.remount()
        self.assertEqual(set(os.listdir(d)), set(list(names)[150:]))


AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
_libc = ctypes.CDLL(None, use_errno=True)


def link_fd(fd, dst):
    """linkat(fd, "", AT_FDCWD, dst, AT_EMPTY_PATH): give an O_TMPFILE a name."""
    if _libc.linkat(fd, b"", AT_FDCWD, os.fsencode(dst), AT_EMPTY_PATH) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), dst)


class TmpfileTest(PmfuseTestCase):
    """O_TMPFILE: a file without a name (an orphan from birth: reclaimed at
    its last close, or at the next mount after a crash) that linkat() may
    name once, unless it was opened O_EXCL."""

    def tmpfile(self, flags=0, mode=0o640, where=None):
        return os.open(where or self.mnt, os.O_TMPFILE | os.O_RDWR | flags, mode)

    def test_a_tmpfile_has_no_name_until_linked_and_then_keeps_its_data(self):
        fd = self.tmpfile()
        try:
            data = os.urandom(300000)
            pwrite_all(fd, data, 0)
            st = os.fstat(fd)
            self.assertTrue(stat.S_ISREG(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o640 & ~0o022)
            self.assertEqual(st.st_nlink, 0)
            self.assertEqual(os.listdir(self.mnt), [])
            link_fd(fd, self.p("named"))
            self.assertEqual(os.fstat(fd).st_nlink, 1)
            self.assertEqual(os.listdir(self.mnt), ["named"])
        finally:
            os.close(fd)
        self.remount()
        self.assertEqual(read_file(self.p("named")), data)
        self.assertEqual(os.stat(self.p("named")).st_nlink, 1)

    def test_an_o_excl_tmpfile_cannot_be_linked(self):
        fd = self.tmpfile(os.O_EXCL)
        try:
            with self.assertRaises(OSError) as cm:
                link_fd(fd, self.p("nope"))
            self.assertEqual(cm.exception.errno, errno.ENOENT)
        finally:
            os.close(fd)
        self.assertEqual(os.listdir(self.mnt), [])

    def test_an_unlinked_tmpfile_gives_its_space_back_at_close(self):
        fresh = os.statvfs(self.mnt)
        fd = self.tmpfile()
        try:
            pwrite_all(fd, os.urandom(4 << 20), 0)
            os.fsync(fd)
            self.assertLess(os.statvfs(self.mnt).f_bfree, fresh.f_bfree)
        finally:
            os.close(fd)
        self.assertTrue(wait_until(lambda: os.statvfs(self.mnt).f_bfree == fresh.f_bfree, 5),
                        "a closed tmpfile kept its blocks")
        self.assertEqual(os.statvfs(self.mnt).f_ffree, fresh.f_ffree)

    def test_a_tmpfile_of_a_killed_daemon_is_reclaimed_at_the_next_mount(self):
        fresh = os.statvfs(self.mnt)
        fd = self.tmpfile()
        pwrite_all(fd, os.urandom(4 << 20), 0)
        os.fsync(fd)
        self.crash_with_open_orphan(fd)
        self.assertReclaimedAtMount(fresh, "the tmpfile")

    def test_a_tmpfile_takes_the_group_of_a_setgid_directory(self):
        d = self.p("shared")
        os.mkdir(d)
        os.chown(d, 0, 4242)
        os.chmod(d, 0o2777)
        fd = self.tmpfile(where=d, mode=0o600)
        try:
            self.assertEqual(os.fstat(fd).st_gid, 4242)
            link_fd(fd, os.path.join(d, "kept"))
        finally:
            os.close(fd)
        self.assertEqual(os.stat(os.path.join(d, "kept")).st_gid, 4242)

if __name__ == "__main__":
    main()
