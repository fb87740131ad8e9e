#!/usr/bin/env python3
"""
The pmfuse benchmark: pmfuse against tmpfs and libfuse's passthrough_ll, all
measured in the same run, interleaved per repetition.  Run it through
bench/run (which installs, builds and then calls this); see bench/README.md.

Filesystems ("targets"):
  pmfuse        pmfuse, default (writeback) mode, region file on /dev/shm
  pmfuse-sync   pmfuse -o sync (data figures only)
  pmfuse-wb     pmfuse -o writeback_cache (buffered figures only)
  pmfuse-dio    pmfuse -o direct_io (the nfs phase only)
  tmpfs         a fresh tmpfs mount
  pt-default    passthrough_ll over a fresh tmpfs mount, default options
  pt-writeback  ... -o writeback
  pt-never      ... -o cache=never

Phases, each run on a freshly made filesystem per target (pmfuse: a fresh
mkfs; tmpfs and passthrough's source: a fresh tmpfs mount), torn down after:
  data  seq 1 MiB write (new file, fsync at end), overwrite, read;
        4 KiB random read and write (psync, 1 job); 4 KiB write+fsync pairs
  buf   the same figures without O_DIRECT (what applications do)
  mt    seq write and read, one job on one file vs two jobs on two files
  hole  read a file that was only truncated to its size; daemon RSS growth
  meta  create / stat / readdir / unlink over N files in one directory, and
        the daemon's mount time with those N files in the region

The data phase uses O_DIRECT (fio direct=1) on every target, the buf phase
the page cache: see bench/README.md.
"""

import argparse
import atexit
import json
import os
import platform
import resource
import traceback
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MiB = 1 << 20
GiB = 1 << 30

# ------------------------------------------------------------------ settings

FULL = dict(reps=3, file=1 * GiB, mt_file=512 * MiB, hole=1 * GiB, wal=64 * MiB,
            runtime=5, nfiles=100_000, region=1536 * MiB, bpi=8192,
            tree=6_000, sql_wal=3000, sql_rb=1000, dd_mib=1024)
QUICK = dict(reps=1, file=128 * MiB, mt_file=64 * MiB, hole=256 * MiB, wal=8 * MiB,
             runtime=1, nfiles=10_000, region=512 * MiB, bpi=4096,
             tree=2000, sql_wal=500, sql_rb=200, dd_mib=128)

TARGETS = ["pmfuse", "pmfuse-sync", "pmfuse-wb", "tmpfs", "pt-default", "pt-writeback",
           "pt-never"]
PT_OPTS = {"pt-default": "", "pt-writeback": "writeback", "pt-never": "cache=never"}
PHASE_TARGETS = {
    "data": [t for t in TARGETS if t != "pmfuse-wb"],
    "buf": TARGETS,
    "mt": [t for t in TARGETS if t != "pmfuse-wb"],
    "hole": ["pmfuse", "tmpfs", "pt-default", "pt-writeback", "pt-never"],
    "meta": ["pmfuse", "tmpfs", "pt-default", "pt-writeback", "pt-never"],
    "work": ["pmfuse", "pmfuse-wb", "tmpfs", "pt-default", "pt-writeback", "pt-never"],
}
PHASES = ["data", "buf", "mt", "hole", "meta", "work"]

# figure key -> (phase, label, unit, higher is better)
FIGURES = {
    "seqwrite":   ("data", "seq 1 MiB write, new file + fsync", "MiB/s", True),
    "overwrite":  ("data", "seq 1 MiB overwrite + fsync", "MiB/s", True),
    "seqread":    ("data", "seq 1 MiB read", "MiB/s", True),
    "randread":   ("data", "4 KiB random read", "IOPS", True),
    "randread_lat": ("data", "4 KiB random read, mean latency", "us", False),
    "randwrite":  ("data", "4 KiB random write", "IOPS", True),
    "randwrite_lat": ("data", "4 KiB random write, mean latency", "us", False),
    "fsyncpairs": ("data", "4 KiB write+fsync pairs", "pairs/s", True),
    "b_seqwrite":  ("buf", "buffered: seq 1 MiB write, new file + fsync", "MiB/s", True),
    "b_overwrite": ("buf", "buffered: seq 1 MiB overwrite + fsync", "MiB/s", True),
    "b_seqread":   ("buf", "buffered: seq 1 MiB read", "MiB/s", True),
    "b_randread":  ("buf", "buffered: 4 KiB random read", "IOPS", True),
    "b_randread_lat": ("buf", "buffered: 4 KiB random read, mean latency", "us", False),
    "b_randwrite": ("buf", "buffered: 4 KiB random write", "IOPS", True),
    "b_randwrite_lat": ("buf", "buffered: 4 KiB random write, mean latency", "us", False),
    "b_fsyncpairs": ("buf", "buffered: 4 KiB write+fsync pairs", "pairs/s", True),
    "mtwrite1":   ("mt", "seq 1 MiB write, 1 job", "MiB/s", True),
    "mtwrite2":   ("mt", "seq 1 MiB write, 2 jobs / 2 files", "MiB/s", True),
    "mtwrite_scale": ("mt", "seq write scaling, 2 jobs / 1 job", "x", True),
    "mtread1":    ("mt", "seq 1 MiB read, 1 job", "MiB/s", True),
    "mtread2":    ("mt", "seq 1 MiB read, 2 jobs / 2 files", "MiB/s", True),
    "mtread_scale": ("mt", "seq read scaling, 2 jobs / 1 job", "x", True),
    "hole":       ("hole", "hole read (sparse file), 1 MiB", "MiB/s", True),
    "hole_rss":   ("hole", "daemon RSS growth during hole read", "KiB/GiB", False),
    "create":     ("meta", "create (open O_CREAT + close)", "ops/s", True),
    "stat":       ("meta", "stat, cold dentry cache", "ops/s", True),
    "readdir":    ("meta", "readdir (getdents64)", "entries/s", True),
    "unlink":     ("meta", "unlink", "ops/s", True),
    "mount":      ("meta", "mount time, region with N files", "ms", False),
    "w_tar":      ("work", "tar -x of a source tree", "s", False),
    "w_git":      ("work", "git clone --no-hardlinks (local)", "s", False),
    "w_sqlwal":   ("work", "SQLite WAL, synchronous=FULL, 1-row txns", "s", False),
    "w_sqlrb":    ("work", "SQLite rollback journal, 1-row txns", "s", False),
    "w_dd":       ("work", "dd bs=1M conv=fsync", "s", False),
    "w_rm":       ("work", "rm -rf of the tree and the clone", "s", False),
}
# which figures are not compared with passthrough (targets of their own)
NO_PT_TARGET = {"mtwrite_scale", "mtread_scale", "hole_rss", "mtwrite1", "mtread1"}
# figures shown in the table (1-job MT figures stay in the JSON)
TABLE = ["seqwrite", "overwrite", "seqread", "randread", "randread_lat", "randwrite",
         "randwrite_lat", "fsyncpairs", "b_seqwrite", "b_overwrite", "b_seqread", "b_randread",
         "b_randread_lat", "b_randwrite", "b_randwrite_lat", "b_fsyncpairs", "mtwrite2", "mtwrite_scale", "mtread2", "mtread_scale",
         "hole", "hole_rss", "create", "stat", "readdir", "unlink", "mount",
         "w_tar", "w_git", "w_sqlwal", "w_sqlrb", "w_dd", "w_rm"]

PT_RATIO = 1.2
# metabench drops dentries/inodes every so many operations (clock paused): see
# metabench.c -- passthrough_ll needs an fd per known inode, RLIMIT_NOFILE 20000 here
META_DROP_EVERY = 5000

# ------------------------------------------------------------------ utilities

_cleanup = []          # callables, run last-in first-out at exit
_log_verbose = False


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def vlog(*a):
    if _log_verbose:
        log(*a)


def sh(cmd, check=True, timeout=1800, **kw):
    vlog("+", " ".join(cmd))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(cmd), r.returncode, r.stdout,
                                                     r.stderr))
    return r


DROP_CACHES = {"ok": None}


def drop_caches():
    """echo 3 > drop_caches; remember (and report) if it is refused."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        if DROP_CACHES["ok"] is None:
            DROP_CACHES["ok"] = True
    except OSError as e:
        if DROP_CACHES["ok"] is not False:
            log("note: drop_caches refused (%s); caches are not dropped between phases" % e)
        DROP_CACHES["ok"] = False


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def rss_kib(pid, field="VmRSS"):
    """A KiB line of /proc/PID/status: VmRSS, or RssAnon (not the mapped region)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def raise_nofile():
    """passthrough_ll holds an O_PATH fd per inode the kernel knows: 100,000 files
    need more than the usual limit.  Root may raise it up to fs.nr_open."""
    with open("/proc/sys/fs/nr_open") as f:
        n = min(int(f.read()), 1 << 21)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    except (ValueError, OSError):   # no CAP_SYS_RESOURCE: up to the hard limit
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """user+system CPU seconds of a process (all its threads, live and exited)."""
    if not pid:
        return 0.0
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class CpuMeter:
    """CPU time of the daemon and of the client (fio/metabench) around one figure:
    far less sensitive to other load on the machine than wall-clock rates, so
    A/B comparisons of daemon changes use it too (samples FIGURE@dcpu, @ccpu)."""

    def __init__(self, t):
        self.t = t
        self.d0 = proc_cpu(t.pid) if t.is_fuse else 0.0
        self.c0 = children_cpu()

    def done(self, res, fig, ops):
        if ops <= 0:
            return
        d = (proc_cpu(self.t.pid) - self.d0) if self.t.is_fuse else 0.0
        c = children_cpu() - self.c0
        if self.t.is_fuse:
            res.add(fig + "@dcpu", self.t.name, d * 1e6 / ops)
        res.add(fig + "@ccpu", self.t.name, c * 1e6 / ops)


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


# ------------------------------------------------------------------ targets

# How the pmfuse daemon moved file data at page granularity in this run, from
# its stats: through the region's fd or its mapping, and the page-fault cost
# that chose it (region.c use_fd_io).
REGION_IO = None


def note_region_io(t):
    global REGION_IO
    if REGION_IO or not t.name.startswith("pmfuse"):
        return
    try:
        st = dict(ln.split(" ", 1) for ln in
                  os.getxattr(t.mnt, "user.pmfuse.stats").decode().splitlines() if " " in ln)
    except OSError:
        return
    if st.get("granularity") == "page" and "region_io" in st:
        REGION_IO = "%s (a page's first access through a mapping: %s ns)" % (
            "the region's file descriptor" if st["region_io"] == "fd" else "the mapping",
            st.get("first_touch_ns", "?"))


class Target:
    """One filesystem under test; mount() makes it fresh, umount() tears it down."""

    def __init__(self, name, ctx):
        self.name = name
        self.ctx = ctx
        self.mnt = os.path.join(ctx.base, "mnt-" + name)
        self.proc = None           # the FUSE daemon (Popen), if any
        self.fresh_state = False   # backing store exists (region / source tmpfs)
        os.makedirs(self.mnt, exist_ok=True)

    @property
    def is_fuse(self):
        return self.name != "tmpfs"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # --- backing store
    def make_store(self):
        c = self.ctx
        if self.name.startswith("pmfuse"):
            self.region = c.region
            sh([c.mkfs, "-f", "-q", "-s", str(c.cfg["region"]), "-i", str(c.cfg["bpi"]),
                self.region])
        elif self.name == "tmpfs":
            sh(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % c.tmpfs_size,
                "pmfuse-bench", self.mnt])
        else:
            self.src = os.path.join(c.base, "src-" + self.name)
            os.makedirs(self.src, exist_ok=True)
            sh(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % c.tmpfs_size,
                "pmfuse-bench-src", self.src])
        self.fresh_state = True

    def drop_store(self):
        if not self.fresh_state:
            return
        if self.name.startswith("pmfuse"):
            try:
                os.unlink(self.region)
            except FileNotFoundError:
                pass
        elif self.name == "tmpfs":
            sh(["umount", self.mnt], check=False)
        else:
            sh(["umount", self.src], check=False)
        self.fresh_state = False

    # --- daemon
    def daemon_cmd(self):
        c = self.ctx
        if self.name == "pmfuse":
            return [c.daemon, self.region, self.mnt, "-f"]
        if self.name == "pmfuse-sync":
            return [c.daemon, self.region, self.mnt, "-f", "-o", "sync"]
        if self.name == "pmfuse-wb":
            return [c.daemon, self.region, self.mnt, "-f", "-o", "writeback_cache"]
        if self.name == "pmfuse-dio":
            return [c.daemon, self.region, self.mnt, "-f", "-o", "direct_io"]
        if self.name == "pmfuse-cl":
            return [c.daemon, self.region, self.mnt, "-f"]
        if self.name == "pmfuse-alt":
            return [c.alt_daemon, self.region, self.mnt, "-f"]
        if self.name == "pmfuse-alt-sync":
            return [c.alt_daemon, self.region, self.mnt, "-f", "-o", "sync"]
        opts = "source=" + self.src
        if PT_OPTS[self.name]:
            opts += "," + PT_OPTS[self.name]
        return [c.passthrough, "-f", "-o", opts, self.mnt]

    def start(self, wrapper=None):
        """Start the daemon; return seconds from exec to a live mount."""
        if not self.is_fuse:
            return 0.0
        parent_dev = os.stat(os.path.dirname(self.mnt)).st_dev
        cmd = (wrapper or []) + self.daemon_cmd()
        # load the binary and its libraries into the page cache first (drop_caches
        # may have evicted them): mount time is the filesystem's, not the disk's
        subprocess.run([self.daemon_cmd()[0], "--help"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        logf = open(os.path.join(self.ctx.base, "daemon-%s.log" % self.name), "ab")
        t0 = time.perf_counter()
        env = None
        if self.name == "pmfuse-cl":
            # emulate ADR pmem on the tmpfs file: cache-line flushes instead of msync
            env = dict(os.environ, PMEM2_FORCE_GRANULARITY="CACHE_LINE", PMEM_IS_PMEM_FORCE="1")
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
                                     preexec_fn=raise_nofile, env=env)
        logf.close()
        while True:
            # a stat of the mountpoint blocks until the daemon answers: "live"
            if os.stat(self.mnt).st_dev != parent_dev:
                break
            if self.proc.poll() is not None:
                raise RuntimeError("%s daemon exited with %d before mounting (see %s)" % (
                    self.name, self.proc.returncode, logf.name))
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("%s: mount not live after 120 s" % self.name)
            time.sleep(0.0005)
        elapsed = time.perf_counter() - t0
        note_region_io(self)
        return elapsed

    def stop(self):
        if not self.is_fuse or not self.proc:
            return
        for _ in range(100):
            r = sh(["fusermount3", "-u", self.mnt], check=False)
            if r.returncode == 0 or not is_mounted(self.mnt):
                break
            time.sleep(0.1)
        else:
            sh(["umount", "-l", self.mnt], check=False)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()     # our own child, by pid
            self.proc.wait()
        self.proc = None

    def mount(self):
        self.make_store()
        self.start()

    def umount(self):
        self.stop()
        self.drop_store()


class Ctx:
    pass


# ------------------------------------------------------------------ fio

def fio(ctx, args, name="job", direct=True, env=None):
    cmd = ["fio", "--name=" + name, "--ioengine=psync", "--direct=%d" % direct, "--fallocate=none",
           "--group_reporting", "--output-format=json"] + args
    r = sh(cmd, timeout=3600, env=env)
    out = r.stdout
    j = json.loads(out[out.index("{"):])
    job = j["jobs"][0]
    if job.get("error"):
        raise RuntimeError("fio error %s: %s" % (job["error"], " ".join(cmd)))
    return job


def bw_mib(job, ddir):
    """MiB/s over the job's run time (fio's runtime includes end_fsync)."""
    d = job[ddir]
    ms = d["runtime"] if d["runtime"] else job["job_runtime"]
    return (d["io_bytes"] / MiB) / (ms / 1000.0) if ms else 0.0


def lat_us(job, ddir):
    return job[ddir]["lat_ns"]["mean"] / 1000.0


# ------------------------------------------------------------------ phases

class Prof:
    """perf record on a daemon around one figure (--profile)."""

    def __init__(self, ctx, figure, target):
        self.ctx, self.figure, self.target = ctx, figure, target
        self.p = None

    def begin(self, figure, t):
        if not self.ctx.profile or figure != self.ctx.profile or t.proc is None:
            return
        self.out = os.path.join(self.ctx.base, "perf-%s.data" % figure)
        cmd = ["perf", "record", "-e", "cpu-clock", "-F", str(self.ctx.perf_freq),
               "--call-graph", self.ctx.callgraph, "-o", self.out, "-p", str(t.pid)]
        log("profiling %s on %s: %s" % (figure, t.name, " ".join(cmd)))
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)   # let perf attach to every thread

    def end(self):
        if not self.p:
            return
        self.p.send_signal(signal.SIGINT)
        self.p.wait()
        self.p = None
        self.ctx.perf_files.append(self.out)


def run_data(ctx, t, res, prof, direct=True):
    c = ctx.cfg
    d = t.mnt
    size = str(c["file"])
    f = os.path.join(d, "seq")
    key = (lambda n: n) if direct else (lambda n: "b_" + n)

    def fig(name, args, ddir, fn="job"):
        name = key(name)
        prof.begin(name, t)
        m = CpuMeter(t)
        try:
            j = fio(ctx, args, fn, direct)
        finally:
            prof.end()
        # CPU per operation: per MiB for 1 MiB figures, per I/O (pair) for 4 KiB ones
        ops = j[ddir]["io_bytes"] / MiB if "--bs=1M" in args else j[ddir]["total_ios"]
        m.done(res, name, ops)
        return j

    j = fig("seqwrite", ["--filename=" + f, "--rw=write", "--bs=1M", "--size=" + size,
                         "--end_fsync=1"], "write")
    res.add(key("seqwrite"), t.name, bw_mib(j, "write"))
    if ctx.upto == "seqwrite":
        return
    j = fig("overwrite", ["--filename=" + f, "--rw=write", "--bs=1M", "--size=" + size,
                          "--end_fsync=1"], "write")
    res.add(key("overwrite"), t.name, bw_mib(j, "write"))
    if ctx.upto == "overwrite":
        return
    drop_caches()
    j = fig("seqread", ["--filename=" + f, "--rw=read", "--bs=1M", "--size=" + size], "read")
    res.add(key("seqread"), t.name, bw_mib(j, "read"))
    if ctx.upto == "seqread":
        return
    drop_caches()
    j = fig("randread", ["--filename=" + f, "--rw=randread", "--bs=4k", "--size=" + size,
                         "--time_based", "--runtime=%d" % c["runtime"], "--randrepeat=1"],
            "read")
    res.add(key("randread"), t.name, j["read"]["iops"])
    res.add(key("randread_lat"), t.name, lat_us(j, "read"))
    if ctx.upto == "randread":
        return
    j = fig("randwrite", ["--filename=" + f, "--rw=randwrite", "--bs=4k", "--size=" + size,
                          "--time_based", "--runtime=%d" % c["runtime"], "--randrepeat=1"],
            "write")
    res.add(key("randwrite"), t.name, j["write"]["iops"])
    res.add(key("randwrite_lat"), t.name, lat_us(j, "write"))
    if ctx.upto == "randwrite":
        return
    # appends to a new file, each write followed by fsync (a log's pattern)
    j = fig("fsyncpairs", ["--filename=" + os.path.join(d, "wal"), "--rw=write", "--bs=4k",
                           "--size=%d" % c["wal"], "--fsync=1"], "write")
    res.add(key("fsyncpairs"), t.name, j["write"]["iops"])


def run_buf(ctx, t, res, prof):
    """The data figures again without O_DIRECT: what applications do."""
    run_data(ctx, t, res, prof, direct=False)


# the everyday phase's bounds against tmpfs (issue 16): time ratios
WORK_TMPFS = {"w_tar": 6, "w_rm": 6, "w_dd": 2, "w_sqlwal": 1.5}


def make_work_inputs(ctx):
    """Once per run: a tarball of a source tree made from files on this
    machine (/usr/include, then /usr/share/doc), and a git repository of it,
    both on a tmpfs outside every target.  Passthrough_ll holds an fd per
    inode it knows (RLIMIT_NOFILE 20000 here): the tree stays below that."""
    if getattr(ctx, "work_tar", None):
        return
    src = os.path.join(ctx.base, "work-src")
    os.makedirs(src)
    sh(["mount", "-t", "tmpfs", "-o", "size=2g", "pmfuse-bench-work", src])
    _cleanup.append(lambda: sh(["umount", src], check=False))
    files = []
    for top in ("/usr/include", "/usr/share/doc"):
        for dp, dns, fns in os.walk(top):
            dns.sort()
            for fn in sorted(fns):
                p = os.path.join(dp, fn)
                if os.path.isfile(p) and not os.path.islink(p):
                    files.append(p[1:])
                if len(files) >= ctx.cfg["tree"]:
                    break
            if len(files) >= ctx.cfg["tree"]:
                break
    lst = os.path.join(src, "list")
    with open(lst, "w") as f:
        f.write("\n".join(files) + "\n")
    ctx.work_tar = os.path.join(src, "tree.tar")
    sh(["tar", "-cf", ctx.work_tar, "-C", "/", "-T", lst])
    repo = os.path.join(src, "repo")
    os.makedirs(repo)
    sh(["tar", "-xf", ctx.work_tar, "-C", repo])
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-C", repo]
    sh(git + ["init", "-q"])
    sh(git + ["add", "-A"])
    sh(git + ["commit", "-q", "-m", "tree"])
    ctx.work_repo = repo
    log("work inputs: %d files, %.0f MiB tar" % (len(files), os.path.getsize(ctx.work_tar) / MiB))


def sqlite_txns(path, journal, n):
    import sqlite3
    db = sqlite3.connect(path, isolation_level=None)
    # closed on failure too: an open database keeps the mount busy at unmount
    try:
        db.execute("PRAGMA journal_mode=%s" % journal)
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        t0 = time.perf_counter()
        for i in range(n):
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (i, os.urandom(100)))
            db.execute("COMMIT")
        return time.perf_counter() - t0
    finally:
        db.close()


def run_work(ctx, t, res, prof):
    """Everyday work, timed in seconds (lower is better)."""
    c = ctx.cfg
    make_work_inputs(ctx)
    d = t.mnt

    def timed(fig, fn):
        prof.begin(fig, t)
        try:
            t0 = time.perf_counter()
            fn()
            res.add(fig, t.name, time.perf_counter() - t0)
        finally:
            prof.end()

    os.makedirs(os.path.join(d, "tree"))
    timed("w_tar", lambda: sh(["tar", "-xf", ctx.work_tar, "-C", os.path.join(d, "tree")]))
    timed("w_git", lambda: sh(["git", "clone", "-q", "--no-hardlinks", ctx.work_repo,
                               os.path.join(d, "clone")]))
    for fig, db, journal, n in (("w_sqlwal", "wal.db", "WAL", c["sql_wal"]),
                                ("w_sqlrb", "rb.db", "DELETE", c["sql_rb"])):
        try:
            res.add(fig, t.name, sqlite_txns(os.path.join(d, db), journal, n))
        except Exception as e:
            # passthrough -o cache=never: no shared mmap, which WAL's -shm needs
            log("%s on %s: %s (no sample)" % (fig, t.name, e))
    timed("w_rm", lambda: sh(["rm", "-rf", os.path.join(d, "tree"), os.path.join(d, "clone")]))
    # last, in the space the tree gave back (regions and tmpfs are sized for it)
    timed("w_dd", lambda: sh(["dd", "if=/dev/zero", "of=" + os.path.join(d, "dd"), "bs=1M",
                              "count=%d" % c["dd_mib"], "conv=fsync", "status=none"]))


def run_mt(ctx, t, res, prof):
    c = ctx.cfg
    d = t.mnt
    size = str(c["mt_file"])

    def fig(name, args):
        prof.begin(name, t)
        try:
            return fio(ctx, args, "mt")
        finally:
            prof.end()

    a = os.path.join(d, "one")
    j = fig("mtwrite1", ["--filename=" + a, "--rw=write", "--bs=1M", "--size=" + size,
                         "--end_fsync=1"])
    w1 = bw_mib(j, "write")
    os.unlink(a)
    j = fig("mtwrite2", ["--directory=" + d, "--numjobs=2", "--rw=write", "--bs=1M",
                         "--size=" + size, "--end_fsync=1"])
    w2 = bw_mib(j, "write")
    drop_caches()
    j = fig("mtread1", ["--filename=" + os.path.join(d, "mt.0.0"), "--rw=read", "--bs=1M",
                        "--size=" + size])
    r1 = bw_mib(j, "read")
    drop_caches()
    j = fig("mtread2", ["--directory=" + d, "--numjobs=2", "--rw=read", "--bs=1M",
                        "--size=" + size])
    r2 = bw_mib(j, "read")
    res.add("mtwrite1", t.name, w1)
    res.add("mtwrite2", t.name, w2)
    res.add("mtwrite_scale", t.name, w2 / w1 if w1 else 0)
    res.add("mtread1", t.name, r1)
    res.add("mtread2", t.name, r2)
    res.add("mtread_scale", t.name, r2 / r1 if r1 else 0)


def run_hole(ctx, t, res, prof):
    c = ctx.cfg
    f = os.path.join(t.mnt, "hole")
    with open(f, "wb") as fh:
        fh.truncate(c["hole"])
    # Warm the daemon's request buffers before the baseline, on every CPU
    # (io_uring serves a request on the issuing CPU's ring, with that ring's
    # buffers), with a hole read of another file: what is counted is growth
    # per GiB read, not a worker buffer's first use (on a kernel without the
    # shared zero page, pvm_no_zero_page, the kernel reading an untouched
    # reply buffer allocates its pages: 1 MiB per ring entry, once).
    warm = os.path.join(t.mnt, "hole-warm")
    with open(warm, "wb") as fh:
        fh.truncate(64 * MiB)
    for cpu in sorted(os.sched_getaffinity(0)):
        fio(ctx, ["--filename=" + warm, "--rw=read", "--bs=1M", "--size=64M",
                  "--cpus_allowed=%d" % cpu], "warm")
    before = rss_kib(t.pid) if t.is_fuse else None
    prof.begin("hole", t)
    try:
        j = fio(ctx, ["--filename=" + f, "--rw=read", "--bs=1M", "--size=%d" % c["hole"]],
                "hole")
    finally:
        prof.end()
    res.add("hole", t.name, bw_mib(j, "read"))
    if before is not None:
        grow = max(0, rss_kib(t.pid) - before)
        res.add("hole_rss", t.name, grow / (c["hole"] / GiB))


def run_meta(ctx, t, res, prof):
    n = ctx.cfg["nfiles"]
    d = os.path.join(t.mnt, "d")
    os.mkdir(d)

    def mb(op, *args):
        prof.begin(op, t)
        m = CpuMeter(t)
        try:
            r = sh([ctx.metabench, op, d] + [str(a) for a in args] +
                   ([str(META_DROP_EVERY)] if args else []))
        finally:
            prof.end()
        _, count, secs = r.stdout.split()
        if int(count) != n:
            raise RuntimeError("%s: %s counted %s, expected %d" % (t.name, op, count, n))
        m.done(res, op, n)
        return int(count) / float(secs)

    res.add("create", t.name, mb("create", n))
    if t.is_fuse:
        # the mount time of a region (or source directory) holding n files;
        # the remount also leaves the kernel's dentry and attribute caches cold
        t.stop()
        drop_caches()
        if ctx.profile == "mount" and t.name == "pmfuse":
            out = os.path.join(ctx.base, "perf-mount.data")
            wrap = ["perf", "record", "-e", "cpu-clock", "-F", str(ctx.perf_freq),
                    "--call-graph", ctx.callgraph, "-o", out, "--"]
            log("profiling mount on %s: %s" % (t.name, " ".join(wrap)))
            secs = t.start(wrapper=wrap)
            ctx.perf_files.append(out)
            res.add("mount", t.name, secs * 1000)
            # perf stops when the daemon exits, at the unmount below
            t.stop()
            t.start()
        else:
            res.add("mount", t.name, t.start() * 1000)
    else:
        drop_caches()
    res.add("stat", t.name, mb("stat", n))
    res.add("readdir", t.name, mb("readdir"))
    res.add("unlink", t.name, mb("unlink", n))


# ------------------------------------------------------------------ scale

SCALE_FULL = dict(regions=[64 * GiB, 1 << 40, 4 << 40], files=[100_000, 1_000_000],
                  falloc=8 * GiB)
SCALE_QUICK = dict(regions=[64 * GiB, 1 << 40], files=[100_000], falloc=2 * GiB)


class ScaleRegion:
    """A sparse region file on /dev/shm, mounted by the daemonizing CLI (what a
    user runs), with timings of mkfs, mount, unclean mount and fsck."""

    def __init__(self, ctx, size):
        self.ctx = ctx
        self.size = size
        self.path = "/dev/shm/pmfuse-bench-scale.%d.img" % os.getpid()
        self.mnt = os.path.join(ctx.base, "scale")
        os.makedirs(self.mnt, exist_ok=True)
        self.env = dict(os.environ, PMEMOBJ_CONF="fallocate.at_create=0")
        _cleanup.append(self.remove)

    def timed(self, cmd, timeout=3600):
        t0 = time.monotonic()
        sh(cmd, env=self.env, timeout=timeout)
        return (time.monotonic() - t0) * 1000

    def mkfs(self):
        self.remove()
        with open(self.path, "wb") as f:
            f.truncate(self.size)
        return self.timed([self.ctx.mkfs, "-q", "-f", self.path])

    def mount(self):
        """ms from exec to a live mount (the CLI returns once mounted)."""
        return self.timed([self.ctx.daemon, self.path, self.mnt])

    def pid(self):
        r = sh(["pgrep", "-f", "^%s %s %s" % (self.ctx.daemon, self.path, self.mnt)],
               check=False)
        return int(r.stdout.split()[0]) if r.stdout.split() else None

    def umount(self):
        if is_mounted(self.mnt):
            sh(["umount", self.mnt], check=False)
        self.wait_free()

    def kill9(self):
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        sh(["umount", "-l", self.mnt], check=False)
        self.wait_free()

    def wait_free(self):
        """The region's lock goes with the old daemon's last reference."""
        import fcntl
        for _ in range(3000):
            with open(self.path, "rb") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return
                except OSError:
                    time.sleep(0.01)
        raise RuntimeError("region still locked 30 s after unmount")

    def fsck(self):
        return self.timed([os.path.join(os.path.dirname(self.ctx.mkfs), "fsck.pmfuse"), "-n",
                           self.path])

    def remove(self):
        if is_mounted(self.mnt):
            sh(["umount", "-l", self.mnt], check=False)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def run_scale(ctx, quick):
    """Capacity and mount cost (issue 15): rows of (figure, value, unit)."""
    cfg = SCALE_QUICK if quick else SCALE_FULL
    rows = []

    def row(fig, v, unit):
        rows.append((fig, v, unit))
        log("  scale: %-48s %10.1f %s" % (fig, v, unit))

    for size in cfg["regions"]:
        r = ScaleRegion(ctx, size)
        tag = "%d GiB" % (size >> 30) if size < (1 << 40) else "%d TiB" % (size >> 40)
        row("mkfs, %s sparse region" % tag, r.mkfs(), "ms")
        row("mount, empty %s region" % tag, r.mount(), "ms")
        pid = r.pid()
        row("daemon RssAnon, empty %s region" % tag, rss_kib(pid, "RssAnon") / 1024, "MiB")
        st = os.statvfs(r.mnt)
        row("statfs size / region, %s" % tag, 100.0 * st.f_blocks * st.f_frsize / size, "%")
        if size == cfg["regions"][0]:
            t0 = time.monotonic()
            fd = os.open(os.path.join(r.mnt, "prealloc"), os.O_CREAT | os.O_RDWR, 0o644)
            try:
                os.posix_fallocate(fd, 0, cfg["falloc"])
            finally:
                os.close(fd)
            row("fallocate, per GiB (%d GiB file)" % (cfg["falloc"] >> 30),
                (time.monotonic() - t0) * 1000 / (cfg["falloc"] >> 30), "ms")
            os.unlink(os.path.join(r.mnt, "prealloc"))
        r.kill9()
        row("mount after kill -9, empty %s region" % tag, r.mount(), "ms")
        r.umount()
        row("fsck -n, empty %s region" % tag, r.fsck(), "ms")
        r.remove()

    for n in cfg["files"]:
        r = ScaleRegion(ctx, 64 * GiB)
        r.mkfs()
        r.mount()
        per_dir = 100_000
        for k in range(0, n, per_dir):
            d = os.path.join(r.mnt, "d%d" % (k // per_dir))
            os.mkdir(d)
            sh([ctx.metabench, "create", d, str(min(per_dir, n - k))], timeout=7200)
        r.umount()
        tag = "%dk files" % (n // 1000)
        row("mount, %s (clean)" % tag, r.mount(), "ms")
        # the first inode used waits for the heap listing a record mount defers
        t0 = time.monotonic()
        os.stat(os.path.join(r.mnt, "d0"))
        row("first stat after that mount, %s" % tag, (time.monotonic() - t0) * 1000, "ms")
        pid = r.pid()
        a0 = rss_kib(pid, "RssAnon")
        sh([ctx.metabench, "stat", os.path.join(r.mnt, "d0"), str(min(per_dir, n))])
        row("daemon RssAnon per 100k cached inodes, %s" % tag,
            (rss_kib(pid, "RssAnon") - a0) / 1024 * 100_000 / min(per_dir, n), "MiB")
        r.kill9()
        row("mount after kill -9, %s" % tag, r.mount(), "ms")
        r.umount()
        row("fsck -n, %s" % tag, r.fsck(), "ms")
        r.remove()
    return rows


def write_scale(ctx, rows, quick, out):
    """Replace (or add) the '## Scale' section of the markdown report."""
    m = machine()
    sec = ["- date: %s; pmfuse commit %s; %d CPUs, kernel %s; load %s" % (
               time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               sh(["git", "-C", REPO, "describe", "--always", "--dirty"],
                  check=False).stdout.strip(), m["nproc"], m["kernel"],
               " ".join(open("/proc/loadavg").read().split()[:3])),
           "- sparse regions on /dev/shm (`PMEMOBJ_CONF=fallocate.at_create=0`), the "
           "daemonizing CLI timed from exec to a live mount; files made with metabench "
           "(100,000 per directory) on a 64 GiB region; one run each%s" % (
               " (--quick: no 4 TiB region, no 1M files)" if quick else ""), "",
           "| figure | value | unit |", "|---|---:|---|"]
    sec += ["| %s | %s | %s |" % (f, ("%.2f" if u == "%" else "%.1f") % v, u) for f, v, u in rows]
    # the title without --quick, so a quick run replaces a full one's section, not a second
    write_section(out, "## Scale (`bench/run --only scale`)", sec)


DAX_FULL = dict(reps=3, file=1 * GiB, secs=5, lmdb=20000)
DAX_QUICK = dict(reps=1, file=256 * MiB, secs=1, lmdb=3000)
LMDB_WRITER = r"""
import lmdb, os, sys, time
env = lmdb.open(sys.argv[1], map_size=256 << 20, writemap=True, sync=True, metasync=True)
val = b"v" * 100
n = int(sys.argv[2])
t0 = time.perf_counter()
for i in range(n):
    with env.begin(write=True) as txn:
        txn.put(b"k%08d" % i, val)
print(n / (time.perf_counter() - t0))
env.close()
"""


def run_dax(ctx, quick):
    """Direct access (issue 18): rows of (figure, {variant: [samples]}, unit,
    (numerator, denominator, bound) or None).  pmfuse runs at cache-line
    granularity (forced on the region file); "direct" is under
    LD_PRELOAD=libpmfuse-dax.so, "fuse mmap" the kernel's mmap of the same
    mount (page cache, msync as FSYNC)."""
    cfg = DAX_QUICK if quick else DAX_FULL
    lib = os.path.join(os.path.dirname(os.path.dirname(ctx.daemon)), "lib", "libpmfuse-dax.so")
    bench = os.path.join(os.path.dirname(ctx.metabench), "daxbench")
    direct_env = dict(os.environ, LD_PRELOAD=lib)
    plain_env = dict(os.environ)
    plain_env.pop("LD_PRELOAD", None)
    figs = {}

    def add(fig, variant, v):
        figs.setdefault(fig, {}).setdefault(variant, []).append(v)
        log("  dax: %-44s %-12s %12.0f" % (fig, variant, v))

    def daxbench(mode, path, env):
        r = sh([bench, mode, path, str(cfg["secs"])], env=env)
        v, _, d = r.stdout.split()
        return float(v), int(d)

    chunk = os.urandom(MiB)
    for rep in range(cfg["reps"]):
        for name in ("pmfuse-cl", "tmpfs", "pt-default"):
            log("rep %d/%d  dax   %s" % (rep + 1, cfg["reps"], name))
            t = Target(name, ctx)
            t.mount()
            try:
                f = os.path.join(t.mnt, "map")
                with open(f, "wb") as fh:
                    for _ in range(cfg["file"] // MiB):
                        fh.write(chunk)
                    os.fsync(fh.fileno())
                variants = ([("direct", direct_env), ("fuse mmap", plain_env)]
                            if name == "pmfuse-cl" else [(name, plain_env)])
                for vname, env in variants:
                    v, d = daxbench("store", f, env)
                    if vname == "direct" and not d:
                        raise RuntimeError("the direct variant did not map directly")
                    add("4 KiB random store + msync, stores/s", vname, v)
                    add("4 KiB random load over a mapped %d MiB file, loads/s"
                        % (cfg["file"] >> 20), vname, daxbench("load", f, env)[0])
                    db = os.path.join(t.mnt, "lmdb-%s" % vname.replace(" ", "-"))
                    os.mkdir(db)
                    r = sh(["/usr/bin/python3", "-c", LMDB_WRITER, db, str(cfg["lmdb"])], env=env,
                           timeout=3600)
                    add("LMDB writemap 100-byte commits/s", vname, float(r.stdout.split()[-1]))
                    shutil.rmtree(db)
                    j = fio(ctx, ["--filename=" + f, "--ioengine=mmap", "--rw=randwrite",
                                  "--bs=4k", "--size=%d" % cfg["file"], "--fsync=1",
                                  "--time_based", "--runtime=%d" % cfg["secs"]],
                            direct=False, env=env)
                    add("fio mmap 4 KiB randwrite, fsync=1, IOPS", vname, j["write"]["iops"])
            finally:
                t.umount()
    lf = "4 KiB random load over a mapped %d MiB file, loads/s" % (cfg["file"] >> 20)
    checks = {
        "4 KiB random store + msync, stores/s": ("direct", "fuse mmap", 10.0),
        lf: ("direct", "tmpfs", 0.8),
        "LMDB writemap 100-byte commits/s": ("direct", "fuse mmap", 3.0),
        "fio mmap 4 KiB randwrite, fsync=1, IOPS": None,
    }
    return [(fig, figs.get(fig, {}), checks[fig]) for fig in checks]


def phase_sections(out):
    """The '## ' sections of the report at out (the phases run with --only),
    which a full run, writing the main table, keeps."""
    text = open(out).read() if os.path.exists(out) else ""
    i = text.find("\n## ")
    return text[i:].strip("\n") if i >= 0 else ""


def write_section(out, title, lines):
    """Replace (or add) the section `title` of the markdown report."""
    text = open(out).read() if os.path.exists(out) else "# pmfuse benchmark\n"
    i = text.find("\n" + title)
    if i >= 0:
        j = text.find("\n## ", i + 1)
        text = text[:i] + (text[j:] if j >= 0 else "")
    with open(out, "w") as f:
        f.write(text.rstrip("\n") + "\n\n" + "\n".join([title, ""] + lines) + "\n")
    print("written: %s (%s)" % (out, title))


def write_variants(out, title, head, variants, rows):
    """A section of figures measured on a few variants: rows of (figure,
    {variant: [samples]}, (numerator, denominator, bound) or None)."""
    m = machine()
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None
    lines = ["- date: %s; pmfuse commit %s; %d CPUs, kernel %s, FUSE over io_uring %s; load %s" % (
                 time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                 sh(["git", "-C", REPO, "describe", "--always", "--dirty"],
                    check=False).stdout.strip(), m["nproc"], m["kernel"], m["fuse_uring"],
                 " ".join(open("/proc/loadavg").read().split()[:3])),
             "- host: %s" % m["host"]] + head + [
             "",
             "| figure | " + " | ".join(variants) + " | target |",
             "|---|" + "---:|" * len(variants) + "---|"]
    passes = fails = 0
    for fig, vals, chk in rows:
        cells = []
        for v in variants:
            xs = vals.get(v, [])
            cells.append("%.0f [%.0f-%.0f]" % (med(xs), min(xs), max(xs)) if xs else "n/a")
        tgt = "-"
        if chk:
            a, b, bound = chk
            if vals.get(a) and vals.get(b):
                r = med(vals[a]) / med(vals[b])
                ok = r >= bound
                passes += ok
                fails += not ok
                tgt = "%s/%s %.2fx (≥%gx) %s" % (a, b, r, bound, "PASS" if ok else "FAIL")
        lines.append("| %s | %s | %s |" % (fig, " | ".join(cells), tgt))
        print("%-56s %s  %s" % (fig, "  ".join(cells), tgt))
    lines += ["", "targets: %d PASS, %d FAIL" % (passes, fails)]
    write_section(out, title, lines)


NFS_FULL = dict(reps=3, file=1 * GiB, v4=256 * MiB)
NFS_QUICK = dict(reps=1, file=256 * MiB, v4=32 * MiB)


def run_nfs(ctx, quick):
    """NFS (issue 19): the same NFS-Ganesha (tests/mount/nfs.py, the example
    config with NFSv3 added) exporting a pmfuse mount and a tmpfs, in one
    run.  libnfs-utils' nfs-cp writes a file from /dev/shm in 1 MiB NFSv3
    WRITEs; nfs-cat reads it back, cold (drop_caches: pmfuse serves READs)
    and warm; NFSv4 writes go through nfs.py's client, whose WRITEs libnfs
    4.0 limits to 3 KiB (32 in flight)."""
    sys.path.insert(0, os.path.join(REPO, "tests", "mount"))
    import nfs
    why = nfs.missing()
    if why:
        raise RuntimeError("NFS phase needs: %s (apt-get install nfs-ganesha "
                           "nfs-ganesha-vfs rpcbind libnfs13 libnfs-utils)" % ", ".join(why))
    cfg = NFS_QUICK if quick else NFS_FULL
    size = cfg["file"]
    src = "/dev/shm/pmfuse-bench-nfs.%d.src" % os.getpid()
    _cleanup.append(lambda: os.path.exists(src) and os.unlink(src))
    with open(src, "wb") as f:
        for _ in range(size // MiB):
            f.write(os.urandom(MiB))
    figs = {}
    fw = "nfs-cp %d MiB write, NFSv3 1 MiB WRITEs, MiB/s" % (size >> 20)
    frc = "nfs-cat %d MiB read, cold (drop_caches), MiB/s" % (size >> 20)
    frw = "nfs-cat %d MiB read, warm, MiB/s" % (size >> 20)
    f4 = "%d MiB write, NFSv4 3 KiB WRITEs x32 in flight, MiB/s" % (cfg["v4"] >> 20)

    def add(fig, variant, seconds, nbytes):
        v = nbytes / MiB / seconds
        figs.setdefault(fig, {}).setdefault(variant, []).append(v)
        log("  nfs: %-52s %-14s %9.0f" % (fig, variant, v))

    def timed(cmd, discard=False):
        t0 = time.perf_counter()
        if discard:     # the data to /dev/null, not into a pipe
            r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, timeout=1800)
            if r.returncode:
                raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode,
                                                           r.stderr))
        else:
            sh(cmd)
        return time.perf_counter() - t0

    for rep in range(cfg["reps"]):
        order = ["pmfuse", "pmfuse-dio", "pmfuse-wb", "tmpfs"]
        order = order[rep % 4:] + order[:rep % 4]
        for name in order:
            log("rep %d/%d  nfs   %s" % (rep + 1, cfg["reps"], name))
            t = Target(name, ctx)
            t.mount()
            work = os.path.join(ctx.base, "ganesha-%s" % name)
            shutil.rmtree(work, ignore_errors=True)
            os.makedirs(work)
            g = nfs.Ganesha(t.mnt, work, protocols="3, 4", reap_fds=False)
            try:
                g.start()
                add(fw, name, timed(["nfs-cp", src, g.url("f", version=3)]), size)
                drop_caches()
                add(frc, name, timed(["nfs-cat", g.url("f", version=3)], True), size)
                add(frw, name, timed(["nfs-cat", g.url("f", version=3)], True), size)
                c = nfs.NfsClient(nfs.ADDR, nfs.PSEUDO, port=g.port)
                try:
                    with open(src, "rb") as fsrc:
                        data = fsrc.read(cfg["v4"])
                    f = c.open("v4", os.O_WRONLY | os.O_CREAT)
                    t0 = time.perf_counter()
                    f.pwrite(data, 0)
                    f.fsync()
                    add(f4, name, time.perf_counter() - t0, len(data))
                    f.close()
                finally:
                    c.close()
            finally:
                g.stop()
                t.umount()
    # the targets: the mount as pmfuse(8) says to export it (-o direct_io)
    checks = {fw: ("pmfuse-dio", "tmpfs", 0.8), frc: ("pmfuse-dio", "tmpfs", 0.8),
              frw: ("pmfuse-dio", "tmpfs", 0.8), f4: None}
    return [(fig, figs.get(fig, {}), checks[fig]) for fig in checks]


# the standalone phases' sections: title, what was measured, variants
SECTIONS = {
    "dax": ("Direct access", [
        "- pmfuse region on /dev/shm at cache-line granularity (PMEM2_FORCE_GRANULARITY="
        "CACHE_LINE, PMEM_IS_PMEM_FORCE=1); direct: under LD_PRELOAD=libpmfuse-dax.so; "
        "fuse mmap: the kernel's map of the same file; median of the repetitions "
        "[min-max]"], ["direct", "fuse mmap", "tmpfs", "pt-default"]),
    "nfs": ("NFS", [
        "- one NFS-Ganesha (the example config, NFSv3 and NFSv4, VFS backend, 127.0.0.1) "
        "exporting pmfuse (region on /dev/shm) as mounted by default, with -o direct_io "
        "(pmfuse-dio) and with -o writeback_cache (pmfuse-wb), and a tmpfs; "
        "MiB/s, median of the repetitions [min-max]; the source file is on /dev/shm, "
        "reads go to /dev/null"], ["pmfuse", "pmfuse-dio", "pmfuse-wb", "tmpfs"]),
}


def write_phase(phase, rows, quick, out):
    title, head, variants = SECTIONS[phase]
    write_variants(out, "## %s (`bench/run --only %s%s`)" % (title, phase,
                                                            " --quick" if quick else ""),
                   head, variants, rows)


RUNNERS = {"data": run_data, "buf": run_buf, "work": run_work, "mt": run_mt, "hole": run_hole, "meta": run_meta}


# ------------------------------------------------------------------ results

class Results:
    def __init__(self):
        self.v = {}

    def add(self, fig, target, value):
        self.v.setdefault(fig, {}).setdefault(target, []).append(float(value))
        vlog("  %-14s %-13s %.2f" % (fig, target, value))

    def med(self, fig, target):
        xs = self.v.get(fig, {}).get(target)
        return statistics.median(xs) if xs else None

    def span(self, fig, target):
        xs = self.v.get(fig, {}).get(target)
        return (min(xs), max(xs)) if xs else None


def fmt(x):
    if x is None:
        return "n/a"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    return "%.2f" % x


def cell(res, fig, target):
    m = res.med(fig, target)
    if m is None:
        return "n/a"
    lo, hi = res.span(fig, target)
    if len(res.v[fig][target]) == 1:
        return fmt(m)
    return "%s (%s–%s)" % (fmt(m), fmt(lo), fmt(hi))


def best_pt(res, fig, hib):
    best = None
    for t in ("pt-default", "pt-writeback", "pt-never"):
        m = res.med(fig, t)
        if m is None:
            continue
        if best is None or (m > best[1] if hib else m < best[1]):
            best = (t, m)
    return best


def checks(res, fig):
    """[(text, ok)] for the targets of one figure (None: not measurable)."""
    phase, label, unit, hib = FIGURES[fig]
    pm = res.med(fig, "pmfuse")
    out = []
    if pm is None:
        return out
    bp = best_pt(res, fig, hib)
    if fig not in NO_PT_TARGET and bp and bp[1]:
        r = pm / bp[1]
        if hib:
            out.append(("≥%.1fx pt" % PT_RATIO, r >= PT_RATIO))
        else:
            out.append(("≤1/%.1f pt" % PT_RATIO, r <= 1 / PT_RATIO))
    if fig in ("seqwrite", "overwrite", "seqread", "b_seqwrite", "b_overwrite", "b_seqread"):
        tm = res.med(fig, "tmpfs")
        if tm:
            out.append(("≥0.4x tmpfs", pm / tm >= 0.4))
    if fig in ("seqwrite", "overwrite"):
        sy = res.med(fig, "pmfuse-sync")
        if sy is not None:
            out.append(("sync ≥0.5x wb (%.2f)" % (sy / pm), sy / pm >= 0.5))
    if fig == "hole":
        dr = res.med("seqread", "pmfuse")
        if dr:
            out.append(("≥ data read (%.2fx)" % (pm / dr), pm >= dr))
    tm = res.med(fig, "tmpfs")
    if tm and fig in WORK_TMPFS:
        out.append(("≤%gx tmpfs" % WORK_TMPFS[fig], pm / tm <= WORK_TMPFS[fig]))
    if fig == "hole_rss":
        out.append(("<1024 KiB/GiB", pm < 1024))
    if fig in ("mtwrite_scale", "mtread_scale"):
        out.append(("≥1.6x", pm >= 1.6))
    return out


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "mem_gib": round(meminfo("MemTotal") / GiB, 1),
        "fuse_uring": fuse_uring(),
        "host": host_settings(),
    }


def _read(path, default="?"):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def host_settings():
    """What the VM does that changes figures between machines of one kind
    (issue 21): how an idle vCPU waits (a wake-up from halt costs tens of
    us: every FUSE round trip that sleeps pays it), whether freed memory goes
    back to the host (free page reporting, DAMON: the first touch of fresh
    pages then faults in the host), and whether the daemon may renice."""
    cmdline = _read("/proc/cmdline", "")
    opt = lambda k: next((w.split("=", 1)[1] for w in cmdline.split() if w.startswith(k + "=")),
                         None)
    idle = _read("/sys/devices/system/cpu/cpuidle/current_driver", "none")
    poll = _read("/sys/module/haltpoll/parameters/guest_halt_poll_ns", None)
    if poll is not None:
        idle += " (guest_halt_poll_ns %s)" % poll
    damon = any(_read("/sys/kernel/mm/damon/admin/kdamonds/%s/state" % k, "") == "on"
                for k in (os.listdir("/sys/kernel/mm/damon/admin/kdamonds")
                          if os.path.isdir("/sys/kernel/mm/damon/admin/kdamonds") else []))
    cap = 0
    for line in _read("/proc/self/status", "").splitlines():
        if line.startswith("CapEff:"):
            cap = int(line.split()[1], 16)
    return "cpuidle %s; page_reporting_order %s; DAMON %s; CAP_SYS_NICE %s" % (
        idle, opt("page_reporting.page_reporting_order") or "default", "on" if damon else "off",
        "yes" if cap >> 23 & 1 else "no")


def fuse_uring():
    """The fuse module's enable_uring: "Y", "N", or "absent" (kernel < 6.14)."""
    try:
        with open("/sys/module/fuse/parameters/enable_uring") as f:
            return f.read().strip()
    except OSError:
        return "absent"


def table(ctx, res):
    head = ["figure", "unit", "pmfuse", "pmfuse sync", "pmfuse wbcache", "tmpfs",
            "best passthrough",
            "pmfuse/best pt", "pmfuse/tmpfs", "targets"]
    rows = []
    for fig in TABLE:
        phase, label, unit, hib = FIGURES[fig]
        if fig not in res.v:
            continue
        if fig == "mount":
            label = "mount time, region with %d files" % ctx.cfg["nfiles"]
        bp = best_pt(res, fig, hib)
        pm = res.med(fig, "pmfuse")
        tm = res.med(fig, "tmpfs")
        bpcell = "n/a"
        rpt = "n/a"
        if bp:
            bpcell = "%s [%s]" % (cell(res, fig, bp[0]), bp[0][3:])
            if pm is not None and bp[1]:
                rpt = "%.2f" % (pm / bp[1])
        rtm = "%.2f" % (pm / tm) if pm is not None and tm else "n/a"
        ch = checks(res, fig)
        tg = "; ".join("%s %s" % (txt, "PASS" if ok else "FAIL") for txt, ok in ch) or "-"
        rows.append([label, unit + (" ↑" if hib else " ↓"), cell(res, fig, "pmfuse"),
                     cell(res, fig, "pmfuse-sync"), cell(res, fig, "pmfuse-wb"),
                     cell(res, fig, "tmpfs"), bpcell, rpt, rtm,
                     tg])
    return head, rows


def render_text(head, rows):
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    line = lambda r: " | ".join(str(x).ljust(w[i]) for i, x in enumerate(r))
    out = [line(head), "-+-".join("-" * x for x in w)]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_md(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(x) for x in r) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------ main

def cleanup_all():
    while _cleanup:
        fn = _cleanup.pop()
        try:
            fn()
        except Exception as e:   # keep cleaning
            log("cleanup: %s" % e)


def main():
    global _log_verbose
    ap = argparse.ArgumentParser(description="pmfuse benchmark (see bench/README.md)")
    ap.add_argument("--build", required=True)
    ap.add_argument("--tools", required=True)
    ap.add_argument("--quick", action="store_true", help="1 repetition, small sizes")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    ap.add_argument("--only", help="comma-separated phases: data,buf,mt,hole,meta,work; or scale "
                    "(alone: mkfs/mount/fsck of big sparse regions and many files); or dax "
                    "(alone: direct maps through libpmfuse-dax); or nfs (alone: "
                    "NFS-Ganesha exporting pmfuse and tmpfs)")
    ap.add_argument("--targets", help="comma-separated targets (default all)")
    ap.add_argument("--profile", metavar="FIGURE",
                    help="perf record the pmfuse daemon during FIGURE (%s)" %
                    ", ".join(k for k in FIGURES if not k.endswith(("_lat", "_scale", "_rss"))))
    ap.add_argument("--profile-target", default="pmfuse", help="pmfuse or pmfuse-sync")
    ap.add_argument("--callgraph", default="fp", help="perf --call-graph mode (fp, dwarf)")
    ap.add_argument("--perf-freq", type=int, default=2999)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a size setting (file, mt_file, hole, wal, runtime, "
                    "nfiles, region, bpi)")
    ap.add_argument("--alt", metavar="PMFUSE_BINARY",
                    help="A/B: also run this pmfuse daemon binary as target pmfuse-alt "
                    "(and pmfuse-alt-sync with --targets), interleaved with pmfuse; "
                    "prints alt/base ratios")
    ap.add_argument("--upto", help="data phase: stop after this figure (seqwrite, "
                    "overwrite, seqread, randread, randwrite) -- for short A/B runs")
    ap.add_argument("--out", help="markdown output (default bench/last-run.md; quick: "
                    "bench/last-quick.md; profile: none)")
    ap.add_argument("--json", help="raw samples as JSON (default BUILD/bench-results.json)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    _log_verbose = a.verbose

    if os.geteuid() != 0:
        sys.exit("bench.py: needs root")
    ctx = Ctx()
    ctx.cfg = dict(QUICK if a.quick else FULL)
    for kv in a.set:
        k, v = kv.split("=", 1)
        if k not in ctx.cfg:
            sys.exit("--set: unknown key %s" % k)
        mult = {"K": 1 << 10, "M": MiB, "G": GiB}.get(v[-1:].upper(), 1)
        ctx.cfg[k] = int(v[:-1] if mult != 1 else v) * mult
    if a.reps:
        ctx.cfg["reps"] = a.reps
    ctx.profile = a.profile
    ctx.upto = a.upto
    ctx.callgraph = a.callgraph
    ctx.perf_freq = a.perf_freq
    ctx.perf_files = []
    phases = a.only.split(",") if a.only else PHASES
    targets = a.targets.split(",") if a.targets else TARGETS
    if a.profile:
        if a.profile not in FIGURES:
            sys.exit("--profile: unknown figure %s" % a.profile)
        phases = [FIGURES[a.profile][0]]
        targets = [a.profile_target]
        ctx.cfg["reps"] = 1
    for ph, ts in PHASE_TARGETS.items():   # pmfuse variants run where pmfuse runs
        for t in targets:
            if t == "pmfuse-cl" and "pmfuse" in ts and t not in ts:
                ts.append(t)
    for p in phases:
        if p not in RUNNERS and p not in ("scale", "dax", "nfs"):
            sys.exit("unknown phase %s" % p)
    if "dax" in phases and phases != ["dax"]:
        sys.exit("--only dax runs alone (it writes the '## Direct access' section of the report)")
    if "nfs" in phases and phases != ["nfs"]:
        sys.exit("--only nfs runs alone (it writes the '## NFS' section of the report)")
    if "scale" in phases and phases != ["scale"]:
        sys.exit("--only scale runs alone (it writes the '## Scale' section of the report)")

    ctx.daemon = os.path.join(a.build, "daemon", "pmfuse")
    ctx.alt_daemon = os.path.abspath(a.alt) if a.alt else None
    if a.alt:
        if not a.targets:
            targets = ["pmfuse", "pmfuse-alt"]
        for ph, ts in PHASE_TARGETS.items():
            for base in ("pmfuse", "pmfuse-sync"):
                if base in ts:
                    ts.append(base.replace("pmfuse", "pmfuse-alt"))
    ctx.mkfs = os.path.join(a.build, "mkfs", "mkfs.pmfuse")
    ctx.passthrough = os.path.join(a.tools, "passthrough_ll")
    ctx.metabench = os.path.join(a.tools, "metabench")
    ctx.base = "/tmp/pmfuse-bench.%d" % os.getpid()
    ctx.region = "/dev/shm/pmfuse-bench.%d.img" % os.getpid()
    os.makedirs(ctx.base)
    _cleanup.append(lambda: shutil.rmtree(ctx.base, ignore_errors=True))

    c = ctx.cfg
    # room for the largest phase's files plus the metadata of nfiles (tmpfs peers)
    ctx.tmpfs_size = max(c["file"] + c["wal"], 2 * c["mt_file"], c["hole"]) + 256 * MiB
    need = max(c["region"], ctx.tmpfs_size) + 512 * MiB
    avail = meminfo("MemAvailable")
    if avail < need:
        log("warning: MemAvailable %.1f GiB < %.1f GiB this run needs at its peak; "
            "use --quick or --set file=... (continuing)" % (avail / GiB, need / GiB))

    tobj = {n: Target(n, ctx) for n in targets}

    def teardown():
        for t in tobj.values():
            try:
                t.umount()
            except Exception as e:
                log("teardown %s: %s" % (t.name, e))
    _cleanup.append(teardown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    atexit.register(cleanup_all)

    if phases[0] in SECTIONS:     # a phase that runs alone, with its own section
        log("pmfuse bench: %s phase (%s)" % (phases[0], "quick" if a.quick else "full"))
        rows = {"dax": run_dax, "nfs": run_nfs}[phases[0]](ctx, a.quick)
        print()
        write_phase(phases[0], rows, a.quick, a.out or os.path.join(HERE, "last-run.md"))
        return 0

    if phases == ["scale"]:
        log("pmfuse bench: scale phase (%s)" % ("quick" if a.quick else "full"))
        rows = run_scale(ctx, a.quick)
        print()
        for fig, v, unit in rows:
            print("%-56s %12.1f %s" % (fig, v, unit))
        write_scale(ctx, rows, a.quick, a.out or os.path.join(HERE, "last-run.md"))
        return 0

    res = Results()
    failures = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    load0 = open("/proc/loadavg").read().split()[:3]
    t_start = time.time()
    log("pmfuse bench: %s, %d repetition(s), phases %s, targets %s" % (
        "quick" if a.quick else "full", c["reps"], ",".join(phases), ",".join(targets)))
    for rep in range(c["reps"]):
        for phase in phases:
            order = [t for t in targets if t in PHASE_TARGETS[phase]]
            k = rep % len(order) if order else 0
            order = order[k:] + order[:k]      # rotate: no target always runs first
            for name in order:
                t = tobj[name]
                log("rep %d/%d  %-5s %-13s (%.0f s)" % (rep + 1, c["reps"], phase, name,
                                                        time.time() - t_start))
                prof = Prof(ctx, a.profile, t)
                try:
                    t.mount()
                    RUNNERS[phase](ctx, t, res, prof)
                except Exception as e:
                    # one failing filesystem must not lose the others' samples
                    log("FAILED: rep %d %s %s: %s" % (rep + 1, phase, name, e))
                    vlog(traceback.format_exc())
                    failures.append("rep %d, %s, %s: %s" % (rep + 1, phase, name,
                                                              str(e).splitlines()[0][:300]))
                    prof.end()
                finally:
                    t.umount()
    elapsed = time.time() - t_start
    load1 = open("/proc/loadavg").read().split()[:3]

    if a.profile:
        for f in ctx.perf_files:
            print("=== perf report (self time, by symbol): %s" % f)
            r = sh(["perf", "report", "-i", f, "--stdio", "--no-children",
                    "--sort", "comm,dso,symbol", "-g", "none", "--percent-limit", "0.5"],
                   check=False)
            print("\n".join(l for l in r.stdout.splitlines() if l.strip())[:6000])
            print("=== perf report (with callers, top): %s" % f)
            r = sh(["perf", "report", "-i", f, "--stdio", "--children", "--sort", "symbol",
                    "-g", "caller,0.5,callee", "--percent-limit", "3"], check=False)
            print("\n".join(r.stdout.splitlines()[:120]))
            keep = os.path.join(a.build, os.path.basename(f))
            shutil.copy(f, keep)
            print("(perf data kept in %s; open with: perf report -i %s)" % (keep, keep))
        return 0

    m = machine()
    if a.alt or "pmfuse-cl" in targets:
        print("\nA/B: %s (alt) against %s (base), medians, same run" % (ctx.alt_daemon,
                                                                        ctx.daemon))
        figs = list(FIGURES) + sorted(k for k in res.v if "@" in k)
        for fig in figs:
            for base, alt in (("pmfuse", "pmfuse-alt"), ("pmfuse-sync", "pmfuse-alt-sync"),
                              ("pmfuse", "pmfuse-cl")):
                b, x = res.med(fig, base), res.med(fig, alt)
                if b is None or x is None:
                    continue
                hib = FIGURES[fig][3] if fig in FIGURES else False
                better = (x / b if hib else b / x) if b and x else 0
                print("  %-14s %-16s base %-22s alt %-22s alt better by %.2fx" % (
                    fig, alt, cell(res, fig, base), cell(res, fig, alt), better))
        jpath = a.json or os.path.join(a.build, "bench-ab.json")
        with open(jpath, "w") as f:
            json.dump({"samples": res.v, "failures": failures}, f, indent=1)
        return 0
    head, rows = table(ctx, res)
    print()
    print(render_text(head, rows))
    fails = sum(r[-1].count("FAIL") for r in rows)
    passes = sum(r[-1].count("PASS") for r in rows)
    for x in failures:
        print("FAILED RUN: " + x)
    print("\ntargets: %d PASS, %d FAIL   (%s, %d rep(s), %.0f s; load %s -> %s)" % (
        passes, fails, "quick" if a.quick else "full", c["reps"], elapsed, " ".join(load0),
        " ".join(load1)))

    raw = {"failures": failures, "started": started, "machine": m, "config": c, "drop_caches": DROP_CACHES["ok"],
           "samples": res.v, "elapsed_s": elapsed, "load": [load0, load1]}
    jpath = a.json or os.path.join(a.build, "bench-results.json")
    with open(jpath, "w") as f:
        json.dump(raw, f, indent=1)

    out = a.out or os.path.join(HERE, "last-quick.md" if a.quick else "last-run.md")
    kept = phase_sections(out)
    # before the report is truncated, or it makes the tree look dirty
    commit = sh(["git", "-C", REPO, "describe", "--always", "--dirty"], check=False).stdout.strip()
    with open(out, "w") as f:
        f.write("# pmfuse benchmark: %s run\n\n" % ("quick" if a.quick else "full"))
        f.write("- date: %s (%.0f s)\n" % (started, elapsed))
        f.write("- machine: %d CPUs (`nproc`), %s, kernel %s, %.1f GiB RAM\n" % (
            m["nproc"], m["cpu"], m["kernel"], m["mem_gib"]))
        f.write("- host settings that move figures (issue 21): %s\n" % m["host"])
        if REGION_IO:
            f.write("- pmfuse file data at page granularity went through %s\n" % REGION_IO)
        f.write("- FUSE over io_uring (fuse.enable_uring): %s -- pmfuse serves its requests "
                "through per-CPU rings when it is Y (passthrough_ll of libfuse 3.14 cannot)\n"
                % m["fuse_uring"])
        f.write("- load average at start / end: %s / %s (other work on the machine "
                "makes absolute numbers noisy; ratios are of medians from interleaved runs)\n"
                % (" ".join(load0), " ".join(load1)))
        f.write("- pmfuse commit: %s\n" % commit)
        f.write("- sizes: seq file %d MiB, 2-job files %d MiB each, hole file %d MiB, "
                "fsync pairs %d x 4 KiB, random I/O %d s, %d files for metadata; "
                "pmfuse region %d MiB (mkfs -i %d) on /dev/shm\n" % (
                    c["file"] // MiB, c["mt_file"] // MiB, c["hole"] // MiB,
                    c["wal"] // 4096, c["runtime"], c["nfiles"], c["region"] // MiB,
                    c["bpi"]))
        f.write("- %d repetition(s), filesystems interleaved per repetition; cells are "
                "median (min–max); ↑ higher is better, ↓ lower is better; "
                "O_DIRECT for all data figures; drop_caches %s\n\n" % (
                    c["reps"], {True: "used", False: "refused", None: "not needed"}[
                        DROP_CACHES["ok"]]))
        f.write(render_md(head, rows))
        f.write("\n\ntargets: %d PASS, %d FAIL\n" % (passes, fails))
        if failures:
            f.write("\nruns that failed (their samples are missing):\n\n")
            f.writelines("- %s\n" % x for x in failures)
        if kept:	# the phases' own sections, from their last runs
            f.write("\n" + kept + "\n")
    print("written: %s, %s" % (out, jpath))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
