#!/usr/bin/env python3
"""pmfuse mount tests: a pmfuse mount served over NFSv4 by NFS-Ganesha.

Each test mounts pmfuse, starts rpcbind (if it is not running) and
`ganesha.nfsd -F` with the example configuration the project installs
(systemd/ganesha-pmfuse.conf.example: NFSv4 only, VFS backend), its paths,
port and log replaced, bound to 127.0.0.1 only (nfs.py), and drives it with a libnfs
client session (nfs.py) and Debian's libnfs-utils (`nfs-ls`,
`nfs-cat`, `nfs-cp`): files written over NFS read locally byte for byte
and the reverse, a 256 MiB file both ways, the same client session
carrying on after the kernel evicted every inode Ganesha holds a handle
to, everything found again by a new client after Ganesha and pmfuse were
stopped and started, and data the server acknowledged with COMMIT intact
after the pmfuse daemon is killed.

If Ganesha cannot bind 127.0.0.1 the tests fail and say so; they never
talk to another address."""
import hashlib
import os
import subprocess
import sys
import time
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (PmfuseTestCase, fs_stats, main, pmfuse_only, read_file,  # noqa: E402
                     wait_until, write_file)
import nfs  # noqa: E402
from nfs import ADDR, PSEUDO, Ganesha  # noqa: E402

MiB = 1 << 20


def sha256(b):
    return hashlib.sha256(b).hexdigest()


class NfsTest(PmfuseTestCase):
    region_size = "1G"
    test_timeout = 600

    def setUp(self):
        missing = nfs.missing()
        if missing:
            self.fail("NFS test prerequisites missing (tests/run-all.sh installs them): "
                      + ", ".join(missing))
        super().setUp()
        self.g = Ganesha(self.mnt, self.workdir)
        self.clients = []
        self.g.start()

    def tearDown(self):
        for c in self.clients:
            c.close()
        alive = self.g.alive()
        self.g.stop()
        super().tearDown()
        self.assertTrue(alive, "ganesha.nfsd died during the test:\n" + self.g.tail())

    def client(self):
        c = nfs.NfsClient(ADDR, PSEUDO, port=self.g.port)
        self.clients.append(c)
        return c

    def tool(self, *args, timeout=300, binary=False):
        r = subprocess.run(list(args), stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
        self.assertEqual(r.returncode, 0, "%s exited %d: %s\nganesha log:\n%s"
                         % (" ".join(args), r.returncode,
                            r.stderr.decode(errors="replace"), self.g.tail()))
        return r.stdout if binary else r.stdout.decode(errors="replace")

    def nfs_ls(self, path=""):
        out = self.tool("nfs-ls", self.g.url(path))
        return sorted(line.split()[-1] for line in out.splitlines() if line.strip())

    def restart_all(self):
        """Stop Ganesha and pmfuse, fsck, mount again, start Ganesha again."""
        for c in self.clients:
            c.close()
        self.clients = []
        self.g.stop()
        self.remount()
        self.g.start()

    # ------------------------------------------------------------ tests
    def test_files_written_over_nfs_read_locally_and_the_reverse(self):
        c = self.client()
        payloads = {"empty": b"", "small": b"hello over NFS\n",
                    "200k": os.urandom(200000), "odd": os.urandom(3 * MiB + 17)}
        c.mkdir("dir")
        for name, data in payloads.items():
            c.write_file("dir/" + name, data)
        for name, data in payloads.items():
            self.assertEqual(read_file(self.p("dir", name)), data, name)
        # written locally, read by the client session and by the tools
        local = os.urandom(5 * MiB + 3)
        write_file(self.p("dir", "local"), local)
        self.assertEqual(c.read_file("dir/local"), local)
        self.assertEqual(self.tool("nfs-cat", self.g.url("dir/local"), binary=True), local)
        dest = os.path.join(self.workdir, "copied")
        self.tool("nfs-cp", self.g.url("dir/local"), dest)
        self.assertEqual(read_file(dest), local)
        self.assertEqual(self.nfs_ls("dir"), sorted(list(payloads) + ["local"]))
        # sizes and times as the files have them; no exclusive-create
        # verifier left in the times of a file that was written
        st = c.stat("dir/odd")
        self.assertEqual(st["size"], len(payloads["odd"]))
        self.assertLess(abs(os.stat(self.p("dir", "odd")).st_mtime - time.time()), 600)
        # rename and unlink over NFS
        c.rename("dir/small", "dir/renamed")
        c.unlink("dir/200k")
        self.assertEqual(sorted(os.listdir(self.p("dir"))),
                         sorted(["empty", "odd", "local", "renamed"]))
        self.assertEqual(read_file(self.p("dir", "renamed")), payloads["small"])

    def test_a_256_mib_file_both_ways(self):
        c = self.client()
        size = 256 * MiB
        data = os.urandom(size)
        c.write_file("big.nfs", data)
        with open(self.p("big.nfs"), "rb") as f:
            self.assertEqual(sha256(f.read()), sha256(data), "NFS write, local read")
        del data
        local = os.urandom(size)
        write_file(self.p("big.local"), local, fsync=True)
        dest = os.path.join(self.workdir, "big.copied")
        self.tool("nfs-cp", self.g.url("big.local"), dest)
        with open(dest, "rb") as f:
            self.assertEqual(sha256(f.read()), sha256(local), "local write, NFS read")
        os.unlink(dest)

    @pmfuse_only
    def test_the_same_client_session_carries_on_after_the_kernel_evicts_inodes(self):
        c = self.client()
        c.mkdir("d")
        files = {"d/f%d" % i: os.urandom(50000 + i) for i in range(20)}
        for name, data in files.items():
            c.write_file(name, data)
        f = c.open("d/open", os.O_RDWR | os.O_CREAT)
        f.pwrite(b"before the eviction ", 0)
        before = fs_stats(self.mnt)["req_lookup_handle"]
        for round in range(3):
            # Ganesha closes idle descriptors (MDCACHE above); only the file
            # the client holds open stays open, and its directory with it
            self.assertTrue(wait_until(lambda: self.g.open_files() == ["d/open"], 30),
                            "Ganesha still holds %s" % self.g.open_files())
            os.sync()
            with open("/proc/sys/vm/drop_caches", "w") as dc:
                dc.write("2\n")
            # Ganesha reaches every file by the handle it cached (the daemon
            # is asked to decode them), then a new name and a listing
            for name, data in files.items():
                self.assertEqual(c.read_file(name), data, "%s after drop_caches" % name)
            f.pwrite(b"after eviction %d " % round, 20 + 18 * round)
            c.write_file("d/new%d" % round, b"created after eviction %d" % round)
            self.assertEqual(self.nfs_ls("d"), sorted(
                ["open"] + [n[2:] for n in files] + ["new%d" % r for r in range(round + 1)]))
        f.fsync()
        f.close()
        self.assertGreater(fs_stats(self.mnt)["req_lookup_handle"], before,
                           "Ganesha never needed a handle decoded by the daemon")
        got = read_file(self.p("d", "open"))
        self.assertTrue(got.startswith(b"before the eviction after eviction 0 "), got)
        for r in range(3):
            self.assertEqual(read_file(self.p("d", "new%d" % r)), b"created after eviction %d" % r)

    def test_a_new_client_finds_everything_after_ganesha_and_pmfuse_restart(self):
        c = self.client()
        files = {}
        for i in range(30):
            name = "r/f%02d" % i if i % 2 else "f%02d" % i
            if i == 1:
                c.mkdir("r")
            files[name] = os.urandom(1000 * i + 1)
            c.write_file(name, files[name])
        self.restart_all()
        c2 = self.client()
        for name, data in files.items():
            self.assertEqual(c2.read_file(name), data, name)
        self.assertEqual(self.nfs_ls("r"), sorted(n[2:] for n in files if n.startswith("r/")))
        # and the server keeps serving writes after the restart
        c2.write_file("r/after", b"after the restart")
        self.assertEqual(read_file(self.p("r", "after")), b"after the restart")

    @pmfuse_only
    def test_data_acknowledged_by_commit_survives_a_killed_daemon(self):
        c = self.client()
        committed = {"c%d" % i: os.urandom(300000 + 4096 * i) for i in range(4)}
        fsyncs = fs_stats(self.mnt)["req_fsync"]
        for name, data in committed.items():
            c.write_file(name, data, commit=True)
        self.assertGreaterEqual(fs_stats(self.mnt)["req_fsync"] - fsyncs, len(committed),
                                "COMMIT did not reach pmfuse as fsync")
        # not committed: may be lost, must not damage anything
        f = c.open("uncommitted", os.O_WRONLY | os.O_CREAT)
        f.pwrite(os.urandom(100000), 0)
        for cl in self.clients:
            cl.close()
        self.clients = []
        self.crash()            # kill -9 of pmfuse, Ganesha still up
        self.g.stop()
        self.assertFsckClean()
        self.m = self.mount()
        for name, data in committed.items():
            self.assertEqual(read_file(self.p(name)), data, "%s after kill -9" % name)
        self.g.start()
        c2 = self.client()
        for name, data in committed.items():
            self.assertEqual(c2.read_file(name), data, "%s over NFS after kill -9" % name)



class NfsDirectIoTest(NfsTest):
    """The same, on a mount with -o direct_io, as the documentation
    recommends for an exported mount (no page-cache copy on the way)."""
    mount_opts = ("direct_io",)


if __name__ == "__main__":
    main()
