#!/usr/bin/env python3
"""pmfuse power-loss crash-state exploration.

For each workload (a short list of file-system operations):

1. mkfs a small region and snapshot it (the "base");
2. run the daemon with the recording shim (shim.c) LD_PRELOADed: every
   msync/fsync/fdatasync/sync_file_range that covers the region is one
   persistence point k = 1, 2, ... and its newly durable pages go to a trace;
   the driver notes, around every operation i, the point count before it
   started (s_i) and after its syscalls returned (c_i);
3. offline, the crash image for point k is the base with the first k trace
   records applied (k = 0 .. N: "just before" and "just after" every call);
   for a sample of points, images where some pages written but not yet
   persisted survived too (the shim's dirty snapshots, a random subset);
4. every distinct image is checked once -- fsck.pmfuse -n exits 0, the daemon
   mounts it (pmemobj recovery runs) and exits 0 at unmount -- and what the
   mount shows is compared with what the workload may show after a crash at
   that point (Node, State, Run.allowed): every operation acknowledged at or
   before k is there, the one in flight is all or nothing, no file shows
   bytes it was never given (every write carries a pattern naming its file,
   write and offset, so a foreign or misplaced byte says where it came from).

What pmfuse promises, and so what is checked (DESIGN 5, README):
  - create, mkdir, rmdir, unlink, rename, link, symlink, setxattr, chmod,
    setting a POSIX ACL (with the mode it implies), chattr, truncate,
    fallocate and punch are durable when they return, and atomic in flight;
  - a write's new size is durable when it returns (the write's transaction
    commits it), and bytes it exposes past the old end of file are its data
    or zeros, never older contents;
  - written data is durable once an fsync/fdatasync of the file returns, or
    at once with -o sync or O_SYNC; until then each byte may be old or new;
  - a write in flight is not atomic (any of its bytes, any size between the
    old and the new -- the kernel splits writes), but never touches bytes
    outside its range.

Two granularities (--grain):
  page  the default: a region file at page granularity, persistence is
        msync; the images are as above (plus sampled unpersisted pages).
  line  ADR pmem: the recording daemon runs with PMEM2_FORCE_GRANULARITY=
        cache_line PMEM_IS_PMEM_FORCE=1, so libpmemobj and libpmem2 persist
        with cache flushes and fences, which the shim interposes (libpmem's
        exported functions, the function pointers libpmem2 hands out).  A
        point is a fence (drain): its record lists the 64-byte lines the
        draining thread had flushed since its last fence.  Images: every
        fence's (all its lines durable), and before it the subsets of its
        lines that may have reached media first -- all of them for up to 8
        lines, else evenly spaced prefixes and suffixes of the flush order
        (--cuts) and --random random ones (seeded: workload, mode, fence,
        --seed).  A line stored and never flushed is in no image, so a
        missing flush shows even when a neighbour on the same page was
        flushed.  The first recording per mode is cross-checked: uprobes
        count every entry into the real libpmem/libpmem2 functions, which
        must equal the shim's count (nothing bypassed it).  The recording
        also lists what the region holds at exit that was never flushed.
File times: a file's mtime must be one observed after an operation that
made it durable (a transaction, -o sync/O_SYNC, fsync), or unknown (not
checked) while an overwrite's in-place times are not yet persisted.

--seeded runs the pmfuse-seeded build with one flush dropped at a time
(core.h seeded_bug()) and requires the explorer to catch each.

Usage: crashtest.py [--grain page|line] [--mode writeback|sync|wbcache|both]
                    [--long | --deep] [--seeded] [-k PATTERN] [--seed N]
                    [--jobs N] [--sample N] [--subset-sample N] [--list]
Environment: PMFUSE_BUILD (meson build dir), PMFUSE_CRASH_KEEP=1 keeps the
images of violations, PMFUSE_CRASH_SEED, PMFUSE_CRASH_JOBS,
PMFUSE_CRASH_SHOW_UNFLUSHED=N prints N never-flushed lines per workload.
Last line: "crash states: N checked (U unique), V violations".
"""

import argparse
import concurrent.futures
import ctypes
import fcntl
import hashlib
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "mount"))
import harness  # noqa: E402
from harness import HarnessError, Mount, fallocate  # noqa: E402

HAVE_STRACE = shutil.which("strace") is not None
SHIM = os.path.join(harness.BUILD, "tests", "crash", "libpmfuse_crash_shim.so")
PAGE = 4096
REGION_SIZE = "32M"
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2
FALLOC_FL_ZERO_RANGE = 0x10

# trace format: see shim.c
REC = struct.Struct("<IIQQQ")
TRACE_MAGIC = 0x52434D50
TRACE_END = 0xFFFFFFFFFFFFFFFF
REC_DIRTY = 16
CONNABORT = "fuse: reading device: Software caused connection abort"
REC_FENCE, REC_UNFLUSHED = 8, 17
LINE = 64
C_POINTS, C_MSYNC_ALL, C_FSYNC_ALL, C_FDATASYNC_ALL, C_SFR_ALL, C_SYNCFS_ALL, \
    C_MSYNC_REGION, C_PAGES, C_DIRTY_RECS, C_MAPS, C_MSYNC_ASYNC, C_READY, \
    C_PMEM_FLUSH, C_PMEM_DRAIN, C_PMEM_PERSIST, C_PMEM_COPY, C_PMEM_MSYNC, \
    C_PMEM2_FLUSH, C_PMEM2_DRAIN, C_PMEM2_PERSIST, C_PMEM2_COPY, C_PMEM2_GETS, \
    C_LINES_FLUSHED, C_LINES_CLEAN, C_FENCES_EMPTY, C_UNFLUSHED, C_UNDRAINED, \
    C_LINE_MSYNC = range(28)
C_WORDS = 28


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------ data

_UNIT = struct.Struct("<BBHI")
PATTERN_TAG = 0xC5


def pattern(fid, wid, off, n):
    """The bytes a write (file fid, write wid) puts at file offsets
    [off, off + n): 8-byte units tagged with file, write and position, so a
    byte found in the wrong file or at the wrong place names its origin."""
    first, last = off // 8, (off + n + 7) // 8
    pack = _UNIT.pack
    raw = b"".join([pack(PATTERN_TAG, fid, wid, q & 0xFFFFFFFF) for q in range(first, last)])
    return raw[off - first * 8:off - first * 8 + n]


def describe_bytes(data, pos):
    """What the 8-byte unit around pos looks like (for violation messages)."""
    q = pos // 8 * 8
    unit = data[q:q + 8]
    if len(unit) == 8 and unit[0] == PATTERN_TAG:
        _, fid, wid, where = _UNIT.unpack(unit)
        place = "" if where == q // 8 else " (written for offset %d)" % (where * 8)
        return "bytes of file #%d write #%d%s" % (fid, wid, place)
    if unit == bytes(len(unit)):
        return "zeros"
    return "unknown bytes %s" % unit.hex()


# ------------------------------------------------------------------ spec

class Node:
    """A file, directory or symlink as the workload expects it.

    Files: new is the content with every write applied; base the content
    if every not-yet-durable write were lost; pend the not-yet-durable
    writes (off, bytes).  After a crash each byte must be base's, new's or
    one of pend's at that offset; the size is len(new) (size changes are
    durable at reply: pmfuse commits them in the write's transaction).
    While a write is in flight the size may be anything from minsize up:
    the kernel splits a write into several requests (at the first page it
    only partly covers), and each commits its own size."""
    __slots__ = ("kind", "fid", "new", "base", "pend", "xattrs", "target", "minsize", "mode",
                 "iflags", "mt")

    def __init__(self, kind, fid=0, target=None):
        self.kind = kind
        self.fid = fid
        self.new = b""
        self.base = b""
        self.pend = []
        self.xattrs = {}
        self.target = target
        self.minsize = None
        self.mode = None        # permission bits, when the workload set them
        self.iflags = 0         # chattr attributes (FS_IOC_GETFLAGS)
        # files: the ops after which the mtime then observed may be what a
        # crash shows (Builder.op, Run.mtimes); empty: not checked
        self.mt = frozenset()

    def copy(self):
        n = Node(self.kind, self.fid, self.target)
        n.minsize, n.mode, n.iflags, n.mt = self.minsize, self.mode, self.iflags, self.mt
        n.new, n.base, n.pend, n.xattrs = self.new, self.base, list(self.pend), dict(self.xattrs)
        return n

    def _clip(self, lo, hi):
        """Forget pending values in [lo, hi): those bytes are now known."""
        out = []
        for off, d in self.pend:
            end = off + len(d)
            if end <= lo or off >= hi:
                out.append((off, d))
                continue
            if off < lo:
                out.append((off, d[:lo - off]))
            if end > hi:
                out.append((hi, d[hi - off:]))
        self.pend = out

    def resize(self, n):
        def fit(b):
            return b[:n] if len(b) >= n else b + bytes(n - len(b))
        self.new, self.base = fit(self.new), fit(self.base)
        self._clip(n, 1 << 62)

    def write(self, off, data, durable):
        end = off + len(data)
        if end > len(self.new):
            self.resize(end)
        self.new = self.new[:off] + data + self.new[end:]
        if durable:
            self.base = self.base[:off] + data + self.base[end:]
            self._clip(off, end)
        else:
            self.pend.append((off, data))

    def sync(self):
        self.base = self.new
        self.pend = []

    def zero(self, off, n):
        end = min(off + n, len(self.new))
        if off >= end:
            return
        z = bytes(end - off)
        self.new = self.new[:off] + z + self.new[end:]
        self.base = self.base[:off] + z + self.base[end:]
        self._clip(off, end)


class State:
    """The namespace: relative path -> node id, and the nodes."""

    def __init__(self):
        self.paths = {}
        self.nodes = {}

    def copy(self):
        s = State()
        s.paths = dict(self.paths)
        s.nodes = {k: v.copy() for k, v in self.nodes.items()}
        return s

    def node(self, path):
        return self.nodes[self.paths[path]]

    def add(self, path, node):
        nid = max(self.nodes, default=0) + 1
        self.nodes[nid] = node
        self.paths[path] = nid

    def remove(self, path):
        """A node without names stays (an open file may still be written)."""
        self.paths.pop(path)

    def rename(self, a, b):
        if b in self.paths:
            self.remove(b)
        moved = {p: n for p, n in self.paths.items() if p == a or p.startswith(a + "/")}
        for p, n in moved.items():
            del self.paths[p]
            self.paths[b + p[len(a):]] = n


def check_file(actual, node):
    """None if actual (bytes) is an allowed crash content of node, else why."""
    new, base = node.new, node.base
    if node.minsize is not None and node.minsize <= len(actual) <= len(new):
        new, base = new[:len(actual)], base[:len(actual)]
    elif len(actual) != len(new):
        return "size %d, expected %d" % (len(actual), len(new))
    for b0 in range(0, len(new), PAGE):
        b1 = min(b0 + PAGE, len(new))
        a = actual[b0:b1]
        if a == new[b0:b1] or a == base[b0:b1]:
            continue
        for p in range(b0, b1):
            v = actual[p]
            if v == new[p] or v == base[p]:
                continue
            if any(off <= p < off + len(d) and d[p - off] == v for off, d in node.pend):
                continue
            return ("byte %d is %s, expected %s (or %s)" %
                    (p, describe_bytes(actual, p), describe_bytes(new, p), describe_bytes(base, p)))
    return None


def compare(observed, st, mtimes=None):
    """Problems of an observed tree against one allowed state (empty: match).
    mtimes[i] is {node id: st_mtime_ns} as observed after op i returned."""
    probs = []
    want, got = set(st.paths), set(observed)
    for p in sorted(want - got):
        probs.append("%s: missing" % p)
    for p in sorted(got - want):
        o = observed[p]
        extra = ""
        if o["kind"] == "f" and o["data"]:
            extra = " holding %s" % describe_bytes(o["data"], 0)
        probs.append("%s: present (%s%s) but should not exist" % (p, o["kind"], extra))
    inos = {}
    for p in sorted(want & got):
        o, n = observed[p], st.node(p)
        if o["kind"] != n.kind:
            probs.append("%s: is a %s, expected a %s" % (p, o["kind"], n.kind))
            continue
        nid = st.paths[p]
        if inos.setdefault(nid, o["ino"]) != o["ino"]:
            probs.append("%s: inode %d, but its hard link has %d" % (p, o["ino"], inos[nid]))
        if o["xattrs"] != n.xattrs:
            probs.append("%s: xattrs %r, expected %r" % (p, sorted(o["xattrs"]), sorted(n.xattrs)))
        if n.mode is not None and o["mode"] != n.mode:
            probs.append("%s: mode %o, expected %o" % (p, o["mode"], n.mode))
        if o.get("iflags", 0) != n.iflags:
            probs.append("%s: chattr flags %#x, expected %#x" % (p, o.get("iflags", 0), n.iflags))
        if n.kind == "f":
            names = sum(1 for v in st.paths.values() if v == nid)
            if o["nlink"] != names:
                probs.append("%s: nlink %d, expected %d" % (p, o["nlink"], names))
            why = check_file(o["data"], n)
            if why:
                probs.append("%s: %s" % (p, why))
            ok = {mtimes[i][nid] for i in n.mt if mtimes and nid in mtimes[i]}
            if ok and o["mtime"] not in ok:
                probs.append("%s: mtime %d, expected one of %s" % (
                    p, o["mtime"], ", ".join(str(t) for t in sorted(ok))))
        elif n.kind == "l" and o["target"] != n.target:
            probs.append("%s: symlink to %r, expected %r" % (p, o["target"], n.target))
    if len(set(inos.values())) != len(inos):
        probs.append("two distinct files share an inode number")
    return probs


# -------------------------------------------------------------- operations

class Op:
    """One workload step: run() does the syscalls, apply() the spec change.
    durable=False asks for the op's state as it may look while in flight
    (data not yet durable; an fsync not yet done)."""
    name = "op"

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __str__(self):
        args = ", ".join("%s=%s" % (k, v if not isinstance(v, bytes) else "<%d bytes>" % len(v))
                         for k, v in self.__dict__.items() if k not in ("data",))
        return "%s(%s)" % (self.name, args)


def _open(w, path, flags):
    return os.open(os.path.join(w.mnt, path), flags)


class Mkdir(Op):
    name = "mkdir"

    def run(self, w):
        os.mkdir(os.path.join(w.mnt, self.path))

    def apply(self, st, w, durable=True):
        st.add(self.path, inherit_acl(st, self.path, Node("d")))


class Create(Op):
    name = "create"
    mtime = "durable"           # a file's times: set in the creating transaction

    def run(self, w):
        os.close(_open(w, self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))

    def apply(self, st, w, durable=True):
        st.add(self.path, inherit_acl(st, self.path, Node("f", fid=w.fid_of(self.path))))


class Write(Op):
    """pwrite of a fresh pattern; fsync/osync make it durable at reply."""
    name = "write"

    def mtime_kind(self, w):
        """Each request of a write sets the times (the kernel may split
        it); an overwrite stores them in place: durable at reply only with
        -o sync, O_SYNC or an fsync, else unknown until the next fsync."""
        sync = w.sync_mode or getattr(self, "osync", False) or getattr(self, "fsync", None)
        return "steps-durable" if sync else "unknown"

    def prepare(self, st, w):
        n = st.nodes[w.fd_nodes[self.fd]] if getattr(self, "fd", None) else st.node(self.path)
        self.wid = w.next_wid()
        self.data = pattern(n.fid, self.wid, self.off, self.len)

    def run(self, w):
        flags = os.O_WRONLY | (os.O_SYNC if getattr(self, "osync", False) else 0)
        fd = w.fds[self.fd] if getattr(self, "fd", None) else _open(w, self.path, flags)
        try:
            harness.pwrite_all(fd, self.data, self.off)
            if getattr(self, "fsync", None) == "fsync":
                os.fsync(fd)
            elif getattr(self, "fsync", None) == "fdatasync":
                os.fdatasync(fd)
        finally:
            if not getattr(self, "fd", None):
                os.close(fd)

    def apply(self, st, w, durable=True):
        n = st.nodes[w.fd_nodes[self.fd]] if getattr(self, "fd", None) else st.node(self.path)
        sync_now = w.sync_mode or getattr(self, "osync", False)
        n.write(self.off, self.data, durable and sync_now)
        if durable and getattr(self, "fsync", None):
            n.sync()

    def flight_states(self, before, w):
        """In flight, a write is not atomic: any of its bytes may be there,
        and the size anything from the old one to the new one."""
        grown = before.copy()
        n = grown.nodes[w.fd_nodes[self.fd]] if getattr(self, "fd", None) else grown.node(self.path)
        old = len(n.new)
        self.apply(grown, w, durable=False)
        n.minsize = old
        return [before, grown]


MAP_STORE = r"""
import mmap, os, sys
path, off, fsync = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
data = sys.stdin.buffer.read()
fd = os.open(path, os.O_RDWR)
m = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED)
m[off:off + len(data)] = data
if fsync:
    os.fsync(fd)
m.close()
os.close(fd)
"""


class MapWrite(Op):
    """Stores through a direct map (a child under libpmfuse-dax) inside the
    file's size: holes and unwritten pages are allocated by the daemon's
    write faults (a transaction each), pages the map already shows are
    marked dirty by the library alone; fsync of the file flushes them."""
    name = "map_write"

    def mtime_kind(self, w):
        """Each fault's transaction sets the times; fsync persists the last."""
        return "steps-durable" if self.fsync else "unknown"

    def prepare(self, st, w):
        n = st.node(self.path)
        self.wid = w.next_wid()
        self.data = pattern(n.fid, self.wid, self.off, self.len)

    def run(self, w):
        env = harness.dax_preload_env()
        r = subprocess.run([sys.executable, "-c", MAP_STORE, os.path.join(w.mnt, self.path),
                            str(self.off), "1" if self.fsync else "0"], input=self.data,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("map_write: %s" % r.stderr.decode(errors="replace")[-2000:])

    def apply(self, st, w, durable=True):
        n = st.node(self.path)
        n.write(self.off, self.data, False)     # stores: durable at fsync, -o sync or not
        if durable and self.fsync:
            n.sync()

    def flight_states(self, before, w):
        """Stores in flight: any of their bytes may be there (the size never moves)."""
        after = before.copy()
        self.apply(after, w, durable=False)
        return [before, after]


class Fsync(Op):
    name = "fsync"
    mtime = "durable"

    def run(self, w):
        fd = w.fds[self.fd] if getattr(self, "fd", None) else _open(w, self.path, os.O_RDONLY)
        try:
            (os.fdatasync if getattr(self, "data_only", False) else os.fsync)(fd)
        finally:
            if not getattr(self, "fd", None):
                os.close(fd)

    def apply(self, st, w, durable=True):
        if durable:
            n = st.nodes[w.fd_nodes[self.fd]] if getattr(self, "fd", None) else st.node(self.path)
            n.sync()


class Truncate(Op):
    name = "truncate"
    mtime = "durable"

    def run(self, w):
        os.truncate(os.path.join(w.mnt, self.path), self.size)

    def apply(self, st, w, durable=True):
        st.node(self.path).resize(self.size)


class Fallocate(Op):
    """mode 0, KEEP_SIZE or PUNCH_HOLE|KEEP_SIZE."""
    name = "fallocate"
    mtime = "durable"

    def run(self, w):
        fd = _open(w, self.path, os.O_WRONLY)
        try:
            fallocate(fd, self.mode, self.off, self.len)
        finally:
            os.close(fd)

    def apply(self, st, w, durable=True):
        n = st.node(self.path)
        if self.mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            n.zero(self.off, self.len)
        if self.mode & FALLOC_FL_PUNCH_HOLE:
            pass
        elif not self.mode & FALLOC_FL_KEEP_SIZE and self.off + self.len > len(n.new):
            n.resize(self.off + self.len)


class Rename(Op):
    name = "rename"

    def run(self, w):
        os.rename(os.path.join(w.mnt, self.src), os.path.join(w.mnt, self.dst))

    def apply(self, st, w, durable=True):
        st.rename(self.src, self.dst)


class Link(Op):
    name = "link"

    def run(self, w):
        os.link(os.path.join(w.mnt, self.src), os.path.join(w.mnt, self.dst))

    def apply(self, st, w, durable=True):
        st.paths[self.dst] = st.paths[self.src]


class Unlink(Op):
    name = "unlink"

    def run(self, w):
        os.unlink(os.path.join(w.mnt, self.path))

    def apply(self, st, w, durable=True):
        st.remove(self.path)


class Rmdir(Op):
    name = "rmdir"

    def run(self, w):
        os.rmdir(os.path.join(w.mnt, self.path))

    def apply(self, st, w, durable=True):
        st.remove(self.path)


class Symlink(Op):
    name = "symlink"

    def run(self, w):
        os.symlink(self.target, os.path.join(w.mnt, self.path))

    def apply(self, st, w, durable=True):
        st.add(self.path, Node("l", target=self.target))


class Setxattr(Op):
    """value None removes the attribute."""
    name = "setxattr"

    def run(self, w):
        p = os.path.join(w.mnt, self.path)
        if self.value is None:
            os.removexattr(p, self.attr, follow_symlinks=False)
        else:
            os.setxattr(p, self.attr, self.value, follow_symlinks=False)

    def apply(self, st, w, durable=True):
        x = st.node(self.path).xattrs
        if self.value is None:
            x.pop(self.attr, None)
        else:
            x[self.attr] = self.value


# POSIX ACLs (system.posix_acl_*: version 2, then (tag, perm, id) entries):
# the daemon keeps them and the mode in step, in the same transaction
ACL_ACCESS, ACL_DEFAULT = "system.posix_acl_access", "system.posix_acl_default"
A_UO, A_U, A_GO, A_G, A_MASK, A_OTH = 1, 2, 4, 8, 0x10, 0x20


def acl(*entries):
    return struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", e[0], e[1], e[2] if len(e) > 2 else 0xFFFFFFFF) for e in entries)


def acl_list(value):
    return [list(struct.unpack_from("<HHI", value, off)) for off in range(4, len(value), 8)]


def acl_pack(entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl_equiv_mode(value):
    """(permission bits, whether the ACL says more than they do)."""
    bits, more = 0, False
    for tag, perm, _ in acl_list(value):
        if tag == A_UO:
            bits |= perm << 6
        elif tag == A_GO:
            bits |= perm << 3
        elif tag == A_OTH:
            bits |= perm
        elif tag == A_MASK:
            bits = (bits & ~0o070) | perm << 3
            more = True
        else:
            more = True
    return bits, more


def acl_chmod(value, mode):
    es = acl_list(value)
    has_mask = any(e[0] == A_MASK for e in es)
    for e in es:
        if e[0] == A_UO:
            e[1] = (mode >> 6) & 7
        elif e[0] == A_OTH:
            e[1] = mode & 7
        elif e[0] == (A_MASK if has_mask else A_GO):
            e[1] = (mode >> 3) & 7
    return acl_pack(es)


def inherit_acl(st, path, node):
    """A new file or directory under a default ACL (posix_acl_create): created
    with mode 0777 (os.open's and os.mkdir's default), masked by the ACL."""
    parent = os.path.dirname(path)
    if not parent or ACL_DEFAULT not in st.node(parent).xattrs:
        return node
    default = st.node(parent).xattrs[ACL_DEFAULT]
    es, mode = acl_list(default), 0o777
    has_mask = any(e[0] == A_MASK for e in es)
    for e in es:
        if e[0] == A_UO:
            e[1] &= (mode >> 6) & 7
            mode &= (e[1] << 6) | ~0o700
        elif e[0] == A_OTH:
            e[1] &= mode & 7
            mode &= e[1] | ~0o007
    for e in es:
        if e[0] == (A_MASK if has_mask else A_GO):
            e[1] &= (mode >> 3) & 7
            mode &= (e[1] << 3) | ~0o070
    node.mode = mode & 0o777
    if has_mask or any(e[0] in (A_U, A_G) for e in es):
        node.xattrs[ACL_ACCESS] = acl_pack(es)
    if node.kind == "d":
        node.xattrs[ACL_DEFAULT] = default
    return node


class Chmod(Op):
    name = "chmod"

    def run(self, w):
        os.chmod(os.path.join(w.mnt, self.path), self.mode)

    def apply(self, st, w, durable=True):
        n = st.node(self.path)
        n.mode = self.mode
        if ACL_ACCESS in n.xattrs:
            n.xattrs[ACL_ACCESS] = acl_chmod(n.xattrs[ACL_ACCESS], self.mode)


class SetAcl(Op):
    """An access ACL sets the mode's permission bits and is stored only if
    it says more than they do; a default ACL is stored as it is."""
    name = "setacl"

    def run(self, w):
        os.setxattr(os.path.join(w.mnt, self.path), self.attr, self.value)

    def apply(self, st, w, durable=True):
        n = st.node(self.path)
        if self.attr == ACL_DEFAULT:
            n.xattrs[ACL_DEFAULT] = self.value
            return
        bits, more = acl_equiv_mode(self.value)
        n.mode = (n.mode & ~0o777) | bits
        if more:
            n.xattrs[ACL_ACCESS] = self.value
        else:
            n.xattrs.pop(ACL_ACCESS, None)


_libc = ctypes.CDLL(None, use_errno=True)
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS = 0x80086601, 0x40086602
FS_IMMUTABLE_FL, FS_APPEND_FL, FS_NODUMP_FL, FS_NOATIME_FL = 0x10, 0x20, 0x40, 0x80


def get_iflags(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("<i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 4))[0]
    finally:
        os.close(fd)


class Chattr(Op):
    """FS_IOC_SETFLAGS: one transaction, durable when it returns."""
    name = "chattr"

    def run(self, w):
        fd = os.open(os.path.join(w.mnt, self.path), os.O_RDONLY | os.O_NONBLOCK)
        try:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("<i", self.flags))
        finally:
            os.close(fd)

    def apply(self, st, w, durable=True):
        st.node(self.path).iflags = self.flags


class TmpfileLink(Op):
    """O_TMPFILE, a write and an fsync of it, then linkat(AT_EMPTY_PATH): the
    file appears with all its data or not at all (before the link it is an
    orphan the next mount reclaims)."""
    name = "tmpfile+link"
    mtime = "durable"

    def prepare(self, st, w):
        self.fid = w.fid_of(self.path)
        self.data = pattern(self.fid, w.next_wid(), 0, self.len)

    def run(self, w):
        d = os.path.join(w.mnt, os.path.dirname(self.path))
        fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o644)
        try:
            harness.pwrite_all(fd, self.data, 0)
            os.fsync(fd)
            if _libc.linkat(fd, b"", -100, os.fsencode(os.path.join(w.mnt, self.path)),
                            0x1000) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e), self.path)
        finally:
            os.close(fd)

    def apply(self, st, w, durable=True):
        n = Node("f", fid=self.fid)
        n.new = n.base = self.data
        st.add(self.path, n)


class Open(Op):
    """Keep a descriptor (name fd) across later ops, e.g. past an unlink."""
    name = "open"

    def run(self, w):
        w.fds[self.fd] = _open(w, self.path, os.O_RDWR)

    def apply(self, st, w, durable=True):
        w.fd_nodes[self.fd] = st.paths[self.path]


class Close(Op):
    name = "close"

    def run(self, w):
        os.close(w.fds.pop(self.fd))

    def apply(self, st, w, durable=True):
        pass


# ---------------------------------------------------------------- workloads

def wl_create(b):
    b.op(Mkdir(path="d"))
    b.op(Create(path="a"))
    b.op(Create(path="d/b"))
    b.op(Create(path="d/long-name-" + "x" * 60))


def wl_write_small(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=100, fsync="fsync"))
    b.op(Write(path="f", off=50, len=100, fsync="fsync"))
    b.op(Write(path="f", off=20, len=10))


def wl_write_large(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=256 << 10, fsync="fsync"))
    b.op(Write(path="f", off=100 << 10, len=64 << 10, fsync="fdatasync"))
    b.op(Write(path="f", off=0, len=300 << 10))


def wl_write_unaligned(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=3000, len=5000, fsync="fsync"))
    b.op(Write(path="f", off=4090, len=7000, fsync="fsync"))
    b.op(Write(path="f", off=12345, len=3))
    b.op(Fsync(path="f"))


def wl_append(b):
    b.op(Create(path="f"))
    for i in range(3):
        b.op(Write(path="f", off=i * 3000, len=3000, fsync="fsync" if i != 1 else None))
    b.op(Write(path="f", off=9000, len=5000, osync=True))


def wl_overwrite(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=64 << 10, fsync="fsync"))
    b.op(Write(path="f", off=1000, len=10000))
    b.op(Write(path="f", off=5000, len=10000))
    b.op(Fsync(path="f", data_only=True))
    b.op(Write(path="f", off=30000, len=20000))


def wl_truncate(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=40000, fsync="fsync"))
    b.op(Truncate(path="f", size=10000))
    b.op(Truncate(path="f", size=50000))
    b.op(Truncate(path="f", size=0))
    b.op(Write(path="f", off=0, len=6000, fsync="fsync"))


def wl_truncate_append(b):
    """Shrink to an unaligned size, then grow by writing: the bytes the
    growth exposes must be the new data or zeros, never what was cut off."""
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=8192, fsync="fsync"))
    b.op(Truncate(path="f", size=5000))
    b.op(Write(path="f", off=5000, len=2000))
    b.op(Truncate(path="f", size=3000))
    b.op(Truncate(path="f", size=9000))


def wl_punch(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=64 << 10, fsync="fsync"))
    b.op(Fallocate(path="f", mode=FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off=4096, len=12288))
    b.op(Fallocate(path="f", mode=FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off=20000, len=20000))
    b.op(Write(path="f", off=8000, len=1000, fsync="fsync"))


def wl_fallocate(b):
    b.op(Create(path="f"))
    b.op(Fallocate(path="f", mode=0, off=0, len=64 << 10))
    b.op(Fallocate(path="f", mode=FALLOC_FL_KEEP_SIZE, off=64 << 10, len=64 << 10))
    b.op(Write(path="f", off=60000, len=10000, fsync="fsync"))
    b.op(Fallocate(path="f", mode=0, off=100000, len=5000))


def wl_unwritten(b):
    """Unwritten blocks that held this file's old data (ZERO_RANGE frees the
    blocks and reserves the same ones again, unwritten): a write into them,
    fsync'd or not, must never let the old bytes show; nor may the blocks
    another file gave back that a preallocation picks up."""
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=96 << 10, fsync="fsync"))
    b.op(Fallocate(path="f", mode=FALLOC_FL_ZERO_RANGE, off=8192, len=90000 - 8192))
    b.op(Write(path="f", off=20000, len=3000))
    b.op(Write(path="f", off=70000, len=9000, fsync="fsync"))
    b.op(Fallocate(path="f", mode=FALLOC_FL_KEEP_SIZE, off=96 << 10, len=64 << 10))
    b.op(Write(path="f", off=130000, len=100, fsync="fsync"))


def wl_zero_range(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=32 << 10, fsync="fsync"))
    b.op(Fallocate(path="f", mode=FALLOC_FL_ZERO_RANGE, off=1000, len=20000))
    b.op(Fallocate(path="f", mode=FALLOC_FL_ZERO_RANGE, off=30000, len=10000))


def wl_rename(b):
    b.op(Mkdir(path="d1"))
    b.op(Mkdir(path="d2"))
    b.op(Create(path="a"))
    b.op(Write(path="a", off=0, len=5000, fsync="fsync"))
    b.op(Create(path="c"))
    b.op(Write(path="c", off=0, len=7000, fsync="fsync"))
    b.op(Rename(src="a", dst="b"))
    b.op(Rename(src="b", dst="c"))            # over an existing file
    b.op(Rename(src="c", dst="d1/x"))         # across directories
    b.op(Rename(src="d1/x", dst="d2/y"))
    b.op(Rename(src="d1", dst="d2/sub"))      # a directory, into another


def wl_link(b):
    b.op(Mkdir(path="d"))
    b.op(Create(path="a"))
    b.op(Write(path="a", off=0, len=3000, fsync="fsync"))
    b.op(Link(src="a", dst="b"))
    b.op(Unlink(path="a"))
    b.op(Link(src="b", dst="d/c"))
    b.op(Unlink(path="b"))


def wl_unlink_open(b):
    b.op(Create(path="f"))
    b.op(Open(path="f", fd="h"))
    b.op(Write(path="f", fd="h", off=0, len=20000, fsync="fsync"))
    b.op(Unlink(path="f"))
    b.op(Write(path="f", fd="h", off=20000, len=20000, fsync="fsync"))
    b.op(Create(path="g"))
    b.op(Write(path="g", off=0, len=40000, fsync="fsync"))
    b.op(Close(fd="h"))


def wl_reclaim(b):
    """Power lost anywhere in a reclaim: started by the last close (with
    dirty pages nobody will write back) and by the kernel's FORGET."""
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=40000, fsync="fsync"))
    b.op(Open(path="f", fd="h"))
    b.op(Write(path="f", fd="h", off=4096, len=8192))
    b.op(Unlink(path="f"))
    b.op(Close(fd="h"))
    b.op(Create(path="g"))
    b.op(Write(path="g", off=0, len=20000, fsync="fsync"))
    b.op(Unlink(path="g"))
    b.op(Create(path="k"))


def wl_grow_shrink(b):
    """More data than run 0 holds (2 MiB of the 32 MiB region): the data
    area grows by a piece (its allocation and table entry, one transaction)
    and gives it back when the file goes (format.h)."""
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=3 << 20, fsync="fsync"))
    b.op(Create(path="g"))
    b.op(Write(path="g", off=0, len=20000, fsync="fsync"))
    b.op(Unlink(path="f"))
    b.op(Write(path="g", off=20000, len=8192, fsync="fsync"))


def wl_mkdir_rmdir(b):
    b.op(Mkdir(path="a"))
    b.op(Mkdir(path="a/b"))
    b.op(Create(path="a/b/f"))
    b.op(Unlink(path="a/b/f"))
    b.op(Rmdir(path="a/b"))
    b.op(Rmdir(path="a"))


def wl_xattr(b):
    b.op(Create(path="f"))
    b.op(Setxattr(path="f", attr="user.a", value=b"one"))
    b.op(Setxattr(path="f", attr="user.a", value=b"two-two"))
    b.op(Setxattr(path="f", attr="user.big", value=bytes(range(256)) * 12))
    b.op(Setxattr(path="f", attr="user.a", value=None))
    b.op(Mkdir(path="d"))
    b.op(Setxattr(path="d", attr="user.dir", value=b"x" * 100))


def wl_acl(b):
    b.op(Create(path="f"))
    b.op(Chmod(path="f", mode=0o640))
    b.op(SetAcl(path="f", attr=ACL_ACCESS,
                value=acl((A_UO, 7), (A_U, 6, 1000), (A_GO, 4), (A_MASK, 6), (A_OTH, 0))))
    b.op(Chmod(path="f", mode=0o604))           # rewrites the ACL's mask in the same transaction
    b.op(SetAcl(path="f", attr=ACL_ACCESS, value=acl((A_UO, 6), (A_GO, 4), (A_OTH, 4))))
    b.op(Mkdir(path="d"))
    b.op(Chmod(path="d", mode=0o755))
    b.op(SetAcl(path="d", attr=ACL_DEFAULT,
                value=acl((A_UO, 7), (A_U, 7, 1001), (A_GO, 5), (A_MASK, 7), (A_OTH, 0))))
    b.op(Create(path="d/g"))                    # inherits an access ACL
    b.op(Mkdir(path="d/sub"))                   # and a directory the default ACL too
    b.op(Create(path="d/sub/h"))


def wl_chattr(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=5000, fsync="fsync"))
    b.op(Chattr(path="f", flags=FS_IMMUTABLE_FL))
    b.op(Chattr(path="f", flags=0))
    b.op(Write(path="f", off=5000, len=3000, fsync="fsync"))
    b.op(Chattr(path="f", flags=FS_APPEND_FL | FS_NODUMP_FL))
    b.op(Chattr(path="f", flags=FS_NOATIME_FL))
    b.op(Mkdir(path="d"))
    b.op(Chattr(path="d", flags=FS_APPEND_FL))
    b.op(Create(path="d/g"))
    b.op(Chattr(path="d", flags=0))


def wl_tmpfile(b):
    b.op(Mkdir(path="d"))
    b.op(TmpfileLink(path="d/t", len=20000))
    b.op(TmpfileLink(path="big", len=3 << 20))
    b.op(Unlink(path="d/t"))


def wl_symlink(b):
    b.op(Symlink(path="s", target="short/target"))
    b.op(Symlink(path="l", target="/" + "long-component/" * 10 + "end"))
    b.op(Rename(src="s", dst="s2"))
    b.op(Unlink(path="l"))


def wl_fsync(b):
    b.op(Create(path="f"))
    b.op(Write(path="f", off=0, len=20000))
    b.op(Fsync(path="f"))
    b.op(Write(path="f", off=4096, len=4096))
    b.op(Write(path="f", off=12000, len=100))
    b.op(Fsync(path="f", data_only=True))


def wl_mixed_replace(b):
    """The atomic-replace idiom: write a temp file, fsync, rename over."""
    b.op(Create(path="cfg"))
    b.op(Write(path="cfg", off=0, len=6000, fsync="fsync"))
    for i in range(2):
        b.op(Create(path="cfg.tmp"))
        b.op(Write(path="cfg.tmp", off=0, len=5000 + 3000 * i, fsync="fsync"))
        b.op(Rename(src="cfg.tmp", dst="cfg"))


def wl_mixed_tree(b):
    b.op(Mkdir(path="p"))
    b.op(Create(path="p/a"))
    b.op(Write(path="p/a", off=0, len=10000, fsync="fsync"))
    b.op(Link(src="p/a", dst="p/a2"))
    b.op(Mkdir(path="p/q"))
    b.op(Rename(src="p/a", dst="p/q/a"))
    b.op(Truncate(path="p/a2", size=4000))
    b.op(Setxattr(path="p/q", attr="user.t", value=b"tag"))
    b.op(Unlink(path="p/a2"))
    b.op(Write(path="p/q/a", off=2000, len=9000, osync=True))
    b.op(Rename(src="p/q", dst="q"))


def wl_map_write(b):
    """Direct-access stores: the daemon's fault allocations, the library's
    dirty marks, fsync from the mapping process."""
    b.op(Create(path="f"))
    b.op(Truncate(path="f", size=40000))
    b.op(MapWrite(path="f", off=1000, len=9000, fsync=True))
    b.op(Write(path="f", off=20000, len=8192, fsync="fsync"))
    b.op(MapWrite(path="f", off=20500, len=3000, fsync=True))
    b.op(MapWrite(path="f", off=30000, len=5000, fsync=False))
    b.op(Fsync(path="f"))


def wl_random(seed, nops):
    """A random mix (crash-long): files and directories under a few names."""
    def build(b):
        rng = random.Random(seed)
        for _ in range(nops):
            st = b.state
            files = [p for p, n in st.paths.items() if st.nodes[n].kind == "f"]
            dirs = [""] + [p for p, n in st.paths.items() if st.nodes[n].kind == "d"]
            name = os.path.join(rng.choice(dirs), "n%d" % rng.randrange(6)).lstrip("/")
            free = name not in st.paths
            choice = rng.choice(["create", "write", "write", "fsync", "truncate", "punch",
                                 "rename", "link", "unlink", "mkdir", "xattr"])
            if choice == "create" and free:
                b.op(Create(path=name))
            elif choice == "mkdir" and free:
                b.op(Mkdir(path=name))
            elif not files:
                continue
            elif choice == "write":
                f = rng.choice(files)
                b.op(Write(path=f, off=rng.randrange(0, 60000), len=rng.randrange(1, 30000),
                           fsync=rng.choice([None, "fsync", "fdatasync"])))
            elif choice == "fsync":
                b.op(Fsync(path=rng.choice(files)))
            elif choice == "truncate":
                b.op(Truncate(path=rng.choice(files), size=rng.randrange(0, 70000)))
            elif choice == "punch":
                b.op(Fallocate(path=rng.choice(files), mode=3,
                               off=rng.randrange(0, 50000), len=rng.randrange(1, 30000)))
            elif choice == "rename" and (free or st.nodes[st.paths[name]].kind == "f"):
                src = rng.choice(files)
                if st.paths[src] != st.paths.get(name):    # not two names of one file
                    b.op(Rename(src=src, dst=name))
            elif choice == "link" and free:
                b.op(Link(src=rng.choice(files), dst=name))
            elif choice == "unlink":
                b.op(Unlink(path=rng.choice(files)))
            elif choice == "xattr":
                f, attr = rng.choice(files), "user.x%d" % rng.randrange(3)
                value = b"v" * rng.randrange(1, 500)
                if attr in st.node(f).xattrs and rng.random() < 0.4:
                    value = None
                b.op(Setxattr(path=f, attr=attr, value=value))
    return build


WORKLOADS = [
    ("create", wl_create), ("write_small", wl_write_small), ("write_large", wl_write_large),
    ("write_unaligned", wl_write_unaligned), ("append", wl_append),
    ("overwrite", wl_overwrite), ("truncate", wl_truncate),
    ("truncate_append", wl_truncate_append), ("punch", wl_punch),
    ("fallocate", wl_fallocate), ("unwritten", wl_unwritten), ("zero_range", wl_zero_range),
    ("rename", wl_rename),
    ("link", wl_link),
    ("unlink_open", wl_unlink_open), ("reclaim", wl_reclaim), ("mkdir_rmdir", wl_mkdir_rmdir),
    ("xattr", wl_xattr), ("acl", wl_acl), ("chattr", wl_chattr),
    ("tmpfile", wl_tmpfile),
    ("symlink", wl_symlink), ("fsync", wl_fsync), ("mixed_replace", wl_mixed_replace),
    ("mixed_tree", wl_mixed_tree), ("map_write", wl_map_write),
]


# Only with --long (crash-long): each costs minutes.  Last results (writeback):
#   grow_shrink, 10 MiB write: 609 points, 728 states (561 unique), 0 violations
#   (2026-12-05); as here (3 MiB): 496 states (358 unique), 0 violations, 57 s.
LONG_WORKLOADS = [("grow_shrink", wl_grow_shrink)]

# What -o sync changes: writes left unsynced, overwrites, writes through a
# kept descriptor, writes past a shrunk end of file.
# The daemon's options per mode.  wbcache: the kernel's writeback cache in
# front of it (-o writeback_cache): writes reach the daemon at write-back,
# fsync or close; the oracle is writeback's (durable once fsync returns).
MODE_OPTS = {"writeback": [], "sync": ["sync"], "wbcache": ["writeback_cache"]}

SYNC_WORKLOADS = {"write_small", "write_unaligned", "append", "overwrite", "truncate_append",
                  "unlink_open", "fsync", "mixed_tree", "map_write"}

# Violations found and reported but not fixed yet: still run and printed in
# full, counted apart; a listed workload that stops failing fails the run (so
# the entry is removed with the fix).
KNOWN_VIOLATIONS = {
    # name: why -- a workload whose violations are known and not fixed yet;
    # it still runs, and the run fails once it passes (remove the entry then)
}


class Builder:
    """Turns a workload function into ops, with the spec state after each."""

    def __init__(self, sync_mode, check_mtime=True):
        self.sync_mode = sync_mode
        self.check_mtime = check_mtime
        self.state = State()
        self.ops = []
        self.after = []          # state after op i, acknowledged
        self.inflight = []       # states op i may leave while in flight
        self.fds = {}
        self.fd_nodes = {}
        self._fid = 0
        self._wid = 0
        self.mnt = None

    def fid_of(self, path):
        """A new file id per created file (its bytes carry it)."""
        self._fid += 1
        return self._fid

    def next_wid(self):
        self._wid += 1
        return self._wid

    def _mtime(self, o, flight, after):
        """Which observed mtimes a crash may show for the file op i changes
        (Node.mt; empty: not checked).  "durable": one transaction, so
        after op i only the mtime then observed, in flight that or the one
        before.  "steps-durable": several requests or faults each set it,
        the last durable at reply: after op i as "durable", in flight
        unknown.  "unknown": an overwrite's times not yet persisted (or an
        intermediate one that was): unknown until the next durable op."""
        kind = o.mtime_kind(self) if hasattr(o, "mtime_kind") else getattr(o, "mtime", None)
        if kind is None or not self.check_mtime:
            return
        i = len(self.ops)
        nid = self.fd_nodes[o.fd] if getattr(o, "fd", None) else after.paths[o.path]
        for st in flight[1:]:
            n = st.nodes.get(nid)
            if n is not None:
                n.mt = n.mt | {i} if kind == "durable" and n.mt else frozenset()
        after.nodes[nid].mt = frozenset() if kind == "unknown" else frozenset([i])

    def op(self, o):
        if hasattr(o, "prepare"):
            o.prepare(self.state, self)
        before = self.state
        if hasattr(o, "flight_states"):
            flight = o.flight_states(before, self)
        else:
            flight = [before, before.copy()]
            o.apply(flight[1], self, durable=False)
        after = before.copy()
        o.apply(after, self, durable=True)
        self._mtime(o, flight, after)
        self.ops.append(o)
        self.inflight.append(flight)
        self.after.append(after)
        self.state = after


# ------------------------------------------------------------------ trace

def read_trace(path):
    """([records], {k: dirty pages}, [unflushed lines]); records[k-1] is
    point k's [(off, page)] -- or, for a fence (cache-line mode), the lines
    in flight before it, [(off, line)] in flush order."""
    recs, dirty, unflushed = [], {}, []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        magic, kind, k, _off, _len = REC.unpack_from(data, pos)
        if magic != TRACE_MAGIC:
            raise HarnessError("trace damaged at byte %d" % pos)
        pos += REC.size
        unit = LINE if kind in (REC_FENCE, REC_UNFLUSHED) else PAGE
        pages = []
        while True:
            (off,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            if off == TRACE_END:
                break
            pages.append((off, data[pos:pos + unit]))
            pos += unit
        if kind == REC_DIRTY:
            dirty[k] = pages
        elif kind == REC_UNFLUSHED:
            unflushed = pages
        else:
            if k != len(recs) + 1:
                raise HarnessError("trace: point %d follows %d" % (k, len(recs)))
            recs.append(pages)
    return recs, dirty, unflushed


def read_counters(path):
    with open(path, "rb") as f:
        return struct.unpack("<%dQ" % C_WORDS, f.read(8 * C_WORDS))


# --------------------------------------------------------------- the runs

def daemon_env(extra, grain="page"):
    """What the recording daemon gets on top of our environment: the shim
    (preloaded after libasan in ASan builds, which insist on coming first),
    and for cache-line mode the variables that make a region file behave
    like ADR pmem (libpmemobj and libpmem2 persist with cache flushes)."""
    env = dict(extra)
    env["PMFUSE_CRASH_GRAIN"] = grain
    pre = [SHIM]
    ldd = subprocess.run(["ldd", harness.DAEMON], stdout=subprocess.PIPE, text=True).stdout
    for line in ldd.splitlines():
        if "libasan" in line and "=>" in line:
            pre.insert(0, line.split("=>")[1].split()[0])
    env["LD_PRELOAD"] = " ".join(pre)
    if grain == "line":
        env["PMEM2_FORCE_GRANULARITY"] = "cache_line"
        env["PMEM_IS_PMEM_FORCE"] = "1"
        return env
    # page mode: pmem2/pmemobj must persist with msync, the calls it sees
    for v in ("PMEM2_FORCE_GRANULARITY", "PMEM_IS_PMEM_FORCE"):
        if os.environ.get(v):
            raise HarnessError("%s is set: page mode models msync; --grain line models "
                               "cache flushes" % v)
    return env


class RecordedMount(Mount):
    """The daemon started through env(1) with the recording variables."""

    def __init__(self, region, mnt, opts, env, log_dir):
        super().__init__(region, mnt, opts=opts, log_dir=log_dir)
        self.env = env

    strace_out = None
    daemon = None       # another daemon binary (the seeded-bug build)

    def command(self):
        if self.strace_out:
            # the kernel's count of the same calls, to hold the shim's against
            cmd = ["strace", "-f", "-qq", "-c", "-o", self.strace_out,
                   "-e", "trace=" + ",".join(STRACE_CALLS)]
            env = dict(self.env)
            # LeakSanitizer cannot run under ptrace: this one recording goes
            # without leak checks (every other daemon run keeps them)
            env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
            for kv in sorted(env.items()):
                cmd += ["-E", "%s=%s" % kv]
            return cmd + self.daemon_command()
        return ["env"] + ["%s=%s" % kv for kv in sorted(self.env.items())] + self.daemon_command()

    def daemon_command(self):
        cmd = super().command()
        if self.daemon:
            cmd[0] = self.daemon
        return cmd


STRACE_CALLS = ("msync", "fsync", "fdatasync", "sync_file_range", "syncfs", "sync")


def strace_counts(path):
    """{syscall: calls} from an strace -c summary."""
    out = dict.fromkeys(STRACE_CALLS, 0)
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[-1] in out and parts[3].isdigit():
                out[parts[-1]] = int(parts[3])
    return out


# The shim's per-function table (shim.c enum fn): real addresses and calls.
C_FN_REAL, C_FN_CALLS = 64, 128
FN_NAMES = (["pmem_flush", "pmem_deep_flush", "pmem_drain", "pmem_deep_drain", "pmem_persist",
             "pmem_deep_persist", "pmem_msync", "pmem_memcpy", "pmem_memmove", "pmem_memset",
             "pmem_memcpy_persist", "pmem_memmove_persist", "pmem_memset_persist",
             "pmem_memcpy_nodrain", "pmem_memmove_nodrain", "pmem_memset_nodrain",
             "pmem2_deep_flush"] +
            ["pmem2 %s fn" % k for k in ("flush", "drain", "persist", "memcpy", "memmove", "memset")
             for _ in range(4)])
TRACEFS = "/sys/kernel/tracing"
UPROBE_GROUP = "pmfusecrash"


def read_fn_table(path):
    """([real address per function], [wrapper calls per function])."""
    with open(path, "rb") as f:
        words = struct.unpack("<512Q", f.read(4096))
    n = len(FN_NAMES)
    return list(words[C_FN_REAL:C_FN_REAL + n]), list(words[C_FN_CALLS:C_FN_CALLS + n])


def tracefs_write(name, text):
    """One write(2), appending (tracefs refuses the seek of Python's "a")."""
    fd = os.open(os.path.join(TRACEFS, name), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def recording_pid(region):
    """The daemon that has the shim loaded and serves region."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/maps" % d) as f:
                maps = f.read()
        except OSError:
            continue
        if region.encode() in argv and "libpmfuse_crash_shim" in maps:
            return int(d), maps
    raise HarnessError("no recording daemon for %s" % region)


class Uprobes:
    """The kernel's count of calls into the real libpmem and libpmem2
    functions (uprobes on their first instruction), to hold the shim's own
    count against: a call that bypassed the shim -- a pointer kept from
    before it, an internal alias -- reaches the real function unseen by
    the shim and makes the counts differ.  System-wide, so only while
    nothing else uses those libraries (the recording runs alone)."""

    def __init__(self, region, counter):
        _, maps = recording_pid(region)
        reals, _ = read_fn_table(counter)
        self.counter = counter
        spans = []
        for line in maps.splitlines():
            f = line.split()
            if len(f) >= 6 and "x" in f[1]:
                lo, hi = (int(x, 16) for x in f[0].split("-"))
                spans.append((lo, hi, int(f[2], 16), f[5]))
        self.groups = {}            # (path, file offset) -> [function index]
        for i, a in enumerate(reals):
            if not a:
                continue
            for lo, hi, off, path in spans:
                if lo <= a < hi:
                    self.groups.setdefault((path, a - lo + off), []).append(i)
                    break
            else:
                raise HarnessError("%s at %#x is in no executable mapping" % (FN_NAMES[i], a))
        self.events = []
        try:
            for j, (path, off) in enumerate(sorted(self.groups)):
                name = "f%d_%d" % (os.getpid(), j)
                try:
                    tracefs_write("uprobe_events", "p:%s/%s %s:0x%x\n" % (
                        UPROBE_GROUP, name, path, off))
                except OSError as e:
                    raise OSError(e.errno, "uprobe at %s:0x%x (%s): %s" % (
                        path, off, "+".join(FN_NAMES[i] for i in self.groups[(path, off)]),
                        e.strerror))
                self.events.append((name, (path, off)))
            tracefs_write("events/%s/enable" % UPROBE_GROUP, "1")
        except (OSError, HarnessError):
            self.remove()
            raise
        # from here both count (the mounted daemon is idle)
        _, self.calls0 = read_fn_table(counter)
        self.hits0 = self.hits()

    @staticmethod
    def available():
        return os.access(os.path.join(TRACEFS, "uprobe_events"), os.W_OK)

    def hits(self):
        """{event: hits} of our events ("path event hits" lines)."""
        names = {name for name, _ in self.events}
        out = {}
        with open(os.path.join(TRACEFS, "uprobe_profile")) as f:
            for line in f:
                p = line.split()
                if len(p) == 3 and p[1] in names:
                    out[p[1]] = int(p[2])
        return out

    def remove(self):
        try:
            if os.path.exists(os.path.join(TRACEFS, "events", UPROBE_GROUP, "enable")):
                tracefs_write("events/%s/enable" % UPROBE_GROUP, "0")
            for name, _ in self.events:
                tracefs_write("uprobe_events", "-:%s/%s\n" % (UPROBE_GROUP, name))
        except OSError:
            pass
        self.events = []

    def check(self):
        """Compare, then remove the probes; a line for the log."""
        events = list(self.events)
        try:
            hits = self.hits()
        finally:
            self.remove()
        _, calls1 = read_fn_table(self.counter)
        bad, seen = [], []
        if len(hits) != len(events):
            raise HarnessError("uprobe_profile lists %d of our %d probes" % (len(hits), len(events)))
        for name, key in events:
            idx = self.groups[key]
            shim = sum(calls1[i] - self.calls0[i] for i in idx)
            label = "+".join(sorted({FN_NAMES[i] for i in idx}))
            kernel = hits.get(name, -1) - self.hits0.get(name, 0)
            if kernel != shim:
                bad.append("%s: real function entered %d times, shim saw %d" %
                           (label, kernel, shim))
            elif shim:
                seen.append("%s %d" % (label, shim))
        if bad:
            raise HarnessError("the shim missed persistence calls: " + "; ".join(bad))
        return ", ".join(seen)


def check_strace(counts, ctr):
    """Every persistence syscall the daemon made went through the shim:
    none bypassed it (a direct syscall(), a call inside libc)."""
    pairs = [("msync", counts["msync"], ctr[C_MSYNC_ALL]),
             ("fsync", counts["fsync"], ctr[C_FSYNC_ALL]),
             ("fdatasync", counts["fdatasync"], ctr[C_FDATASYNC_ALL]),
             ("sync_file_range", counts["sync_file_range"], ctr[C_SFR_ALL]),
             ("syncfs+sync", counts["syncfs"] + counts["sync"], ctr[C_SYNCFS_ALL])]
    bad = ["%s: kernel saw %d, shim %d" % p for p in pairs if p[1] != p[2]]
    if bad:
        raise HarnessError("the shim missed persistence calls: " + "; ".join(bad))
    return ", ".join("%s %d" % (p[0], p[1]) for p in pairs if p[1])


class Run:
    """One workload in one mode: record, then check every crash state."""

    def __init__(self, name, build, mode, args, workdir, check_mount_phase):
        self.name = name
        self.mode = mode
        sync_mode = mode == "sync"
        self.args = args
        self.dir = workdir
        self.check_mount_phase = check_mount_phase
        # -o writeback_cache: the kernel owns the times and sends them with
        # its write-back, so when they become durable is not the daemon's
        self.b = Builder(sync_mode, check_mtime=mode != "wbcache")
        build(self.b)
        self.rng = random.Random("%s/%s/%d" % (name, self.mode, args.seed))
        self.violations = []
        self.checked = 0
        self.unique = 0
        self.unsampled = 0
        self.skipped_mount_phase = 0
        self.use_strace = False
        self.check_calls = False     # cross-check the shim's counts (strace, uprobes)
        self.line = args.grain == "line"
        self.subset_images = 0
        self.fence_lines = []    # lines in flight per fence (cache-line mode)

    # -- 1. record
    def record(self, base):
        tag = "%s-%s" % (self.name, self.mode)
        region = os.path.join(self.dir, tag + ".region")
        shutil.copyfile(base, region)
        self.trace = os.path.join(self.dir, tag + ".trace")
        counter = os.path.join(self.dir, tag + ".ctr")
        mnt = tempfile.mkdtemp(prefix="pmfuse-crash-rec-")
        env = daemon_env({"PMFUSE_CRASH_REGION": region, "PMFUSE_CRASH_TRACE": self.trace,
                          "PMFUSE_CRASH_COUNTER": counter,
                          "PMFUSE_CRASH_DIRTY_EVERY":
                              "0" if self.line else str(self.args.dirty_every)},
                         self.args.grain)
        opts = MODE_OPTS[self.mode]
        if not self.line and "PMFUSE_REGION_IO" not in os.environ:
            # page grain: both data paths (region.c use_fd_io), whatever
            # this host's page faults cost: -o sync through the mapping,
            # the other modes through the region's file descriptor
            env["PMFUSE_REGION_IO"] = "map" if self.mode == "sync" else "fd"
        if self.args.seeded_bug:
            env["PMFUSE_SEEDED_BUG"] = self.args.seeded_bug
        m = RecordedMount(region, mnt, opts, env, self.dir)
        m.daemon = self.args.daemon
        if self.use_strace:
            m.strace_out = os.path.join(self.dir, tag + ".strace")
        w = self.b
        w.mnt = mnt
        self.marks = []      # (s_i, c_i)
        probes = None
        try:
            m.start()
            if read_counters(counter)[C_READY] != 1:
                raise HarnessError("the shim is not active in the daemon")
            if self.line and self.check_calls and Uprobes.available():
                try:
                    probes = Uprobes(region, counter)
                except OSError as e:
                    log("  uprobes cannot be set (%s): the shim's libpmem/libpmem2 call "
                        "counts are not cross-checked" % e)
            self.mtimes = []     # per op: {node id: mtime observed after it}
            for i, o in enumerate(w.ops):
                s = read_counters(counter)[C_POINTS]
                o.run(w)
                c = read_counters(counter)[C_POINTS]
                self.marks.append((s, c))
                self.mtimes.append(observe_mtimes(w, self.b.after[i]))
            for fd in list(w.fds.values()):
                os.close(fd)
            rc = m.unmount()
            if rc != 0:
                raise HarnessError("recording daemon exited %d:\n%s" % (rc, m.log()))
            if probes:
                log("  uprobes agree with the shim (calls into libpmem/libpmem2 after the "
                    "mount): %s" % probes.check())
                probes = None
            elif self.line and self.check_calls and not Uprobes.available():
                log("  uprobes unavailable (%s not writable): the shim's libpmem/libpmem2 "
                    "call counts are not cross-checked" % TRACEFS)
        finally:
            if probes:
                probes.remove()
            m.force_cleanup()
            os.rmdir(mnt)
        self.ctr = read_counters(counter)
        os.unlink(counter)
        if self.use_strace:
            seen = check_strace(strace_counts(m.strace_out), self.ctr)
            os.unlink(m.strace_out)
            log("  strace -f agrees with the shim: %s" % seen)
        os.unlink(region)
        self.recs, self.dirty, self.unflushed = read_trace(self.trace)
        os.unlink(self.trace)
        if len(self.recs) != self.ctr[C_POINTS]:
            raise HarnessError("trace has %d records, counter says %d" %
                               (len(self.recs), self.ctr[C_POINTS]))

    # -- 2. what may be seen after a crash at point k
    def allowed(self, k, dirty):
        """The states a crash image at point k may show.  A plain image holds
        every store persisted by point k; with dirty pages it may also hold
        later stores of the operation point k belongs to."""
        done = 0
        flight = None
        for i, (s, c) in enumerate(self.marks):
            if c < k or (c == k and not dirty):
                done = i + 1
            elif s < k <= c:
                flight = i
        states = [self.b.after[done - 1] if done else State()]
        if flight is not None:
            states = self.b.inflight[flight]
        elif k == len(self.recs) and not dirty and done == len(self.b.ops):
            # the last point: after the clean unmount, which wrote back
            # everything, so every write is durable, fsync'd or not
            final = states[0].copy()
            for n in final.nodes.values():
                n.sync()
            states = [final]
        return states, done, flight

    # -- 3. the images
    def images(self):
        """(key, k, variant, pages) per crash state: pages over the base."""
        if self.line:
            yield from self.line_images()
            return
        cur, hashes = {}, {}
        n = len(self.recs)
        first_op = self.marks[0][0] if self.marks else n
        for k in range(0, n + 1):
            if k:
                for off, page in self.recs[k - 1]:
                    cur[off] = page
                    hashes[off] = hashlib.sha1(page).digest()
            if k < first_op and not self.check_mount_phase:
                self.skipped_mount_phase += 1
                continue
            key = self._key(hashes)
            yield key, k, "flushed", dict(cur)
            if k in self.dirty and self.dirty[k]:
                pages = self.dirty[k]
                for j in range(self.args.subsets):
                    pick = [(o, p) for o, p in pages if self.rng.random() < 0.5]
                    if j == 0:
                        pick = pages            # everything written survived
                    if not pick:
                        continue
                    lines = self.args.lines and j == self.args.subsets - 1
                    if lines:
                        pick = [(o, self._torn(cur.get(o) or self.base_bytes[o:o + PAGE], p))
                                for o, p in pick]
                    img, hs = dict(cur), dict(hashes)
                    for off, page in pick:
                        img[off] = page
                        hs[off] = hashlib.sha1(page).digest()
                    yield self._key(hs), k, "%s%d/%d" % ("lines" if lines else "dirty", len(pick),
                                                        len(pages)), img

    def durable_line(self, off):
        """The line at off as the last fence left it."""
        for items in reversed(self.recs):
            for o, line in reversed(items):
                if o == off:
                    return line
        return self.base_bytes[off:off + LINE]

    def subsets(self, n, k):
        """Which of a fence's n in-flight lines reached media before a crash
        just ahead of it: every subset when n <= 8, else the prefixes and
        suffixes of the flush order (at most --cuts of each, evenly spaced)
        and --random random subsets; never the empty or the whole set (the
        images of the fence before and of this one).  Seeded by the
        workload, mode, fence and --seed."""
        if n <= 8:
            for mask in range(1, (1 << n) - 1):
                yield "sub", [i for i in range(n) if mask >> i & 1]
            return
        cuts = range(1, n)
        if self.args.cuts and n - 1 > self.args.cuts:
            step = (n - 1) / self.args.cuts
            cuts = sorted({1 + int(j * step) for j in range(self.args.cuts)})
        for c in cuts:
            yield "prefix", list(range(c))
            yield "suffix", list(range(n - c, n))
        rng = random.Random("%s/%s/%d/%d" % (self.name, self.mode, k, self.args.seed))
        for _ in range(self.args.random):
            pick = [i for i in range(n) if rng.random() < 0.5]
            if 0 < len(pick) < n:
                yield "random", pick

    def line_images(self):
        """Cache-line mode: the image at every fence (all its lines applied),
        and before it, images where only some of the lines in flight had
        reached media (subsets()).  Lines never flushed are in no image."""
        cur, hashes = {}, {}
        first_op = self.marks[0][0] if self.marks else len(self.recs)
        base = self.base_bytes

        def put(pages, hs, off, line):
            po = off - off % PAGE
            page = bytearray(pages.get(po) or base[po:po + PAGE])
            page[off - po:off - po + LINE] = line
            pages[po] = bytes(page)
            hs[po] = None          # hashed when the key is made

        def key(pages, hs):
            for po, h in hs.items():
                if h is None:
                    hs[po] = hashlib.sha1(pages[po]).digest()
            return self._key(hs)

        for k in range(0, len(self.recs) + 1):
            check = k >= first_op or self.check_mount_phase
            if k:
                items = self.recs[k - 1]
                self.fence_lines.append(len(items))
                if check:
                    for kind, pick in self.subsets(len(items), k):
                        img, hs = dict(cur), dict(hashes)
                        for i in pick:
                            put(img, hs, *items[i])
                        self.subset_images += 1
                        yield key(img, hs), k, "%s%d/%d" % (kind, len(pick), len(items)), img
                for off, line in items:
                    put(cur, hashes, off, line)
            if not check:
                self.skipped_mount_phase += 1
                continue
            yield key(cur, hashes), k, "flushed", dict(cur)

    def _torn(self, old, new):
        """A page where each 64-byte line is the persisted or the live one:
        what cache-line write-back (ADR) could leave, finer than the page."""
        out = bytearray(old)
        for o in range(0, PAGE, 64):
            if self.rng.random() < 0.5:
                out[o:o + 64] = new[o:o + 64]
        return bytes(out)

    def _key(self, hashes):
        h = hashlib.sha1()
        for off in sorted(hashes):
            if hashes[off] != self.base_hash.get(off):
                h.update(struct.pack("<Q", off) + hashes[off])
        return h.digest()


class Checker:
    """Checks crash images: fsck -n, mount + walk + unmount.  Thread-safe;
    one mountpoint per worker."""

    def __init__(self, base, workdir, jobs):
        self.base = base
        self.dir = workdir
        with open(base, "rb") as f:
            self.base_bytes = f.read()
        self.size = len(self.base_bytes)
        # the base's non-zero 64 KiB pieces: all an image file needs besides its pages
        zero = bytes(1 << 16)
        self.base_chunks = [(o, self.base_bytes[o:o + len(zero)])
                            for o in range(0, self.size, len(zero))
                            if self.base_bytes[o:o + len(zero)] != zero]
        self.mnts = [tempfile.mkdtemp(prefix="pmfuse-crash-chk-") for _ in range(jobs)]
        self.free = list(self.mnts)
        self.lock = threading.Lock()
        self.seq = 0
        self.connabort_retries = 0

    def close(self):
        for m in self.mnts:
            try:
                os.rmdir(m)
            except OSError:
                pass

    def write_image(self, pages, path):
        """The base with pages applied, sparse where the base is."""
        with open(path, "wb") as f:
            f.truncate(self.size)
            for off, chunk in self.base_chunks:
                f.seek(off)
                f.write(chunk)
            for off, page in sorted(pages.items()):
                f.seek(off)
                f.write(page)

    def check(self, pages):
        """Observed state of one image: {'error': why} or {'tree': {...}}."""
        with self.lock:
            self.seq += 1
            path = os.path.join(self.dir, "img-%d" % self.seq)
            mnt = self.free.pop()
        try:
            for attempt in (1, 2):
                obs = self._check_once(pages, path, mnt)
                # The kernel sometimes fails the daemon's last read of
                # /dev/fuse with ECONNABORTED instead of ENODEV once the
                # unmount tore the connection down (after DESTROY: the
                # filesystem was already closed cleanly); libfuse reports it
                # and the daemon exits 1.  Not about the image: check it again.
                if attempt == 1 and CONNABORT in obs.get("error", ""):
                    with self.lock:
                        self.connabort_retries += 1
                    continue
                return obs
        finally:
            with self.lock:
                self.free.append(mnt)

    def _check_once(self, pages, path, mnt):
        try:
            self.write_image(pages, path)
            rc, out = harness.fsck(path, "-n")
            if rc != 0:
                return {"error": "fsck.pmfuse -n exited %d:\n%s" % (rc, out[-3000:])}
            m = Mount(path, mnt, log_dir=self.dir)
            try:
                start(m)
                tree = walk(mnt)
                rc = unmount(m)
            except (HarnessError, OSError) as e:
                return {"error": "mount: %s\n%s" % (e, m.log())}
            finally:
                m.force_cleanup()
                log_text = m.log()
                if m.log_path and os.path.exists(m.log_path):
                    os.unlink(m.log_path)
            if rc != 0:
                return {"error": "daemon exited %d at unmount:\n%s" % (rc, log_text)}
            return {"tree": tree}
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def observe_mtimes(w, st):
    """{node id: st_mtime_ns} of the files of state st on the live mount."""
    out = {}
    for path, nid in st.paths.items():
        if st.nodes[nid].kind == "f":
            out[nid] = os.stat(os.path.join(w.mnt, path)).st_mtime_ns
    for fd, nid in w.fd_nodes.items():
        if fd in w.fds and nid not in out:
            out[nid] = os.fstat(w.fds[fd]).st_mtime_ns
    return out


def start(m, timeout=harness.MOUNT_TIMEOUT):
    """Mount.start() with a tighter poll: a crash image mounts in ~20 ms."""
    m.log_path = os.path.join(m.log_dir, "daemon-%s.log" % os.path.basename(m.region))
    with open(m.log_path, "wb") as log:
        m.proc = subprocess.Popen(m.command(), stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    harness._LIVE_MOUNTS.add(m)
    deadline = time.monotonic() + timeout
    while True:
        ent = harness.mount_entry(m.mnt)
        if ent is not None and ent[0].startswith("fuse"):
            return
        rc = m.proc.poll()
        if rc is not None:
            raise HarnessError("pmfuse exited with %d before the mount was live:\n%s"
                               % (rc, m.log()))
        if time.monotonic() > deadline:
            m.kill()
            raise HarnessError("mount did not appear within %.0fs:\n%s" % (timeout, m.log()))
        time.sleep(0.002)


def unmount(m):
    """Unmount; the kernel may still be sending the RELEASE of a file we
    read (asynchronous in FUSE), so a busy mount gets a few more tries."""
    for _ in range(20):
        r = harness.run([harness.FUSERMOUNT, "-u", m.mnt], timeout=30)
        if r.returncode == 0:
            return m.wait()
        time.sleep(0.05)
    raise HarnessError("fusermount3 -u %s: %s" % (m.mnt, r.stderr.strip()))


def walk(mnt):
    """relative path -> what a crash check compares."""
    out = {}

    def xattrs(p):
        names = os.listxattr(p, follow_symlinks=False)
        return {n: os.getxattr(p, n, follow_symlinks=False) for n in names
                if (n.startswith("user.") and not n.startswith("user.pmfuse.")) or
                n.startswith("system.posix_acl_")}

    def visit(rel):
        d = os.path.join(mnt, rel)
        for name in sorted(os.listdir(d)):
            r = os.path.join(rel, name) if rel else name
            p = os.path.join(mnt, r)
            st = os.lstat(p)
            e = {"ino": st.st_ino, "nlink": st.st_nlink, "xattrs": xattrs(p),
                 "mode": stat.S_IMODE(st.st_mode)}
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                e["iflags"] = get_iflags(p)
            if stat.S_ISDIR(st.st_mode):
                e["kind"] = "d"
                out[r] = e
                visit(r)
            elif stat.S_ISLNK(st.st_mode):
                e["kind"] = "l"
                e["target"] = os.readlink(p)
                out[r] = e
            elif stat.S_ISREG(st.st_mode):
                e["kind"] = "f"
                e["mtime"] = st.st_mtime_ns
                with open(p, "rb") as f:
                    e["data"] = f.read()
                out[r] = e
            else:
                e["kind"] = "?"
                out[r] = e
    visit("")
    return out


def run_workloads(args):
    workdir = tempfile.mkdtemp(prefix="pmfuse-crash-", dir=harness.SHM)
    base = os.path.join(workdir, "base.region")
    r = harness.mkfs(base, "-q", "-s", REGION_SIZE)
    if r.returncode:
        raise HarnessError("mkfs failed: %s%s" % (r.stdout, r.stderr))
    checker = Checker(base, workdir, args.jobs)
    base_hash = {}
    for off in range(0, checker.size, PAGE):
        base_hash[off] = hashlib.sha1(checker.base_bytes[off:off + PAGE]).digest()
    todo = []
    for mode in args.modes:
        for name, build in args.workloads:
            # -o sync changes the write path only (fill_range): workloads
            # whose writes are all fsync'd at once, or that write nothing,
            # would mostly repeat the writeback run (crash-long runs them all)
            if mode != "writeback" and not args.long and name not in SYNC_WORKLOADS:
                continue
            todo.append((name, build, mode))
    total = {"checked": 0, "unique": 0, "unsampled": 0, "violations": 0, "points": 0, "skipped": 0,
             "dirty_states": 0, "known": 0}
    stats = {}
    mount_phase_done = set()
    t0 = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(args.jobs)
    # --budget: what the workloads done so far cost (recording, and checking
    # every image at the modulus used) sets the modulus of the next one, so
    # that the run ends near the budget on a slow host and checks everything
    # on a fast one.  Deterministic for a given modulus: each workload logs
    # its own, and --sample N reproduces it.
    cost_record = cost_check_full = 0.0
    adapted = {}
    not_recorded = []
    costed = 0      # workloads whose cost is averaged: not the first of a mode,
                    # whose recording includes the mount's own points
    credit = 0.0
    try:
        for idx, (name, build, mode) in enumerate(todo):
            elapsed = time.monotonic() - t0
            first = mode not in mount_phase_done
            # where even recording the rest (checked 1 in MAX_BUDGET_SAMPLE)
            # would overrun the budget, 1 in so many workloads is recorded,
            # spread evenly over what is left; the first of each mode always
            keep = budget_share(args, idx, len(todo), elapsed, costed,
                                cost_record, cost_check_full)
            credit += keep
            if not first and credit < 1.0:
                not_recorded.append(name + "/" + mode)
                continue
            credit = max(0.0, credit - 1.0)
            sample = budget_sample(args, costed, len(todo) - idx + costed, elapsed,
                                   cost_record, cost_check_full)
            if sample != args.sample:
                adapted[name + "/" + mode] = sample
            mount_phase_done.add(mode)
            run = Run(name, build, mode, args, workdir, first or args.all_mount_phases)
            run.base_hash = base_hash
            run.base_bytes = checker.base_bytes
            run.check_calls = first or args.long
            run.use_strace = run.check_calls and HAVE_STRACE
            if first and not HAVE_STRACE:
                log("  strace not found: the shim's call counts are not cross-checked")
            tw = time.monotonic()
            run.record(base)
            tr = time.monotonic()
            seen = {}
            kept = []
            futures = {}
            states = []
            for key, k, variant, pages in run.images():
                states.append((key, k, variant, pages))
                want = sampled(key, sample, args.seed) and (
                    variant == "flushed" or sampled(key, args.subset_sample, args.seed + 1))
                if want and not args.dry and futures.get(key) is None:
                    futures[key] = pool.submit(checker.check, pages)
                elif key not in futures:
                    futures[key] = None
            for key, k, variant, pages in states:
                if run.violations and args.stop_first:
                    # the seeded-bug check needs one catch: the images not
                    # yet checked are dropped, not counted as checked
                    for f in futures.values():
                        if f is not None:
                            f.cancel()
                    break
                if futures[key] is None:
                    run.unsampled += 1
                    continue
                obs = futures[key].result()
                run.checked += 1
                if variant != "flushed":
                    total["dirty_states"] += 1
                allowed, done, flight = run.allowed(k, variant != "flushed")
                if "error" in obs:
                    probs = [obs["error"]]
                else:
                    probs = []
                    labels = ["as before the op in flight:", "as after it:"]
                    for st, label in zip(allowed, labels if len(allowed) > 1 else [""]):
                        p = compare(obs["tree"], st, run.mtimes)
                        if not p:
                            probs = None
                            break
                        probs += ([label] if label else []) + p
                if probs:
                    sig = (key, tuple(probs[:1]))
                    if sig in seen:
                        continue
                    seen[sig] = True
                    run.violations.append((k, variant, done, flight, probs))
                    kept.append((k, variant, pages))
            run.unique = sum(1 for f in futures.values() if f is not None and not f.cancelled())
            if run.violations and os.environ.get("PMFUSE_CRASH_KEEP"):
                keep_dir = tempfile.mkdtemp(prefix="pmfuse-crash-kept-", dir=harness.SHM)
                for k, variant, pages in kept[:3]:
                    checker.write_image(pages, os.path.join(keep_dir, "%s-%s-k%d-%s.img" % (
                        name, run.mode, k, variant.replace("/", "of"))))
                log("  kept images of violations in %s" % keep_dir)
            report(run, time.monotonic() - tw)
            if sample != args.sample:
                log("  (1 in %d distinct images checked, for --budget %d s)" % (sample, args.budget))
            if not first:
                costed += 1
                cost_record += tr - tw
                cost_check_full += (time.monotonic() - tr) * sample
            total["checked"] += run.checked
            total["unsampled"] += run.unsampled
            total["unique"] += run.unique
            known = KNOWN_VIOLATIONS.get(name)
            if known and run.violations:
                log("  known violation, not fixed yet: %s" % known)
                total["known"] += len(run.violations)
            elif known:
                log("  UNEXPECTED PASS: %s/%s is listed in KNOWN_VIOLATIONS (%s); "
                    "remove the entry" % (name, run.mode, known))
                total["violations"] += 1
            else:
                total["violations"] += len(run.violations)
            total["points"] += len(run.recs)
            total["skipped"] += run.skipped_mount_phase
            for i, v in enumerate(run.ctr):
                stats[i] = stats.get(i, 0) + v
    finally:
        pool.shutdown(wait=True)
        checker.close()
        shutil.rmtree(workdir, ignore_errors=True)
    log("shim: %d msync calls seen (%d on the region, %d MS_ASYNC), %d fsync, %d fdatasync, "
        "%d sync_file_range, %d syncfs/sync; %d persistence points, %d pages traced, "
        "%d region mappings" % (stats[C_MSYNC_ALL], stats[C_MSYNC_REGION], stats[C_MSYNC_ASYNC],
                                stats[C_FSYNC_ALL], stats[C_FDATASYNC_ALL], stats[C_SFR_ALL],
                                stats[C_SYNCFS_ALL], stats[C_POINTS], stats[C_PAGES],
                                stats[C_MAPS]))
    log("%d points before the first operation not re-checked (the same mount path as the "
        "first workload of each mode); %d states with unpersisted pages; %.0fs" %
        (total["skipped"], total["dirty_states"], time.monotonic() - t0))
    if checker.connabort_retries:
        log("%d images re-checked: the daemon's last /dev/fuse read failed with ECONNABORTED "
            "at unmount (a kernel teardown race, not the image)" % checker.connabort_retries)
    subset_sample = args.subset_sample if args.grain == "line" else 1
    if args.sample > 1 or subset_sample > 1:
        which = []
        if args.sample > 1:
            which.append("1 in %d distinct images" % args.sample)
        if subset_sample > 1:
            which.append("%s1 in %d subset images" % (
                "of those, every fence image and " if args.sample > 1 else
                "every fence image and ", subset_sample))
        log("sampled: %s checked (by content hash, seed %d), %d states not checked; a run "
            "without --sample/--subset-sample checks them all" % (
                ", ".join(which), args.seed, total["unsampled"]))
    if adapted:
        log("budget %d s: %d of %d workloads sampled to fit (%s; --sample N checks the same "
            "images again, a run without --budget all of them), %d states not checked" % (
                args.budget, len(adapted), len(todo),
                ", ".join("%s 1 in %d" % kv for kv in adapted.items()), total["unsampled"]))
    if not_recorded:
        log("budget %d s: %d of %d workloads not recorded, to fit (%s; a run without --budget, "
            "or tests/crash/run --deep, records them)" % (
                args.budget, len(not_recorded), len(todo), ", ".join(not_recorded)))
    if total["known"]:
        log("%d violations in workloads listed in KNOWN_VIOLATIONS (not counted below)"
            % total["known"])
    log("crash states: %d checked (%d unique), %d violations" %
        (total["checked"], total["unique"], total["violations"]))
    total["ok"] = total["violations"] == 0 and total["checked"] > 0
    return total


# The seeded-bug check: each bug of the pmfuse-seeded build (core.h
# seeded_bug()) drops one flush; the explorer must report violations for
# each at cache-line granularity, on a workload that reaches the code.
SEEDED_BUGS = [
    ("data-before-extent", "a data block before its extent commits", "write_small", "writeback"),
    ("time-in-place", "an in-place time update (-o sync overwrite)", "overwrite", "sync"),
    ("dir-slot", "a directory slot", "create", "writeback"),
    ("zero-tail", "an allocating write's zero tail", "unwritten", "writeback"),
    ("orphan-link", "an orphan-list link", "unlink_open", "writeback"),
]
SEEDED_DAEMON = os.path.join(harness.BUILD, "tests", "crash", "pmfuse-seeded")


def run_seeded(args):
    """Run each seeded bug's workload with that bug, at cache-line
    granularity (and, with --deep, at page granularity too, where a
    neighbour's msync may mask the loss); every bug must be caught at
    cache-line granularity."""
    if not os.path.exists(SEEDED_DAEMON):
        log("crash tests: missing %s (the seeded-bug build)" % SEEDED_DAEMON)
        return False
    grains = ["line", "page"] if args.deep else ["line"]
    table, ok = [], True
    allw = dict(WORKLOADS)
    for bug, what, wl, mode in SEEDED_BUGS:
        row = [bug, what, "%s/%s" % (wl, mode)]
        for grain in grains:
            log("seeded bug %s (%s): %s in %s mode, %s granularity" % (bug, what, wl, mode, grain))
            args.grain, args.seeded_bug, args.daemon = grain, bug, SEEDED_DAEMON
            args.workloads, args.modes = [(wl, allw[wl])], [mode]
            # first 1 in 4 of the subset images (every fence image), as
            # crash_line_* check them; all of them only if that catches nothing
            full = args.subset_sample
            if grain == "line" and args.stop_first and full < 4:
                args.subset_sample = 4
                t = run_workloads(args)
                args.subset_sample = full
                if t["violations"] == 0:
                    log("  not caught in 1 in 4 subset images: checking them all")
                    t = run_workloads(args)
            else:
                t = run_workloads(args)
            row.append("%d of %d" % (t["violations"], t["checked"]))
            if grain == "line" and t["violations"] == 0:
                log("  NOT CAUGHT: the explorer found no violation with %s dropped" % bug)
                ok = False
        table.append(row)
    log("seeded bugs (violations of states checked%s):" % (
        "; each check stops at its first violation, --deep checks every state"
        if args.stop_first else ""))
    log("  %-20s %-44s %-22s %s" % ("bug", "the flush dropped", "workload", "  ".join(
        "%-14s" % ("%s grain" % g) for g in grains)))
    for row in table:
        log("  %-20s %-44s %-22s %s" % (row[0], row[1], row[2], "  ".join(
            "%-14s" % c for c in row[3:])))
    caught = sum(1 for r in table if not r[3].startswith("0 of"))
    log("seeded bugs: %d of %d caught at cache-line granularity" % (caught, len(table)))
    return ok


def budget_sample(args, idx, n, elapsed, cost_record, cost_check_full):
    """The --sample modulus for workload idx of n under --budget: the first
    workload takes --sample; later ones the smallest modulus at which the
    remaining workloads, costed as the average of the idx done (recording
    plus checking every image; not a mode's first, which also records the
    mount), fit in what is left of the budget."""
    if not args.budget or idx == 0:
        return args.sample
    left = n - idx
    rec = cost_record / idx * left
    chk = cost_check_full / idx * left
    room = args.budget - elapsed - rec
    if room <= 0:
        return max(args.sample, MAX_BUDGET_SAMPLE)
    return max(args.sample, min(MAX_BUDGET_SAMPLE, -int(-chk // room)))


MAX_BUDGET_SAMPLE = 16


def budget_share(args, idx, n, elapsed, done, cost_record, cost_check_full):
    """Under --budget, the share of the workloads from idx on that can be
    recorded at all: 1 while the rest, recorded and checked 1 in
    MAX_BUDGET_SAMPLE, fits in what is left of the budget (costed as the
    average of the `done` workloads recorded so far), less where recording
    alone costs more than this host gives (a sanitizer build on a host with
    shadow page tables records 3-4x slower than elsewhere)."""
    if not args.budget or done == 0:
        return 1.0
    need = (n - idx) * (cost_record + cost_check_full / MAX_BUDGET_SAMPLE) / done
    # a tenth of the budget is slack: budget_sample aims at the budget
    # itself, and one workload's cost is only roughly the average's
    room = args.budget * 1.1 - elapsed
    if need <= room:
        return 1.0
    return max(0.0, room) / need


def sampled(key, n, seed):
    """--sample N: a deterministic 1-in-N choice of distinct images, keyed by
    the image's content hash and the seed, so a rerun checks the same ones."""
    if n <= 1:
        return True
    h = hashlib.sha1(struct.pack("<Q", seed) + key).digest()
    return int.from_bytes(h[:8], "little") % n == 0


def report(run, secs):
    log("%-16s %-9s %3d ops, %4d points, %5d states, %4d unique, %d violations (%.1fs)" % (
        run.name, run.mode, len(run.b.ops), len(run.recs), run.checked, run.unique,
        len(run.violations), secs))
    if run.line:
        fl = run.fence_lines or [0]
        log("  %d fences: lines in flight per fence max %d, mean %.1f, %d fences with more "
            "than 8; %d subset images; %d lines stored and never flushed" % (
                len(run.fence_lines), max(fl), sum(fl) / len(fl), sum(1 for n in fl if n > 8),
                run.subset_images, len(run.unflushed)))
        for off, line in run.unflushed[:int(os.environ.get("PMFUSE_CRASH_SHOW_UNFLUSHED", "0"))]:
            log("    never flushed: line at %#x: %s (durable: %s)" % (
                off, line.hex(), run.durable_line(off).hex()))
    for k, variant, done, flight, probs in run.violations[:5]:
        where = "op %d (%s) in flight" % (flight + 1, run.b.ops[flight]) if flight is not None \
            else "no op in flight"
        last = "after op %d (%s)" % (done, run.b.ops[done - 1]) if done else "before any op"
        log("  VIOLATION %s/%s at crash point %d (%s): %s, %s" % (
            run.name, run.mode, k, variant, last, where))
        for p in probs[:6]:
            log("    " + p.replace("\n", "\n    "))
    if len(run.violations) > 5:
        log("  ... %d more" % (len(run.violations) - 5))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mode", choices=["writeback", "sync", "wbcache", "both"], default="both")
    ap.add_argument("--long", action="store_true",
                    help="also random mixed workloads, more unpersisted-page samples")
    ap.add_argument("-k", dest="pattern", action="append", default=[],
                    help="only workloads whose name contains PATTERN")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("PMFUSE_CRASH_SEED", "1")))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("PMFUSE_CRASH_JOBS", "2")))
    ap.add_argument("--dirty-every", type=int, default=None,
                    help="snapshot unpersisted pages every N points")
    ap.add_argument("--subsets", type=int, default=None,
                    help="images per unpersisted-page snapshot")
    ap.add_argument("--lines", action="store_true",
                    help="the last image per snapshot tears pages at 64-byte lines "
                         "(default with --long)")
    ap.add_argument("--all-mount-phases", action="store_true",
                    help="check the points of every mount, not just the first per mode")
    ap.add_argument("--sample", type=int, default=1, metavar="N",
                    help="check one in N distinct crash images (chosen by content hash "
                         "and seed); every state is still recorded and enumerated")
    ap.add_argument("--budget", type=int, default=0, metavar="SECONDS",
                    help="sample the later workloads (1 in up to %d distinct images, by "
                         "the same hash as --sample) when the run would otherwise take "
                         "longer than SECONDS on this host; 0: no budget" % MAX_BUDGET_SAMPLE)
    ap.add_argument("--subset-sample", type=int, default=1, metavar="N",
                    help="cache-line mode: check one in N of the subset images (every "
                         "fence's own image is checked)")
    ap.add_argument("--grain", choices=["page", "line"], default="page",
                    help="page: persistence is msync (a region file); line: cache flushes "
                         "and fences (ADR pmem: PMEM2_FORCE_GRANULARITY=cache_line)")
    ap.add_argument("--cuts", type=int, default=None, metavar="N",
                    help="cache-line mode: at most N prefixes and N suffixes of a fence's "
                         "lines in flight, evenly spaced (0: all; default 8, 256 with --deep)")
    ap.add_argument("--random", type=int, default=None, metavar="N",
                    help="cache-line mode: random subsets per fence of more than 8 lines "
                         "(default 8, 32 with --deep)")
    ap.add_argument("--seeded", action="store_true",
                    help="the seeded-bug check: each bug of the pmfuse-seeded build must be "
                         "caught (with --deep, also at page granularity, for the table)")
    ap.add_argument("--deep", action="store_true",
                    help="the long exploration: --long, up to 256 prefixes and suffixes and "
                         "32 random subsets per fence (tests/crash/run --deep)")
    ap.add_argument("--dry", action="store_true",
                    help="record and enumerate the crash states, check none")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    args.long = args.long or args.deep
    args.seeded_bug, args.daemon = None, None
    args.stop_first = args.seeded and not args.deep
    args.modes = ["writeback", "sync"] if args.mode == "both" else [args.mode]
    wls = list(WORKLOADS)
    if args.long or any("grow_shrink" in p for p in args.pattern):
        wls += LONG_WORKLOADS
    if args.long:
        rng = random.Random(args.seed)
        wls += [("random%d" % i, wl_random(rng.randrange(1 << 30), 25)) for i in range(8)]
    if args.pattern:
        wls = [(n, b) for n, b in wls if any(p in n for p in args.pattern)]
    args.workloads = wls
    if args.dirty_every is None:
        args.dirty_every = 3 if args.long else 10
    if args.subsets is None:
        args.subsets = 4 if args.long else 2
    args.lines = args.lines or args.long
    if args.cuts is None:
        args.cuts = 256 if args.deep else 8
    if args.random is None:
        args.random = 32 if args.deep else 8
    if args.list:
        for n, _ in wls:
            print(n)
        return 0
    problems = harness.check_prerequisites()
    if not os.path.exists(SHIM):
        problems.append("missing %s" % SHIM)
    if problems:
        for p in problems:
            sys.stderr.write("crash tests: %s\n" % p)
        return 1
    log("crash tests: %d workloads x %s, seed %d, %d jobs" % (
        len(wls), "+".join(args.modes), args.seed, args.jobs))
    try:
        ok = run_seeded(args) if args.seeded else run_workloads(args)["ok"]
    finally:
        harness._emergency_cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
