#!/usr/bin/env python3
"""FUSE over io_uring: with the fuse module's enable_uring set, the kernel
queues each request on a ring of the CPU it was issued on, and the daemon's
workers (two per CPU, pinned there) serve it and commit the reply.  These
tests prove the rings carry the requests (uring_* counters), that data
still reads back byte for byte through them, that -o nouring and a kernel
that does not offer it keep /dev/fuse, and that direct writes over a dirty
shared mapping (the kernel's own WRITE requests in between) stay coherent."""
import mmap
import os
import random
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from harness import main  # noqa: E402

MiB = 1 << 20
def possible_cpus():
    """The kernel makes a ring queue per possible CPU ("0-1" -> 2)."""
    with open("/sys/devices/system/cpu/possible") as f:
        return int(f.read().strip().replace(",", "-").split("-")[-1]) + 1


NCPU = possible_cpus()
WORKERS = 2 * NCPU


def aligned(data):
    buf = mmap.mmap(-1, (len(data) + 4095) // 4096 * 4096)
    buf[:len(data)] = data
    return buf


class UringCase(h.PmfuseTestCase):

    @classmethod
    def setUpClass(cls):
        if h.REFERENCE:
            raise unittest.SkipTest("pmfuse-specific")
        if not h.kernel_has_uring():
            raise unittest.SkipTest("this kernel has no FUSE over io_uring")
        if os.environ.get("PMFUSE_TEST_URING", "1") == "0":
            raise unittest.SkipTest("PMFUSE_TEST_URING=0")

    def setUp(self):
        old = h.set_kernel_uring(True)
        if old is None:
            self.skipTest("cannot set %s" % h.URING_PARAM)
        self.addCleanup(h.set_kernel_uring, old)
        super().setUp()

    def stats(self):
        return h.fs_stats(self.mnt)

    def wait_for_rings(self):
        """The kernel switches to the rings once every queue has an entry."""
        ok = h.wait_until(lambda: self.stats()["uring_workers"] == WORKERS, 10)
        self.assertTrue(ok, "ring workers: %s\n%s" % (self.stats(), self.m.log()))
        self.assertEqual(self.stats()["uring_queues"], NCPU)


class RingTransportTest(UringCase):

    def test_requests_go_through_the_rings_and_data_reads_back_exactly(self):
        self.wait_for_rings()
        before = self.stats()["uring_requests"]
        rnd = random.Random(7)
        size = 6 * MiB + 777
        ref = bytearray(size)
        path = self.p("f")
        ops = 0
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            os.ftruncate(fd, size)
            for _ in range(400):
                off = rnd.randrange(size)
                n = min(rnd.choice((1, 100, 4096, 70001, MiB, 2 * MiB + 3)), size - off)
                if rnd.random() < 0.5:
                    data = rnd.randbytes(n)
                    h.pwrite_all(fd, data, off)
                    ref[off:off + n] = data
                else:
                    self.assertEqual(h.pread_all(fd, n, off), bytes(ref[off:off + n]))
                ops += 1
            os.fsync(fd)
            self.assertEqual(h.pread_all(fd, size, 0), bytes(ref))
        finally:
            os.close(fd)
        # O_DIRECT: every byte through the ring, 1 MiB at a time
        dfd = os.open(path, os.O_RDWR | os.O_DIRECT)
        try:
            data = rnd.randbytes(2 * MiB)
            buf = aligned(data)
            self.assertEqual(os.pwritev(dfd, [buf], 2 * MiB), 2 * MiB)
            ref[2 * MiB:4 * MiB] = data
            back = aligned(bytes(2 * MiB))
            self.assertEqual(os.preadv(dfd, [back], 2 * MiB), 2 * MiB)
            self.assertEqual(back[:], data)
            buf.close()
            back.close()
        finally:
            os.close(dfd)
        self.assertGreaterEqual(self.stats()["uring_requests"] - before, ops)
        self.remount()
        self.assertEqual(h.read_file(path), bytes(ref))

    def test_holes_come_back_as_zeros_after_data_went_through_the_same_entry(self):
        # the entry's payload is reused: a hole read after a data read must
        # not show what the data read left there
        self.wait_for_rings()
        path = self.p("mixed")
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            h.pwrite_all(fd, b"\xff" * MiB, 0)
            os.ftruncate(fd, 4 * MiB)
            h.pwrite_all(fd, b"\xee" * 100, 2 * MiB + 5)
            for _ in range(20):
                self.assertEqual(h.pread_all(fd, MiB, 0), b"\xff" * MiB)
                self.assertEqual(h.pread_all(fd, MiB, MiB), bytes(MiB))
                self.assertEqual(h.pread_all(fd, MiB, 2 * MiB),
                                 bytes(5) + b"\xee" * 100 + bytes(MiB - 105))
                self.assertEqual(h.pread_all(fd, MiB, 3 * MiB), bytes(MiB))
        finally:
            os.close(fd)

    def test_every_cpu_queue_serves(self):
        self.wait_for_rings()
        old = os.sched_getaffinity(0)
        self.addCleanup(os.sched_setaffinity, 0, old)
        h.write_file(self.p("x"), b"x" * 10)
        for cpu in sorted(old):
            os.sched_setaffinity(0, {cpu})
            before = self.stats()["uring_requests"]
            fd = os.open(self.p("x"), os.O_RDONLY | os.O_DIRECT)
            try:
                buf = aligned(bytes(4096))
                for _ in range(200):
                    self.assertEqual(os.preadv(fd, [buf], 0), 10)
                buf.close()
            finally:
                os.close(fd)
            self.assertGreaterEqual(self.stats()["uring_requests"] - before, 200, cpu)

    @unittest.skipUnless(os.geteuid() == 0, "needs CAP_SYS_NICE to come back from SCHED_IDLE")
    def test_workers_yield_on_reply_and_noyield_keeps_their_priority(self):
        self.wait_for_rings()
        h.write_file(self.p("y"), b"y" * 4096)

        def small_reads():
            fd = os.open(self.p("y"), os.O_RDONLY | os.O_DIRECT)
            try:
                buf = aligned(bytes(4096))
                for _ in range(2000):
                    os.preadv(fd, [buf], 0)
                buf.close()
            finally:
                os.close(fd)

        small_reads()
        s = self.stats()
        self.assertGreater(s["uring_yields"], 0, s)
        self.assertIn("workers yield on reply", self.m.log())
        self.unmount()
        self.m = self.mount(opts=("noyield",))
        self.wait_for_rings()
        small_reads()
        s = self.stats()
        self.assertGreaterEqual(s["uring_requests"], 2000, s)
        self.assertEqual(s["uring_yields"], 0, s)

    def test_direct_writes_over_a_dirty_shared_mapping_stay_coherent(self):
        # the kernel writes the range's dirty pages back before the direct
        # write (WRITE requests of its own, on the same CPU's ring), and the
        # write's handler then invalidates what other opens cached
        self.wait_for_rings()
        path = self.p("m")
        h.write_file(path, b"a" * 16384)
        with open(path, "r+b") as mf:
            mm = mmap.mmap(mf.fileno(), 16384)
            try:
                for rnd in range(20):
                    mm[4096:8192] = bytes([rnd]) * 4096		# dirty, outside
                    mm[8192:12288] = bytes([rnd + 100]) * 4096	# dirty, inside
                    buf = aligned(bytes([rnd + 200]) * 8192)
                    dfd = os.open(path, os.O_WRONLY | os.O_DIRECT)
                    try:
                        self.assertEqual(os.pwritev(dfd, [buf], 8192), 8192)
                    finally:
                        os.close(dfd)
                        buf.close()
                    want = b"a" * 4096 + bytes([rnd]) * 4096 + bytes([rnd + 200]) * 8192
                    self.assertEqual(h.read_file(path), want)
                    self.assertEqual(mm[:], want)
            finally:
                mm.close()
        self.assertEqual(h.read_file(path)[8192:], bytes([219]) * 8192)
        self.remount()
        self.assertEqual(h.read_file(path), b"a" * 4096 + bytes([19]) * 4096 + bytes([219]) * 8192)

    def test_concurrent_writers_on_every_cpu_then_remount(self):
        self.wait_for_rings()
        errors = []

        def writer(i):
            try:
                cpus = sorted(os.sched_getaffinity(0))
                os.sched_setaffinity(0, {cpus[i % len(cpus)]})
                rnd = random.Random(i)
                p = self.p("w%d" % i)
                want = rnd.randbytes(3 * MiB + 17)
                fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
                try:
                    for off in range(0, len(want), 65536):
                        h.pwrite_all(fd, want[off:off + 65536], off)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if h.read_file(p) != want:
                    errors.append("w%d differs" % i)
            except Exception as e:		# noqa: BLE001 -- reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.remount()
        for i in range(6):
            self.assertEqual(len(h.read_file(self.p("w%d" % i))), 3 * MiB + 17)


class StartAndStopTest(UringCase):

    def start_with(self, prefix=(), preexec=None):
        """Remount with the daemon started through prefix (a wrapper command)."""
        self.unmount()
        m = h.Mount(self.region, self.mnt, log_dir=self.workdir)
        cmd = m.command
        m.command = lambda: list(prefix) + cmd()
        if preexec:
            real_popen = h.subprocess.Popen

            def popen(*a, **kw):
                kw["preexec_fn"] = preexec
                return real_popen(*a, **kw)
            h.subprocess.Popen = popen
            try:
                m.start()
            finally:
                h.subprocess.Popen = real_popen
        else:
            m.start()
        self.mounts.append(m)
        self.m = m
        return m

    def test_rings_that_cannot_be_made_leave_requests_on_dev_fuse(self):
        # io_uring_setup refused (kernel.io_uring_disabled=2, or a seccomp
        # profile): INIT must not ask for the rings, or every request would
        # wait for queues that never get an entry
        knob = "/proc/sys/kernel/io_uring_disabled"
        try:
            with open(knob) as f:
                old = f.read().strip()
            with open(knob, "w") as f:
                f.write("2")
        except OSError:
            self.skipTest("cannot set " + knob)
        try:
            self.start_with()
            want = os.urandom(MiB + 3)
            h.write_file(self.p("f"), want, fsync=True)
            self.assertEqual(h.read_file(self.p("f")), want)
        finally:
            with open(knob, "w") as f:
                f.write(old)
        s = self.stats()
        self.assertEqual((s["uring_queues"], s["uring_requests"]), (0, 0), s)
        self.assertIn("requests stay on /dev/fuse", self.m.log())

    @unittest.skipUnless(os.geteuid() == 0, "drops a capability root has")
    def test_without_cap_sys_nice_workers_do_not_yield(self):
        # back from SCHED_IDLE needs CAP_SYS_NICE (or RLIMIT_NICE 20): without
        # it the workers must never go there, or they would stay
        self.start_with(prefix=("setpriv", "--bounding-set=-sys_nice", "--"))
        self.wait_for_rings()
        h.write_file(self.p("y"), b"y" * 4096)
        for _ in range(300):
            h.read_file(self.p("y"))
        s = self.stats()
        self.assertGreater(s["uring_requests"], 300, s)
        self.assertEqual(s["uring_yields"], 0, s)
        self.assertIn("do not yield on reply", self.m.log())

    def test_a_daemon_started_with_signals_blocked_still_stops(self):
        # workers unblock what they need (SIGUSR2 to be stopped, SIGBUS for
        # media errors) whatever mask the daemon inherited
        import signal as sig

        def block_all_but_term():
            sig.pthread_sigmask(sig.SIG_BLOCK, set(sig.Signals) -
                                {sig.SIGKILL, sig.SIGSTOP, sig.SIGTERM, sig.SIGINT})
        self.start_with(preexec=block_all_but_term)
        self.wait_for_rings()
        h.write_file(self.p("z"), b"z" * 10000, fsync=True)
        self.assertEqual(h.read_file(self.p("z")), b"z" * 10000)
        self.stop_detached_with_an_open_file("z", b"z" * 10000)

    def stop_detached_with_an_open_file(self, name, want):
        """Detach the mount lazily with name open, SIGTERM: the daemon exits 0."""
        fd = os.open(self.p(name), os.O_RDONLY)
        try:
            self.assertEqual(h.run(["umount", "-l", self.mnt]).returncode, 0)
            os.kill(self.m.proc.pid, h.signal.SIGTERM)
            self.assertEqual(self.m.proc.wait(timeout=20), 0, self.m.log())
        finally:
            os.close(fd)
        self.m.proc = None
        self.mounts.remove(self.m)
        self.assertFsckClean()
        self.m = self.mount()
        self.assertEqual(h.read_file(self.p(name)), want)

    def test_sigterm_with_a_lazily_detached_mount_and_an_open_file(self):
        # the connection outlives the detach while a file is open, so the
        # workers' waits do not fail by themselves: they must be interrupted
        self.wait_for_rings()
        h.write_file(self.p("open"), b"o" * 5000, fsync=True)
        self.stop_detached_with_an_open_file("open", b"o" * 5000)


class WithoutRingsTest(UringCase):

    def io_and_check(self):
        want = os.urandom(3 * MiB + 5)
        h.write_file(self.p("plain"), want, fsync=True)
        self.assertEqual(h.read_file(self.p("plain")), want)

    def test_nouring_keeps_every_request_on_dev_fuse(self):
        self.unmount()
        self.m = self.mount(opts=("nouring",))
        self.io_and_check()
        s = self.stats()
        self.assertEqual((s["uring_queues"], s["uring_workers"], s["uring_requests"]),
                         (0, 0, 0), s)

    def test_a_kernel_that_does_not_offer_rings_gets_dev_fuse(self):
        self.unmount()
        h.set_kernel_uring(False)	# restored by the cleanup setUp registered
        self.m = self.mount()
        self.io_and_check()
        s = self.stats()
        self.assertEqual((s["uring_queues"], s["uring_requests"]), (0, 0), s)
        self.assertNotIn("io_uring", self.m.log())


if __name__ == "__main__":
    main()
