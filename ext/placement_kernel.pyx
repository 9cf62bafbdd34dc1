# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Placement kernel: coreplane/placement/_pure.py in C, byte for byte, with the GIL released.

Every phase, key and tie-break mirrors the twin; read the twin for the why. The Python side
hands over `bounds.Dense` (lists of ints); they are copied into C arrays, the whole solve runs
under `nogil` so Raft heartbeats keep flowing on other threads, and the raw moves come back as
lists. Integer arithmetic only (int64; model validation keeps every product in range).
"""

from libc.stdint cimport int64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcmp, memcpy
from cpython cimport array
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.dict cimport PyDict_Update
from cpython.list cimport PyList_GET_ITEM
from cpython.object cimport PyObject, PyObject_Hash

cdef extern from "Python.h":
    ctypedef struct PyASCIIObject:
        Py_ssize_t hash
    object _PyDict_NewPresized(Py_ssize_t minused)
    int _PyDict_SetItem_KnownHash(object mp, object key, object item, Py_ssize_t hash) except -1
import array as _array


cdef extern from *:
    void __builtin_prefetch(const void *addr) noexcept nogil

cdef array.array _QARRAY = _array.array("q")

cdef enum:
    SHIFT = 20
    PLACE_HOT_DIV = 8
cdef int64_t UNLIMITED = (<int64_t>1) << 62


cdef struct Heap:
    int64_t *key
    int64_t *val
    Py_ssize_t size
    Py_ssize_t cap


cdef inline bint _less(int64_t ka, int64_t va, int64_t kb, int64_t vb) noexcept nogil:
    return ka < kb or (ka == kb and va < vb)


cdef void heap_push(Heap *h, int64_t k, int64_t v) noexcept nogil:
    cdef Py_ssize_t i, parent
    if h.size == h.cap:
        h.cap = h.cap * 2 + 16
        h.key = <int64_t *>realloc(h.key, h.cap * sizeof(int64_t))
        h.val = <int64_t *>realloc(h.val, h.cap * sizeof(int64_t))
    i = h.size
    h.size += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _less(k, v, h.key[parent], h.val[parent]):
            break
        h.key[i] = h.key[parent]
        h.val[i] = h.val[parent]
        i = parent
    h.key[i] = k
    h.val[i] = v


cdef void heap_pop(Heap *h) noexcept nogil:
    cdef Py_ssize_t i = 0, child
    cdef int64_t k, v
    h.size -= 1
    if h.size == 0:
        return
    k = h.key[h.size]
    v = h.val[h.size]
    while True:
        child = 2 * i + 1
        if child >= h.size:
            break
        if child + 1 < h.size and _less(h.key[child + 1], h.val[child + 1],
                                        h.key[child], h.val[child]):
            child += 1
        if not _less(h.key[child], h.val[child], k, v):
            break
        h.key[i] = h.key[child]
        h.val[i] = h.val[child]
        i = child
    h.key[i] = k
    h.val[i] = v


cdef struct Pair:
    int64_t a
    int64_t b
    int64_t c


cdef int _cmp_triple(const void *x, const void *y) noexcept nogil:
    cdef const Pair *p = <const Pair *>x
    cdef const Pair *q = <const Pair *>y
    if p.a != q.a:
        return -1 if p.a < q.a else 1
    if p.b != q.b:
        return -1 if p.b < q.b else 1
    if p.c != q.c:
        return -1 if p.c < q.c else 1
    return 0


cdef inline bint _pair_less(const Pair *p, const Pair *q) noexcept nogil:
    if p.a != q.a:
        return p.a < q.a
    if p.b != q.b:
        return p.b < q.b
    return p.c < q.c


cdef void sort_pairs(Pair *items, Py_ssize_t n) noexcept nogil:
    """The order qsort(_cmp_triple) gives (a total order, so any sort agrees), as a bottom-up
    merge sort with the comparison inlined: glibc's qsort calling back per comparison was the
    largest single cost of a bootstrap (300k orphans)."""
    cdef Pair *tmp
    cdef Pair *src = items
    cdef Pair *dst
    cdef Pair *swap
    cdef Pair t
    cdef Py_ssize_t run = 16, lo, mid, hi, i, j, k
    if n < 2:
        return
    lo = 0
    while lo < n:  # insertion-sort runs of 16
        hi = lo + run if lo + run < n else n
        for i in range(lo + 1, hi):
            t = items[i]
            j = i - 1
            while j >= lo and _pair_less(&t, &items[j]):
                items[j + 1] = items[j]
                j -= 1
            items[j + 1] = t
        lo = hi
    if n <= run:
        return
    tmp = <Pair *>malloc(n * sizeof(Pair))
    dst = tmp
    while run < n:
        lo = 0
        while lo < n:
            mid = lo + run if lo + run < n else n
            hi = lo + 2 * run if lo + 2 * run < n else n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if _pair_less(&src[j], &src[i]):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        swap = src
        src = dst
        dst = swap
        run *= 2
    if src != items:
        memcpy(items, src, n * sizeof(Pair))
    free(tmp)


cdef struct S:
    # sizes
    Py_ssize_t N, Z, P, RMAX
    # inputs
    int64_t *zone
    int64_t *elig
    int64_t *slots
    int64_t *lo
    int64_t *hi
    int64_t *tq
    int64_t *hcap
    int64_t *hfair
    int64_t *zshare
    int64_t *rf
    int64_t *heat
    int64_t *split
    int64_t *off
    int64_t *rep
    int64_t inflight
    int64_t budget
    int64_t band_first
    # state
    int64_t *count
    int64_t *nheat
    int64_t *zc
    int64_t **nr          # node -> partitions on it (unordered)
    int64_t *nr_len
    int64_t *nr_cap
    int64_t *pn           # partition -> nodes, RMAX per partition
    int64_t *pn_pos       # position of that partition in the node's list
    int64_t *pn_len
    # moves
    int64_t *mp
    int64_t *ms
    int64_t *md
    Py_ssize_t nm, mcap
    # orphans (partition, source)
    int64_t *op
    int64_t *os
    Py_ssize_t no, ocap
    # partitions normalize has work on (evictions or drops), ascending
    int64_t *dirty
    Py_ssize_t nd
    # every partition by (-heat, p): from the module cache, or made here by a big orphan_order
    int64_t *horder
    bint horder_ok, horder_new


cdef inline int64_t fill(S *s, int64_t n) noexcept nogil:
    return (s.count[n] << SHIFT) // s.tq[n]


cdef inline int64_t hkey(S *s, int64_t n) noexcept nogil:
    cdef int64_t c = s.hcap[n]
    if c < 1:
        c = 1
    return (s.nheat[n] << SHIFT) // c


cdef inline int64_t zkey(S *s, int64_t z) noexcept nogil:
    return (s.zc[z] << SHIFT) // s.zshare[z]


cdef inline int64_t short_key(S *s, int64_t n) noexcept nogil:
    """_pure._State.short_key."""
    if s.band_first:
        return s.lo[n] - s.count[n]
    return fill(s, n)


cdef inline int64_t over_key(S *s, int64_t n) noexcept nogil:
    """_pure._State.over_key."""
    if s.band_first:
        return s.count[n] - s.hi[n]
    return -fill(s, n)


cdef inline int klass(S *s, int64_t n) noexcept nogil:
    if s.count[n] < s.lo[n]:
        return 0
    return 1 if s.count[n] < s.hi[n] else 2


cdef void add(S *s, int64_t p, int64_t n) noexcept nogil:
    cdef int64_t j
    s.count[n] += 1
    s.nheat[n] += s.heat[p]
    if s.nr_len[n] == s.nr_cap[n]:
        s.nr_cap[n] = s.nr_cap[n] * 2 + 8
        s.nr[n] = <int64_t *>realloc(s.nr[n], s.nr_cap[n] * sizeof(int64_t))
    s.nr[n][s.nr_len[n]] = p
    j = s.pn_len[p]
    s.pn[p * s.RMAX + j] = n
    s.pn_pos[p * s.RMAX + j] = s.nr_len[n]
    s.pn_len[p] += 1
    s.nr_len[n] += 1
    if s.elig[n]:
        s.zc[s.zone[n]] += 1


cdef void remove(S *s, int64_t p, int64_t n) noexcept nogil:
    cdef int64_t j, k, pos = -1, last, q, base = p * s.RMAX, qbase
    s.count[n] -= 1
    s.nheat[n] -= s.heat[p]
    for j in range(s.pn_len[p]):
        if s.pn[base + j] == n:
            pos = s.pn_pos[base + j]
            # order-preserving removal from the partition's list, as list.remove does
            for k in range(j, s.pn_len[p] - 1):
                s.pn[base + k] = s.pn[base + k + 1]
                s.pn_pos[base + k] = s.pn_pos[base + k + 1]
            s.pn_len[p] -= 1
            break
    last = s.nr_len[n] - 1
    q = s.nr[n][last]
    s.nr[n][pos] = q
    s.nr_len[n] = last
    if q != p:
        qbase = q * s.RMAX
        for j in range(s.pn_len[q]):
            if s.pn[qbase + j] == n:
                s.pn_pos[qbase + j] = pos
                break
    if s.elig[n]:
        s.zc[s.zone[n]] -= 1


cdef void record(S *s, int64_t p, int64_t src, int64_t dst) noexcept nogil:
    if s.nm == s.mcap:
        s.mcap = s.mcap * 2 + 64
        s.mp = <int64_t *>realloc(s.mp, s.mcap * sizeof(int64_t))
        s.ms = <int64_t *>realloc(s.ms, s.mcap * sizeof(int64_t))
        s.md = <int64_t *>realloc(s.md, s.mcap * sizeof(int64_t))
    s.mp[s.nm] = p
    s.ms[s.nm] = src
    s.md[s.nm] = dst
    s.nm += 1


cdef void orphan(S *s, int64_t p, int64_t src) noexcept nogil:
    if s.no == s.ocap:
        s.ocap = s.ocap * 2 + 64
        s.op = <int64_t *>realloc(s.op, s.ocap * sizeof(int64_t))
        s.os = <int64_t *>realloc(s.os, s.ocap * sizeof(int64_t))
    s.op[s.no] = p
    s.os[s.no] = src
    s.no += 1


cdef int _cmp_desc(const void *x, const void *y) noexcept nogil:
    cdef int64_t a = (<const int64_t *>x)[0]
    cdef int64_t b = (<const int64_t *>y)[0]
    return -1 if a > b else (1 if a < b else 0)


cdef struct LB:
    # bounds.lower_bound_dense, split in two: what the current assignment alone decides (made
    # once, before the solve) and the node view for given caps and bands (after it).
    int64_t drops, adds, part_leave, part_arrive, hottest
    int64_t *count0       # replicas per node in the current assignment
    int64_t *mheat0       # movable heat per node in the current assignment
    int64_t *hs_off       # N + 1 offsets into hs
    int64_t *hs           # movable heats, hottest first, of each node over its target cap


cdef inline int64_t target_cap(S *s, LB *b, int64_t n) noexcept nogil:
    return s.hcap[n] if s.hcap[n] > b.hottest else b.hottest


cdef void add_all(S *s, LB *b) noexcept nogil:
    """Every current replica added (as `add` would, in partition order), with the bound's
    partition view, per-node load and the sorted heats of nodes over their target cap taken on
    the way (bounds.lower_bound_dense). A plan's caps are never below the target caps
    (bounds.plan_heat_caps), so only those nodes can be over one. Node lists are sized once from a
    count, not grown replica by replica.

    Replicas on ineligible nodes are left out: `normalize` would take every one of them off
    again, and nothing reads an ineligible node's count, heat or list before it does (the only
    state they touch). Partitions `normalize` has work on are listed in `s.dirty`."""
    cdef int64_t p, j, i, n, valid, kept, dup, size, m, total = 0, h, zn, pos, placed
    cdef int64_t *row
    cdef const int64_t *cur
    b.drops = 0
    b.adds = 0
    b.part_leave = 0
    b.part_arrive = 0
    b.hottest = 0
    b.count0 = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    b.mheat0 = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    b.hs_off = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    s.dirty = <int64_t *>malloc((s.P + 1) * sizeof(int64_t))
    s.nd = 0
    for j in range(s.off[s.P]):
        b.count0[s.rep[j]] += 1
    for n in range(s.N):
        s.nr_cap[n] = (b.count0[n] if s.elig[n] else 0) + 8
        s.nr[n] = <int64_t *>malloc(s.nr_cap[n] * sizeof(int64_t))
    for p in range(s.P):
        valid = 0
        placed = 0
        h = s.heat[p]
        row = &s.pn[p * s.RMAX]
        cur = &s.rep[s.off[p]]
        size = s.off[p + 1] - s.off[p]
        for j in range(size):
            n = cur[j]
            if not s.split[p]:
                b.mheat0[n] += h
            if not s.elig[n]:
                continue
            pos = s.nr_len[n]
            s.nr[n][pos] = p
            s.nr_len[n] = pos + 1
            row[placed] = n
            s.pn_pos[p * s.RMAX + placed] = pos
            placed += 1
            s.count[n] += 1
            s.nheat[n] += h
            zn = s.zone[n]
            s.zc[zn] += 1
            dup = 0
            for i in range(j):
                if s.elig[cur[i]] and s.zone[cur[i]] == zn:
                    dup = 1
            valid += 1 - dup
        s.pn_len[p] = placed
        if valid != size or size > s.rf[p]:  # evictions or drops for normalize
            s.dirty[s.nd] = p
            s.nd += 1
        kept = valid if valid < s.rf[p] else s.rf[p]
        if size > s.rf[p]:
            b.drops += size - s.rf[p]
        else:
            b.adds += s.rf[p] - size
        b.part_leave += size - kept
        b.part_arrive += s.rf[p] - kept
        if not s.split[p] and h > b.hottest:
            b.hottest = h
    for n in range(s.N):
        b.hs_off[n] = total
        if s.elig[n] and b.mheat0[n] > target_cap(s, b, n):
            total += s.nr_len[n]
    b.hs_off[s.N] = total
    b.hs = <int64_t *>malloc((total + 1) * sizeof(int64_t))
    for n in range(s.N):
        if b.hs_off[n + 1] == b.hs_off[n]:
            continue
        m = 0
        for i in range(s.nr_len[n]):
            p = s.nr[n][i]
            if not s.split[p]:
                b.hs[b.hs_off[n] + m] = s.heat[p]
                m += 1
        qsort(&b.hs[b.hs_off[n]], m, sizeof(int64_t), _cmp_desc)
        # split replicas take no heat: the tail is zeros, never reached (heat left > cap >= 0)
        for i in range(m, b.hs_off[n + 1] - b.hs_off[n]):
            b.hs[b.hs_off[n] + i] = 0


cdef int64_t lb_finish(S *s, LB *b, int64_t *caps, int64_t *lo, int64_t *hi) noexcept nogil:
    """The bound over plans within `caps` (never below the target caps) and the bands."""
    cdef int64_t n, total, k, leave, node_leave = 0, node_arrive = 0
    for n in range(s.N):
        if not s.elig[n]:
            node_leave += b.count0[n]
            continue
        leave = b.count0[n] - hi[n]
        if leave < 0:
            leave = 0
        if b.mheat0[n] > caps[n]:
            total = b.mheat0[n]
            k = 0
            while total > caps[n]:
                total -= b.hs[b.hs_off[n] + k]
                k += 1
            if k > leave:
                leave = k
        node_leave += leave
        if lo[n] > b.count0[n]:
            node_arrive += lo[n] - b.count0[n]
    return max(b.drops + max(node_arrive, b.part_arrive),
               b.adds + max(node_leave, b.part_leave))


cdef int64_t lb_target(S *s, LB *b) noexcept nogil:
    """bounds.lower_bound_dense(d): the bound over plans meeting the targets."""
    cdef int64_t n, out
    cdef int64_t *caps = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        caps[n] = target_cap(s, b, n)
    out = lb_finish(s, b, caps, s.lo, s.hi)
    free(caps)
    return out


cdef int64_t lb_plan(S *s, LB *b, int64_t *mheat) noexcept nogil:
    """bounds.plan_lower_bound_dense(d, count, mheat) on the final state: each node's band
    widened to its final count and its heat cap raised to its final movable heat, per node
    (bounds.plan_bands, bounds.plan_heat_caps). Never below the target caps, as lb_finish needs."""
    cdef int64_t n, out
    cdef int64_t *caps = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *lo = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *hi = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        lo[n] = s.lo[n] if s.lo[n] < s.count[n] else s.count[n]
        hi[n] = s.hi[n] if s.hi[n] > s.count[n] else s.count[n]
        caps[n] = target_cap(s, b, n)
        if mheat[n] > caps[n]:
            caps[n] = mheat[n]
    out = lb_finish(s, b, caps, lo, hi)
    free(caps)
    free(lo)
    free(hi)
    return out


cdef void lb_free(LB *b) noexcept nogil:
    free(b.count0)
    free(b.mheat0)
    free(b.hs_off)
    free(b.hs)


cdef void normalize(S *s) noexcept nogil:
    """_pure._normalize. A partition not in `s.dirty` has every replica kept and none too many:
    its only work is orphans for the replicas it lacks, made here in the same order."""
    cdef int64_t p, j, n, i, need, best, nk, ne, d = 0
    cdef int64_t kept[64]
    cdef int64_t evicted[64]
    cdef bint dup
    for p in range(s.P):
        if d >= s.nd or s.dirty[d] != p:
            for i in range(s.off[p + 1] - s.off[p], s.rf[p]):
                orphan(s, p, -1)
            continue
        d += 1
        nk = 0
        ne = 0
        for j in range(s.off[p], s.off[p + 1]):
            n = s.rep[j]
            dup = False
            for i in range(nk):
                if s.zone[kept[i]] == s.zone[n]:
                    dup = True
            if s.elig[n] and not dup:
                kept[nk] = n
                nk += 1
            else:
                evicted[ne] = n
                ne += 1
        for i in range(ne):
            if s.elig[evicted[i]]:  # add_all left the others out
                remove(s, p, evicted[i])
        while nk > s.rf[p]:
            best = 0
            for i in range(1, nk):
                if (fill(s, kept[i]) > fill(s, kept[best])
                        or (fill(s, kept[i]) == fill(s, kept[best]) and kept[i] > kept[best])):
                    best = i
            n = kept[best]
            for i in range(best, nk - 1):
                kept[i] = kept[i + 1]
            nk -= 1
            remove(s, p, n)
            record(s, p, n, -1)
        need = s.rf[p] - nk
        for i in range(ne):
            if i < need:
                orphan(s, p, evicted[i])
            else:
                record(s, p, evicted[i], -1)
        for i in range(ne, need):
            orphan(s, p, -1)


cdef int64_t coldest(S *s, int64_t n) noexcept nogil:
    """min (heat, p) over all replicas of n, or -1."""
    cdef int64_t i, p, best = -1
    for i in range(s.nr_len[n]):
        p = s.nr[n][i]
        if best < 0 or s.heat[p] < s.heat[best] or (s.heat[p] == s.heat[best] and p < best):
            best = p
    return best


cdef inline bint zone_used(S *s, int64_t p, int64_t z) noexcept nogil:
    cdef int64_t j
    for j in range(s.pn_len[p]):
        if s.zone[s.pn[p * s.RMAX + j]] == z:
            return True
    return False


cdef int64_t wanted_zone(S *s, int64_t p, int64_t *need) noexcept nogil:
    cdef int64_t z
    for z in range(s.Z):
        if need[z] > 0 and not zone_used(s, p, z):
            return z
    return -1


cdef int64_t pick_shed(S *s, int64_t n, int64_t *need, bint restrict) noexcept nogil:
    """_pure._shed's choice: hottest movable from a hot node, else coldest, in the pool."""
    cdef int64_t i, p, hot = -1, cold = -1, excess = s.nheat[n] - s.hfair[n]
    cdef bint better_hot, better_cold
    for i in range(s.nr_len[n]):
        p = s.nr[n][i]
        better_hot = (not s.split[p] and s.heat[p] <= excess and (
            hot < 0 or s.heat[p] > s.heat[hot] or (s.heat[p] == s.heat[hot] and p < hot)))
        better_cold = (cold < 0 or s.heat[p] < s.heat[cold]
                       or (s.heat[p] == s.heat[cold] and p < cold))
        # the zone test is the costly one: only for a replica that would win
        if not (better_hot or better_cold) or (restrict and wanted_zone(s, p, need) < 0):
            continue
        if better_hot:
            hot = p
        if better_cold:
            cold = p
    if cold < 0:
        return -1
    if s.nheat[n] > s.hcap[n] and hot >= 0:
        return hot
    return cold


cdef int64_t shed(S *s, int64_t allowance) noexcept nogil:
    cdef int64_t n, p, z, home
    cdef int64_t *need = <int64_t *>calloc(s.Z + 1, sizeof(int64_t))
    for n in range(s.N):
        if s.elig[n] and s.count[n] < s.lo[n]:
            need[s.zone[n]] += s.lo[n] - s.count[n]
    cdef Heap over
    over.key = NULL
    over.val = NULL
    over.size = 0
    over.cap = 0
    for n in range(s.N):
        if s.elig[n] and s.count[n] > s.hi[n]:
            heap_push(&over, over_key(s, n), n)
    while over.size > 0 and allowance > 0:
        n = over.val[0]
        heap_pop(&over)
        home = s.zone[n]
        p = -1
        if need[home] <= 0:
            p = pick_shed(s, n, need, True)
        if p < 0:
            p = pick_shed(s, n, need, False)
        z = home if need[home] > 0 else wanted_zone(s, p, need)
        if z >= 0:
            need[z] -= 1
        remove(s, p, n)
        orphan(s, p, n)
        allowance -= 1
        if s.count[n] > s.hi[n]:
            heap_push(&over, over_key(s, n), n)
    free(over.key)
    free(over.val)
    free(need)
    return allowance


cdef int64_t fallback(S *s, int64_t p, int64_t src) noexcept nogil:
    cdef int64_t n, best = -1
    for n in range(s.N):
        if (s.elig[n] and n != src and not zone_used(s, p, s.zone[n])
                and s.count[n] < s.slots[n]):
            if best < 0 or fill(s, n) < fill(s, best):
                best = n
    return best


# The last order of all partitions by (-heat, partition) and the heat it was made for (GIL held
# to read or replace): node events keep the heat, and sorting 100k partitions again would cost
# more than a small solve. Valid only for an equal heat array, checked in full (memcmp).
cdef int64_t *_HEAT_KEY = NULL
cdef int64_t *_HEAT_ORDER = NULL
cdef Py_ssize_t _HEAT_N = -1


cdef void orphan_order(S *s, Pair *order) noexcept nogil:
    """The orphans as (-heat, partition, source), sorted: the partitions (a bootstrap has a third
    as many as orphans) are sorted, then each one's orphans are laid out in its slot and sorted
    by source. The same order as sorting every triple."""
    cdef int64_t *start = <int64_t *>calloc(s.P + 1, sizeof(int64_t))
    cdef Pair *parts = <Pair *>malloc((s.no + 1) * sizeof(Pair))
    cdef Py_ssize_t i, j, k, m, np = 0, pos = 0
    cdef int64_t p
    cdef Pair t
    cdef Pair *every
    for i in range(s.no):
        p = s.op[i]
        if start[p] == 0:
            parts[np].a = -s.heat[p]
            parts[np].b = p
            parts[np].c = 0
            np += 1
        start[p] += 1
    if np * 16 > s.P and not s.horder_ok:  # many partitions: sort them all once, keep the order
        every = <Pair *>malloc((s.P + 1) * sizeof(Pair))
        for i in range(s.P):
            every[i].a = -s.heat[i]
            every[i].b = i
            every[i].c = 0
        sort_pairs(every, s.P)
        for i in range(s.P):
            s.horder[i] = every[i].b
        free(every)
        s.horder_ok = True
        s.horder_new = True
    if np * 16 > s.P:  # the orphans' partitions, picked out of the order of all
        k = 0
        for i in range(s.P):
            p = s.horder[i]
            if start[p]:
                parts[k].b = p
                k += 1
    else:
        sort_pairs(parts, np)
    for i in range(np):
        p = parts[i].b
        k = start[p]
        start[p] = pos
        pos += k
    for i in range(s.no):
        p = s.op[i]
        k = start[p]
        start[p] += 1
        order[k].a = -s.heat[p]
        order[k].b = p
        order[k].c = s.os[i]
    pos = 0
    for i in range(np):  # each partition's few orphans, by source
        k = start[parts[i].b]
        for j in range(pos + 1, k):
            t = order[j]
            m = j
            while m > pos and t.c < order[m - 1].c:
                order[m] = order[m - 1]
                m -= 1
            order[m] = t
        pos = k
    free(parts)
    free(start)


cdef inline int64_t _winner(const int64_t *hk, int64_t a, int64_t b) noexcept nogil:
    """The node with the least (hkey, node) of two, without a branch (the outcome is a coin
    toss to the predictor). An empty slot holds N, whose hkey is INT64_MAX."""
    cdef int64_t ka = hk[a], kb = hk[b]
    cdef int64_t lt = (ka < kb) | ((ka == kb) & (a < b))
    return b ^ ((a ^ b) & -lt)


cdef inline void tree_set(int64_t *win, Py_ssize_t size, Py_ssize_t leaf, int64_t node,
                          const int64_t *hk) noexcept nogil:
    """Put `node` (or N: empty) at `leaf` of a winner tree and replay the matches above it."""
    cdef Py_ssize_t i = size + leaf
    cdef int64_t cur = node
    win[i] = cur
    while i > 1:
        cur = _winner(hk, cur, win[i ^ 1]) if (i & 1) == 0 else _winner(hk, win[i ^ 1], cur)
        i >>= 1
        win[i] = cur


cdef int64_t place(S *s) noexcept nogil:
    """_pure._place. Where the twin keeps a lazy heap per (zone, class), this keeps a winner
    tree over the zone's eligible nodes (leaf: the node if it is in that class, else N): the
    root is the same least (hkey, node) the heap's top valid entry is, read in O(1), and a
    landed replica replays one leaf-to-root path instead of a push plus a pop of the stale
    entry (the heap pops were the largest cost of a bootstrap). A candidate's rank is the
    twin's (class, looseness) pair as one number: 0 a deficit node in a tight zone, 1 another
    deficit node, 2 a node with room."""
    cdef Pair *order = <Pair *>malloc((s.no + 1) * sizeof(Pair))
    cdef int64_t n, z, i, p, src, dst, node, failed = -1
    cdef int k, k1, k2, r
    cdef int64_t *need = <int64_t *>calloc(s.Z + 1, sizeof(int64_t))
    cdef int64_t *supply = <int64_t *>calloc(s.Z + 1, sizeof(int64_t))
    cdef bint have
    cdef int64_t bk = 0, bz = 0, bkey = 0, bn = 0, zk, after, x, hot_floor = -1
    cdef bint *free_zone = <bint *>calloc(s.Z + 1, sizeof(bint))
    # hkey per node and zkey per zone, kept current as replicas land: only `add` below changes
    # them, and a 64-bit division per comparison was most of this loop
    cdef int64_t *hk = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *zks = <int64_t *>malloc((s.Z + 1) * sizeof(int64_t))
    cdef int64_t empty = s.N
    cdef Py_ssize_t *tsize = <Py_ssize_t *>calloc(s.Z + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t *tbase = <Py_ssize_t *>malloc((2 * s.Z + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t *leaf = <Py_ssize_t *>malloc((s.N + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t total = 0, j, size
    cdef int64_t *win
    for z in range(s.Z):
        zks[z] = zkey(s, z)
    for n in range(s.N):  # the smallest fair heat of an eligible node (_pure._place)
        if s.elig[n] and (hot_floor < 0 or s.hfair[n] < hot_floor):
            hot_floor = s.hfair[n]
    if hot_floor < 0:
        hot_floor = 0
    hk[s.N] = INT64_MAX
    for n in range(s.N):
        hk[n] = hkey(s, n)
        leaf[n] = -1
        if s.elig[n]:
            leaf[n] = tsize[s.zone[n]]
            tsize[s.zone[n]] += 1
    for z in range(s.Z):
        size = 1
        while size < tsize[z]:
            size <<= 1
        tsize[z] = size
        tbase[2 * z] = total
        tbase[2 * z + 1] = total + 2 * size
        total += 4 * size
    win = <int64_t *>malloc((total + 1) * sizeof(int64_t))
    for j in range(total):
        win[j] = empty
    for n in range(s.N):
        k = klass(s, n)
        if s.elig[n] and k < 2:
            win[tbase[2 * s.zone[n] + k] + tsize[s.zone[n]] + leaf[n]] = n
            if k == 0:
                need[s.zone[n]] += s.lo[n] - s.count[n]
    for i in range(s.no):
        for z in range(s.Z):
            if not zone_used(s, s.op[i], z):
                supply[z] += 1
    for z in range(2 * s.Z):
        size = tsize[z >> 1]
        for j in range(size - 1, 0, -1):
            win[tbase[z] + j] = _winner(hk, win[tbase[z] + 2 * j], win[tbase[z] + 2 * j + 1])
    orphan_order(s, order)
    for i in range(s.no):
        if i + 8 < s.no:  # heat order visits partitions at random: fetch their rows early
            p = order[i + 8].b
            __builtin_prefetch(&s.pn_len[p])
            __builtin_prefetch(&s.pn[p * s.RMAX])
            __builtin_prefetch(&s.pn_pos[p * s.RMAX])
            __builtin_prefetch(&s.heat[p])
        p = order[i].b
        src = order[i].c
        have = False
        for z in range(s.Z):
            free_zone[z] = not zone_used(s, p, z)
            if free_zone[z]:
                supply[z] -= 1
        if s.heat[p] * PLACE_HOT_DIV > hot_floor:  # _pure._place_hot: the key after landing
            for n in range(s.N):
                z = s.zone[n]
                if not s.elig[n] or not free_zone[z]:
                    continue
                k = klass(s, n)
                if k == 2:
                    continue
                r = 2 * k
                if k == 0 and need[z] <= supply[z]:
                    r = 1
                x = s.hcap[n] if s.hcap[n] > 1 else 1
                after = ((s.nheat[n] + s.heat[p]) << SHIFT) // x
                zk = zks[z]
                if (not have or r < bk or (r == bk and (after < bkey or (
                        after == bkey and (zk < bz or (zk == bz and n < bn)))))):
                    have = True
                    bk = r
                    bz = zk
                    bkey = after
                    bn = n
        for z in range(s.Z):
            if s.heat[p] * PLACE_HOT_DIV > hot_floor or not free_zone[z]:
                continue
            for k in range(2):
                node = win[tbase[2 * z + k] + 1]
                if node != empty:
                    zk = zks[z]
                    r = 2 * k
                    if k == 0 and need[z] <= supply[z]:
                        r = 1  # a deficit node in a zone that is not tight
                    if (not have or r < bk or (r == bk and (hk[node] < bkey or (
                            hk[node] == bkey and (zk < bz or (zk == bz and node < bn)))))):
                        have = True
                        bk = r
                        bz = zk
                        bkey = hk[node]
                        bn = node
                    break
        if have:
            dst = bn
        else:
            dst = fallback(s, p, src)
            if dst < 0:
                failed = p
                break
        k1 = klass(s, dst)
        if k1 == 0:
            need[s.zone[dst]] -= 1
        add(s, p, dst)
        record(s, p, src, dst)
        hk[dst] = hkey(s, dst)
        z = s.zone[dst]
        zks[z] = zkey(s, z)
        k2 = klass(s, dst)
        if k1 < 2:
            tree_set(&win[tbase[2 * z + k1]], tsize[z], leaf[dst], dst if k2 == k1 else empty,
                     hk)
        if k2 < 2 and k2 != k1:
            tree_set(&win[tbase[2 * z + k2]], tsize[z], leaf[dst], dst, hk)
    free(order)
    free(need)
    free(supply)
    free(free_zone)
    free(hk)
    free(zks)
    free(tsize)
    free(tbase)
    free(leaf)
    free(win)
    return failed


cdef inline int64_t iabs(int64_t x) noexcept nogil:
    return -x if x < 0 else x


cdef int64_t pick_gift(S *s, int64_t donor, int64_t dst, int64_t zone_ok) noexcept nogil:
    cdef int64_t k = s.tq[dst] - s.count[dst]
    cdef int64_t gap = s.hfair[dst] - s.nheat[dst]
    cdef int64_t i, p, best = -1, bs = 0, bd = 0, dist
    if k < 1:
        k = 1
    for i in range(s.nr_len[donor]):
        p = s.nr[donor][i]
        if zone_ok >= 0 and zone_used(s, p, zone_ok):
            continue
        dist = iabs(s.heat[p] * k - gap)
        if (best < 0 or s.split[p] < bs or (s.split[p] == bs and (
                dist < bd or (dist == bd and p < best)))):
            best = p
            bs = s.split[p]
            bd = dist
    return best


cdef int64_t cross_zone_donor(S *s, int64_t dst, int64_t *pout) noexcept nogil:
    cdef Pair *cands = <Pair *>malloc((s.N + 1) * sizeof(Pair))
    cdef int64_t e, nc = 0, i, p, z = s.zone[dst], found = -1
    pout[0] = -1
    for e in range(s.N):
        if s.elig[e] and s.zone[e] != z and s.count[e] > s.lo[e]:
            cands[nc].a = -fill(s, e)
            cands[nc].b = e
            cands[nc].c = 0
            nc += 1
    qsort(cands, nc, sizeof(Pair), _cmp_triple)
    for i in range(nc):
        p = pick_gift(s, cands[i].b, dst, z)
        if p >= 0:
            found = cands[i].b
            pout[0] = p
            break
    free(cands)
    return found


cdef int64_t shave_pick(S *s, int64_t n, int64_t movable, int64_t ukey) noexcept nogil:
    """_pure._shave_pick: the coldest replica that brings n to U, else the hottest; or -1."""
    cdef int64_t j, p, r = -1
    for j in range(s.nr_len[n]):
        p = s.nr[n][j]
        if s.split[p] or s.heat[p] <= 0 or fair_key(s, movable - s.heat[p], n) > ukey:
            continue
        if r < 0 or s.heat[p] < s.heat[r] or (s.heat[p] == s.heat[r] and p < r):
            r = p
    if r < 0:
        for j in range(s.nr_len[n]):
            p = s.nr[n][j]
            if s.split[p] or s.heat[p] <= 0:
                continue
            if r < 0 or s.heat[p] > s.heat[r] or (s.heat[p] == s.heat[r] and p < r):
                r = p
    return r


cdef int64_t hot_donor(S *s, int64_t *hot, Py_ssize_t nhot, int64_t dst, int64_t *mov,
                       int64_t ukey, int64_t *pout) noexcept nogil:
    """_pure._hot_donor: the hottest zone peer above U whose _shave pick fits under dst's cap."""
    cdef int64_t n, p, best = -1, z = s.zone[dst]
    cdef Py_ssize_t j
    pout[0] = -1
    for j in range(nhot):
        n = hot[j]
        if n < 0 or s.zone[n] != z:
            continue
        if s.count[n] <= s.lo[n] or fair_key(s, mov[n], n) <= ukey:
            continue
        if best >= 0 and fair_key(s, mov[n], n) <= fair_key(s, mov[best], best):
            continue
        p = shave_pick(s, n, mov[n], ukey)
        if (p >= 0 and mov[dst] + s.heat[p] <= s.hcap[dst]
                and (mov[n] - s.heat[p] <= s.hcap[n] or s.count[n] - s.lo[n] >= 3)):
            best = n  # to its cap, or two replicas above its band left: see _pure
            pout[0] = p
    return best


cdef int64_t fill_deficits(S *s, int64_t allowance, bint hot_first) noexcept nogil:
    cdef Heap *donors
    cdef Heap *h
    cdef int64_t n, dst, donor, e, p, z
    cdef int64_t *mov
    cdef int64_t *hot
    cdef Py_ssize_t nhot = 0, j
    for n in range(s.N):
        if s.elig[n] and s.count[n] < s.lo[n]:
            break
    else:
        return allowance  # no node is short: as _pure, skip the set-up
    donors = <Heap *>calloc(s.Z, sizeof(Heap))
    mov = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    hot = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        if s.elig[n] and s.count[n] > s.lo[n]:
            heap_push(&donors[s.zone[n]], -fill(s, n), n)
    cdef int64_t ukey = movable_and_u(s, mov)
    for n in range(s.N):
        if (hot_first and s.elig[n] and mov[n] > s.hcap[n]
                and fair_key(s, mov[n], n) > ukey):
            hot[nhot] = n  # ascending, as _pure's per-zone lists; -1 once it gave
            nhot += 1
    cdef Heap short
    short.key = NULL
    short.val = NULL
    short.size = 0
    short.cap = 0
    for n in range(s.N):
        if s.elig[n] and s.count[n] < s.lo[n]:
            heap_push(&short, short_key(s, n), n)
    while short.size > 0 and allowance > 0:
        dst = short.val[0]
        heap_pop(&short)
        z = s.zone[dst]
        h = &donors[z]
        donor = -1
        p = -1
        if s.count[dst] + 1 == s.lo[dst]:
            donor = hot_donor(s, hot, nhot, dst, mov, ukey, &p)
        if p >= 0:
            for j in range(nhot):
                if hot[j] == donor:
                    hot[j] = -1
        while p < 0 and h.size > 0:
            e = h.val[0]
            if s.count[e] > s.lo[e] and h.key[0] == -fill(s, e):
                donor = e
                p = pick_gift(s, donor, dst, -1)
                break
            heap_pop(h)
        if p < 0:
            donor = cross_zone_donor(s, dst, &p)
            if p < 0:
                continue
        remove(s, p, donor)
        add(s, p, dst)
        record(s, p, donor, dst)
        if not s.split[p]:
            mov[donor] -= s.heat[p]
            mov[dst] += s.heat[p]
        allowance -= 1
        if s.count[donor] > s.lo[donor]:
            heap_push(&donors[s.zone[donor]], -fill(s, donor), donor)
        if s.count[dst] < s.lo[dst]:
            heap_push(&short, short_key(s, dst), dst)
    free(short.key)
    free(short.val)
    for z in range(s.Z):
        free(donors[z].key)
        free(donors[z].val)
    free(donors)
    free(mov)
    free(hot)
    return allowance


cdef int64_t *split_heat(S *s) noexcept nogil:
    """Per node, the heat of its split-candidate replicas (node heat minus this is its movable
    heat): a scan of the partitions, in order, instead of every replica's split flag at random."""
    cdef int64_t *out = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    cdef int64_t p, j
    for p in range(s.P):
        if s.split[p]:
            for j in range(s.pn_len[p]):
                out[s.pn[p * s.RMAX + j]] += s.heat[p]
    return out


cdef enum:
    CAP_SWAP_CANDIDATES = 8
    CAP_SLACK_NUM = 16
    CAP_SLACK_ADD = 16
    CAP_SWAP_SCAN = 8
    CAP_SWAP_TAKERS = 64


cdef struct Cap:
    # _pure._cap's working state: caps, movable heat, move chains, per-node replicas by heat
    int64_t *caps
    int64_t *mov
    int64_t *head        # partition -> its last move, -1
    int64_t *prev        # move -> the partition's move before it, -1
    Py_ssize_t pcap
    Pair **bh            # node -> movable replicas as (heat, index, 0), coldest first
    int64_t *bh_len
    bint *bh_ok


cdef int64_t cap_fresh(S *s, Cap *c, int64_t p, int64_t n) noexcept nogil:
    """_pure._fresh: the last move of p onto n in the plan, or -1."""
    cdef int64_t i = c.head[p]
    while i >= 0:
        if s.md[i] == n:
            return i
        i = c.prev[i]
    return -1


cdef Pair *cap_by_heat(S *s, Cap *c, int64_t t) noexcept nogil:
    """_pure._by_heat, cached until t changes."""
    cdef int64_t j, p, k = 0
    if not c.bh_ok[t]:
        free(c.bh[t])
        c.bh[t] = <Pair *>malloc((s.nr_len[t] + 1) * sizeof(Pair))
        for j in range(s.nr_len[t]):
            p = s.nr[t][j]
            if not s.split[p]:
                c.bh[t][k].a = s.heat[p]
                c.bh[t][k].b = p
                c.bh[t][k].c = 0
                k += 1
        sort_pairs(c.bh[t], k)
        c.bh_len[t] = k
        c.bh_ok[t] = True
    return c.bh[t]


cdef inline bint on_node(S *s, int64_t p, int64_t n) noexcept nogil:
    cdef int64_t j
    for j in range(s.pn_len[p]):
        if s.pn[p * s.RMAX + j] == n:
            return True
    return False


cdef inline bint act_less(int64_t *x, int64_t *y) noexcept nogil:
    """x < y on the 8-int actions of _pure.CapAct, compared whole."""
    cdef int k
    for k in range(8):
        if x[k] != y[k]:
            return x[k] < y[k]
    return False


cdef bint cap_single(S *s, Cap *c, int64_t n, int64_t excess, Pair *hot, Py_ssize_t nhot,
                     Pair *rooms, Py_ssize_t nrooms, int64_t allowance,
                     int64_t *best) noexcept nogil:
    """_pure._cap_single; the action into `best`, True if there is one."""
    cdef Py_ssize_t a, b
    cdef int64_t h, p, i, cost, src, t, j, m, short
    cdef bint found = False, used
    cdef int64_t cand[8]
    for a in range(nhot):
        h = hot[a].a
        p = hot[a].b
        if h <= 0:
            continue
        i = cap_fresh(s, c, p, n)
        cost = 0 if i >= 0 else 1
        if cost > allowance:
            continue
        src = s.ms[i] if i >= 0 else -1
        for b in range(nrooms):
            t = rooms[b].b
            if -rooms[b].a < h:
                break
            used = False
            for j in range(s.pn_len[p]):
                m = s.pn[p * s.RMAX + j]
                if m != n and s.zone[m] == s.zone[t]:
                    used = True
                    break
            if used or s.count[t] >= s.hi[t] or t == src:
                continue
            short = 1 if h < excess else 0
            cand[0] = short
            cand[1] = cost
            cand[2] = -h if short else h
            cand[3] = p
            cand[4] = t
            cand[5] = -1
            cand[6] = i
            cand[7] = -1
            if not found or act_less(cand, best):
                memcpy(best, cand, 8 * sizeof(int64_t))
                found = True
            break
    return found


cdef bint cap_swap(S *s, Cap *c, int64_t n, int64_t excess, Pair *hot, Py_ssize_t nhot,
                   Pair *rooms, Py_ssize_t nrooms, int64_t allowance,
                   int64_t *best) noexcept nogil:
    """_pure._cap_swap; the action into `best`, True if there is one."""
    cdef int64_t zn = s.zone[n], zt, t, room, h, p, i, j, m, q, bq, cost, gain, short
    cdef Py_ssize_t a, first = nhot - CAP_SWAP_CANDIDATES if nhot > CAP_SWAP_CANDIDATES else 0
    cdef Py_ssize_t lo, hi, mid, k, rlen, b
    cdef Pair *row
    cdef bint found = False, bad
    cdef int64_t cand[8]
    for b in range(nrooms if nrooms < CAP_SWAP_TAKERS else CAP_SWAP_TAKERS):
        t = rooms[b].b
        row = cap_by_heat(s, c, t)
        rlen = c.bh_len[t]
        room = c.caps[t] - c.mov[t]
        zt = s.zone[t]
        for a in range(first, nhot):
            h = hot[a].a
            p = hot[a].b
            if on_node(s, p, t):
                continue
            if zt != zn:
                bad = False
                for j in range(s.pn_len[p]):
                    if s.zone[s.pn[p * s.RMAX + j]] == zt:
                        bad = True
                        break
                if bad:
                    continue
            i = cap_fresh(s, c, p, n)
            if i >= 0 and s.ms[i] == t:
                continue
            lo = 0  # bisect_left(row, (h - room, -1)): the first heat >= h - room
            hi = rlen
            while lo < hi:
                mid = (lo + hi) // 2
                if row[mid].a < h - room:
                    lo = mid + 1
                else:
                    hi = mid
            for k in range(lo, min(lo + CAP_SWAP_SCAN, rlen)):
                bq = row[k].a
                q = row[k].b
                if bq >= h:
                    break
                if on_node(s, q, n):
                    continue
                if zt != zn:
                    bad = False
                    for j in range(s.pn_len[q]):
                        if s.zone[s.pn[q * s.RMAX + j]] == zn:
                            bad = True
                            break
                    if bad:
                        continue
                j = cap_fresh(s, c, q, t)
                if j >= 0 and s.ms[j] == n:
                    continue
                cost = (1 if i < 0 else 0) + (1 if j < 0 else 0)
                if cost > allowance:
                    break
                gain = h - bq
                short = 1 if gain < excess else 0
                cand[0] = short
                cand[1] = cost
                cand[2] = -gain if short else gain
                cand[3] = p
                cand[4] = t
                cand[5] = q
                cand[6] = i
                cand[7] = j
                if not found or act_less(cand, best):
                    memcpy(best, cand, 8 * sizeof(int64_t))
                    found = True
                break
    return found


cdef int64_t cap_shift(S *s, Cap *c, int64_t p, int64_t src, int64_t dst,
                       int64_t i) noexcept nogil:
    """_pure._cap_shift: re-target move i when >= 0 (free), else record a new move."""
    remove(s, p, src)
    add(s, p, dst)
    if i >= 0:
        s.md[i] = dst
        return 0
    if s.nm >= c.pcap:
        c.pcap = c.pcap * 2 + 64
        c.prev = <int64_t *>realloc(c.prev, c.pcap * sizeof(int64_t))
    c.prev[s.nm] = c.head[p]
    c.head[p] = s.nm
    record(s, p, src, dst)
    return 1


cdef void cap_log(int64_t **log, int64_t *nlog, Py_ssize_t *logcap, int64_t p, int64_t src,
                  int64_t dst, int64_t i) noexcept nogil:
    if nlog[0] + 4 > logcap[0]:
        logcap[0] = logcap[0] * 2 + 64
        log[0] = <int64_t *>realloc(log[0], logcap[0] * sizeof(int64_t))
    log[0][nlog[0]] = p
    log[0][nlog[0] + 1] = src
    log[0][nlog[0] + 2] = dst
    log[0][nlog[0] + 3] = i
    nlog[0] += 4


cdef int64_t cap_room(S *s, Cap *c, int64_t n, int64_t excess, Pair *hot, Py_ssize_t nhot,
                      Pair *rooms, Py_ssize_t nrooms, int64_t budget, int64_t **log,
                      int64_t *nlog, Py_ssize_t *logcap) noexcept nogil:
    """_pure._cap_room: make room for n's hottest replica on another node, then send it."""
    cdef int64_t h, r, t, need, k, j, m, q, hq, u, bk = 0, broom = 0, bt = -1, made = 0, i
    cdef int64_t dkey, dbest, du
    cdef Py_ssize_t b, a, rlen
    cdef Pair *row
    cdef bint bad
    if nhot == 0 or hot[nhot - 1].a < excess:
        return 0
    h = hot[nhot - 1].a
    r = hot[nhot - 1].b
    for b in range(nrooms if nrooms < CAP_SWAP_TAKERS else CAP_SWAP_TAKERS):
        t = rooms[b].b
        bad = False
        for j in range(s.pn_len[r]):
            m = s.pn[r * s.RMAX + j]
            if m == t or (m != n and s.zone[m] == s.zone[t]):
                bad = True
                break
        if bad:
            continue
        need = h + rooms[b].a
        if need <= 0:
            continue
        row = cap_by_heat(s, c, t)
        rlen = c.bh_len[t]
        k = 0
        a = rlen - 1
        while a >= 0:
            if need <= 0:
                break
            if row[a].a < h:
                need -= row[a].a
                k += 1
            a -= 1
        if need > 0 or k + 1 > budget or s.count[t] - k + 1 < s.lo[t]:
            continue
        if bt < 0 or k < bk or (k == bk and (rooms[b].a < broom or (
                rooms[b].a == broom and t < bt))):
            bk = k
            broom = rooms[b].a
            bt = t
    if bt < 0:
        return 0
    t = bt
    need = h + broom
    row = cap_by_heat(s, c, t)
    rlen = c.bh_len[t]
    cdef Pair *todo = <Pair *>malloc((rlen + 1) * sizeof(Pair))
    memcpy(todo, row, rlen * sizeof(Pair))  # t's list changes as its replicas leave
    a = rlen - 1
    while a >= 0:
        if need <= 0:
            break
        hq = todo[a].a
        q = todo[a].b
        a -= 1
        if hq >= h:
            continue
        du = -1
        dbest = 0
        for u in range(s.N):
            if not s.elig[u] or u == t or u == n or s.count[u] >= s.hi[u]:
                continue
            if c.caps[u] - c.mov[u] < hq:
                continue
            bad = False
            for j in range(s.pn_len[q]):
                m = s.pn[q * s.RMAX + j]
                if m != t and s.zone[m] == s.zone[u]:
                    bad = True
                    break
            if bad:
                continue
            dkey = c.mov[u] - c.caps[u]
            if du < 0 or dkey < dbest:
                du = u
                dbest = dkey
        if du < 0:
            free(todo)
            return -1
        made += cap_shift(s, c, q, t, du, -1)
        cap_log(log, nlog, logcap, q, t, du, -1)
        c.mov[t] -= hq
        c.mov[du] += hq
        c.bh_ok[du] = False
        need -= hq
    free(todo)
    i = cap_fresh(s, c, r, n)
    made += cap_shift(s, c, r, n, t, i)
    cap_log(log, nlog, logcap, r, n, t, i)
    c.mov[n] -= h
    c.mov[t] += h
    c.bh_ok[n] = False
    c.bh_ok[t] = False
    return made


cdef int64_t cap_node(S *s, Cap *c, int64_t n, Pair *rooms, int64_t allowance) noexcept nogil:
    """_pure._cap_node: actions until n is under its cap, all undone if it is not."""
    cdef Pair *hot
    cdef int64_t t, p, q, src, dst, i, actions, excess, k, rest, paid = 0, nlog = 0, made
    cdef Py_ssize_t nhot, nrooms, ii
    cdef bint have, have_swap
    cdef int64_t act[8]
    cdef int64_t swp[8]
    cdef int64_t *log = NULL    # 4 per shift: partition, from, to, move re-targeted or -1
    cdef Py_ssize_t logcap = 0
    hot = cap_by_heat(s, c, n)
    nhot = c.bh_len[n]
    rest = c.mov[n] - c.caps[n]  # _pure._leavers
    k = 0
    ii = nhot - 1
    while ii >= 0 and rest > 0:
        rest -= hot[ii].a
        k += 1
        ii -= 1
    actions = CAP_SLACK_NUM * k + CAP_SLACK_ADD
    while c.mov[n] > c.caps[n] and actions > 0:
        excess = c.mov[n] - c.caps[n]
        hot = cap_by_heat(s, c, n)
        nhot = c.bh_len[n]
        have = False
        nrooms = 0
        for t in range(s.N):
            if s.elig[t] and t != n:
                rooms[nrooms].a = c.mov[t] - c.caps[t]
                rooms[nrooms].b = t
                rooms[nrooms].c = 0
                nrooms += 1
        sort_pairs(rooms, nrooms)
        if s.count[n] > s.lo[n]:
            have = cap_single(s, c, n, excess, hot, nhot, rooms, nrooms, allowance - paid, act)
        if not have or act[0]:
            have_swap = cap_swap(s, c, n, excess, hot, nhot, rooms, nrooms, allowance - paid,
                                 swp)
            if have_swap and (not have or act_less(swp, act)):
                memcpy(act, swp, 8 * sizeof(int64_t))
                have = True
        if (not have or act[0]) and s.count[n] > s.lo[n]:
            made = cap_room(s, c, n, excess, hot, nhot, rooms, nrooms,
                            actions if actions < allowance - paid else allowance - paid,
                            &log, &nlog, &logcap)
            if made != 0:
                if made > 0:
                    paid += made
                    actions -= made
                    continue
                break
        if not have:
            break
        p = act[3]
        t = act[4]
        q = act[5]
        if act[1] > 0:
            actions -= 1
        paid += cap_shift(s, c, p, n, t, act[6])
        cap_log(&log, &nlog, &logcap, p, n, t, act[6])
        c.mov[n] -= s.heat[p]
        c.mov[t] += s.heat[p]
        if q >= 0:
            paid += cap_shift(s, c, q, t, n, act[7])
            cap_log(&log, &nlog, &logcap, q, t, n, act[7])
            c.mov[t] -= s.heat[q]
            c.mov[n] += s.heat[q]
        c.bh_ok[n] = False
        c.bh_ok[t] = False
    if c.mov[n] <= c.caps[n]:
        free(log)
        return allowance - paid
    while nlog > 0:  # still over: undo, newest first
        nlog -= 4
        p = log[nlog]
        src = log[nlog + 1]
        dst = log[nlog + 2]
        i = log[nlog + 3]
        remove(s, p, dst)
        add(s, p, src)
        c.mov[dst] -= s.heat[p]
        c.mov[src] += s.heat[p]
        c.bh_ok[src] = False
        c.bh_ok[dst] = False
        if i >= 0:
            s.md[i] = src
        else:
            s.nm -= 1
            c.head[p] = c.prev[s.nm]
    free(log)
    return allowance


cdef int64_t cap(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._cap: every node under its heat cap with the fewest moves, re-targets first."""
    cdef Cap c
    cdef Pair *order = <Pair *>malloc((s.N + 1) * sizeof(Pair))
    cdef Pair *rooms = <Pair *>malloc((s.N + 1) * sizeof(Pair))
    cdef int64_t n, p, x, no = 0
    cdef Py_ssize_t a, ii
    c.caps = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    c.mov = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    movable_and_u(s, c.mov)
    for n in range(s.N):
        c.caps[n] = target_cap(s, lb, n)
        if s.elig[n] and c.mov[n] > c.caps[n]:
            x = c.caps[n] if c.caps[n] > 1 else 1
            order[no].a = -((c.mov[n] << SHIFT) // x)
            order[no].b = n
            order[no].c = 0
            no += 1
    if no == 0:
        free(order); free(rooms); free(c.caps); free(c.mov)
        return allowance
    qsort(order, no, sizeof(Pair), _cmp_triple)
    c.head = <int64_t *>malloc((s.P + 1) * sizeof(int64_t))
    c.pcap = s.nm + 64
    c.prev = <int64_t *>malloc(c.pcap * sizeof(int64_t))
    for p in range(s.P):
        c.head[p] = -1
    for ii in range(s.nm):
        c.prev[ii] = c.head[s.mp[ii]]
        c.head[s.mp[ii]] = ii
    c.bh = <Pair **>calloc(s.N + 1, sizeof(Pair *))
    c.bh_len = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    c.bh_ok = <bint *>calloc(s.N + 1, sizeof(bint))
    for a in range(no):
        allowance = cap_node(s, &c, order[a].b, rooms, allowance)
    for n in range(s.N):
        free(c.bh[n])
    free(c.bh); free(c.bh_len); free(c.bh_ok); free(c.head); free(c.prev)
    free(order); free(rooms); free(c.caps); free(c.mov)
    return allowance


cdef int64_t hot_gifts(S *s, LB *lb) noexcept nogil:
    """_pure._hot_gifts: a node over its heat cap gives its hottest replica that fits to the
    node below its band with the most room under its fair heat. Returns the moves made."""
    cdef int64_t *caps = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *mov = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *takers = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef Pair *order = <Pair *>malloc((s.N + 1) * sizeof(Pair))
    cdef int64_t n, t, p, h, x, m, room, j, no = 0, nt = 0, moves = 0
    cdef int64_t bh, broom, bp, bt
    cdef Py_ssize_t a, i, k
    cdef bint used
    movable_and_u(s, mov)
    for n in range(s.N):
        caps[n] = target_cap(s, lb, n)
        if s.elig[n] and mov[n] > caps[n] and s.count[n] > s.lo[n]:
            x = caps[n] if caps[n] > 1 else 1
            order[no].a = -((mov[n] << SHIFT) // x)
            order[no].b = n
            order[no].c = 0
            no += 1
        if s.elig[n] and s.count[n] < s.lo[n]:
            takers[nt] = n
            nt += 1
    qsort(order, no, sizeof(Pair), _cmp_triple)
    for a in range(no):
        n = order[a].b
        bp = -1
        bh = 0
        broom = 0
        bt = -1
        for i in range(s.nr_len[n]):
            p = s.nr[n][i]
            h = s.heat[p]
            if s.split[p] or h <= 0 or mov[n] - h > caps[n] or (bp >= 0 and h < bh):
                continue
            for k in range(nt):
                t = takers[k]
                room = (s.hcap[t] if s.count[t] + 1 == s.lo[t] else s.hfair[t]) - mov[t]
                if s.count[t] >= s.lo[t] or h > room:
                    continue
                used = False
                for j in range(s.pn_len[p]):
                    m = s.pn[p * s.RMAX + j]
                    if m != n and s.zone[m] == s.zone[t]:
                        used = True
                        break
                if used:
                    continue
                # key (-h, -room, p, t), smallest wins
                if (bp < 0 or h > bh or (h == bh and (room > broom or (room == broom and (
                        p < bp or (p == bp and t < bt)))))):
                    bp = p
                    bh = h
                    broom = room
                    bt = t
        if bp < 0:
            continue
        remove(s, bp, n)
        add(s, bp, bt)
        record(s, bp, n, bt)
        mov[n] -= s.heat[bp]
        mov[bt] += s.heat[bp]
        moves += 1
    free(caps); free(mov); free(takers); free(order)
    return moves

cdef inline int64_t fair_key(S *s, int64_t heat, int64_t n) noexcept nogil:
    cdef int64_t f = s.hfair[n]
    if f < 1:
        f = 1
    return (heat << SHIFT) // f


cdef int64_t movable_and_u(S *s, int64_t *mov) noexcept nogil:
    """Each node's movable (unsplit) heat into `mov`; returns U (_pure._ukey), the largest
    fair key of a node's hottest movable replica over eligible nodes."""
    cdef int64_t n, i, p, top, ukey = 0
    for n in range(s.N):
        mov[n] = 0
        top = 0
        for i in range(s.nr_len[n]):
            p = s.nr[n][i]
            if not s.split[p]:
                mov[n] += s.heat[p]
                if s.heat[p] > top:
                    top = s.heat[p]
        if s.elig[n] and fair_key(s, top, n) > ukey:
            ukey = fair_key(s, top, n)
    return ukey


cdef int64_t shave(S *s, int64_t allowance) noexcept nogil:
    """_pure._shave: one move off each node above the unavoidable ratio U."""
    cdef int64_t *movable = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))
    cdef Pair *order = <Pair *>malloc((s.N + 1) * sizeof(Pair))
    cdef int64_t n, i, j, p, no = 0, r, h, t, m, k
    cdef bint ok
    cdef int64_t ukey = movable_and_u(s, movable)
    for n in range(s.N):
        if s.elig[n] and movable[n] > s.hcap[n] and fair_key(s, movable[n], n) > ukey:
            order[no].a = -fair_key(s, movable[n], n)
            order[no].b = n
            order[no].c = 0
            no += 1
    qsort(order, no, sizeof(Pair), _cmp_triple)
    for i in range(no):
        if allowance <= 0:
            break
        n = order[i].b
        if s.count[n] <= s.lo[n]:
            continue
        r = shave_pick(s, n, movable[n], ukey)
        if r < 0:
            continue
        h = s.heat[r]
        t = -1
        for m in range(s.N):
            if (not s.elig[m] or m == n or s.count[m] >= s.hi[m]
                    or fair_key(s, movable[m] + h, m) > ukey):
                continue
            ok = True
            for k in range(s.pn_len[r]):
                if s.pn[r * s.RMAX + k] != n and s.zone[s.pn[r * s.RMAX + k]] == s.zone[m]:
                    ok = False
            if ok and (t < 0 or hkey(s, m) < hkey(s, t)):
                t = m
        if t < 0:
            continue
        remove(s, r, n)
        add(s, r, t)
        record(s, r, n, t)
        movable[n] -= h
        movable[t] += h
        allowance -= 1
    free(movable)
    free(order)
    return allowance


cdef enum:
    PEAK_ROUNDS = 256
    PEAK_CANDIDATES = 4
    PEAK_GAIN_PCT = 1


cdef void peak(S *s, int64_t allowance) noexcept nogil:
    """_pure._peak: lower the hottest node while one move does it."""
    cdef int64_t *movable = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    cdef int64_t *cold = <int64_t *>malloc((s.N + 1) * sizeof(int64_t))  # -2: not computed
    cdef int64_t hot[PEAK_CANDIDATES]
    cdef int64_t n, m, i, j, k, p, r, t, h, round_, nh, top, after_n, after_t, worst
    cdef int64_t bk0 = 0, bk1 = 0, br = -1, bt = -1, bq = -1, q, back
    cdef bint ok, swap
    cdef bint over = False
    cdef int64_t *sh = split_heat(s)
    for n in range(s.N):
        cold[n] = -2
        movable[n] = s.nheat[n] - sh[n]
        if s.elig[n] and movable[n] > s.hcap[n]:
            over = True
    for round_ in range(PEAK_ROUNDS if over else 0):
        if allowance <= 0:
            break
        n = -1
        for m in range(s.N):
            if s.elig[m] and (n < 0 or fair_key(s, movable[m], m) > fair_key(s, movable[n], n)):
                n = m
        if n < 0:
            break
        top = fair_key(s, movable[n], n)
        nh = 0  # the PEAK_CANDIDATES hottest movable replicas, by (-heat, p)
        for i in range(s.nr_len[n]):
            p = s.nr[n][i]
            if s.split[p] or s.heat[p] <= 0:
                continue
            j = nh
            while j > 0 and (s.heat[hot[j - 1]] < s.heat[p] or (
                    s.heat[hot[j - 1]] == s.heat[p] and hot[j - 1] > p)):
                if j < PEAK_CANDIDATES:
                    hot[j] = hot[j - 1]
                j -= 1
            if j < PEAK_CANDIDATES:
                hot[j] = p
                if nh < PEAK_CANDIDATES:
                    nh += 1
        swap = s.count[n] <= s.lo[n]
        if swap and allowance < 2:
            break
        br = -1
        bq = -1
        for k in range(nh):
            r = hot[k]
            h = s.heat[r]
            for t in range(s.N):
                if not s.elig[t] or t == n or (not swap and s.count[t] >= s.hi[t]):
                    continue
                ok = True
                for i in range(s.pn_len[r]):
                    m = s.pn[r * s.RMAX + i]
                    if m != n and s.zone[m] == s.zone[t]:
                        ok = False
                if not ok:
                    continue
                q = -1
                back = 0
                if swap:
                    if cold[t] == -2:
                        cold[t] = coldest(s, t)
                    q = cold[t]
                    if q < 0 or s.split[q]:
                        continue
                    for i in range(s.pn_len[q]):
                        m = s.pn[q * s.RMAX + i]
                        if m != t and s.zone[m] == s.zone[n]:
                            ok = False
                    if not ok:
                        continue
                    back = s.heat[q]
                after_n = fair_key(s, movable[n] - h + back, n)
                after_t = fair_key(s, movable[t] + h - back, t)
                worst = after_n if after_n > after_t else after_t
                if (br < 0 or worst < bk0 or (worst == bk0 and (after_t < bk1 or (
                        after_t == bk1 and (r < br or (r == br and t < bt)))))):
                    bk0 = worst
                    bk1 = after_t
                    br = r
                    bt = t
                    bq = q
        if br < 0 or bk0 * 100 > top * (100 - PEAK_GAIN_PCT):
            break
        cold[n] = -2
        cold[bt] = -2
        remove(s, br, n)
        add(s, br, bt)
        record(s, br, n, bt)
        movable[n] -= s.heat[br]
        movable[bt] += s.heat[br]
        allowance -= 1
        if bq >= 0:
            remove(s, bq, bt)
            add(s, bq, n)
            record(s, bq, bt, n)
            movable[bt] -= s.heat[bq]
            movable[n] += s.heat[bq]
            allowance -= 1
    free(movable)
    free(cold)
    free(sh)


cdef int64_t *waves(S *s) noexcept nogil:
    cdef int64_t *out = <int64_t *>malloc((s.nm + 1) * sizeof(int64_t))
    cdef int64_t *next_wave = <int64_t *>calloc(s.P + 1, sizeof(int64_t))
    cdef int64_t *first_free = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    cdef Py_ssize_t wcap = 64, newcap
    cdef int64_t *load = <int64_t *>calloc(s.N * wcap + 1, sizeof(int64_t))
    cdef int64_t *grown
    cdef Py_ssize_t i
    cdef int64_t p, w, e, n, f, L = s.inflight
    cdef int64_t ends[2]
    cdef int ne, j
    cdef bint busy
    for i in range(s.nm):
        p = s.mp[i]
        ne = 0
        if s.ms[i] >= 0:
            ends[ne] = s.ms[i]
            ne += 1
        if s.md[i] >= 0:
            ends[ne] = s.md[i]
            ne += 1
        w = next_wave[p]
        for j in range(ne):
            if first_free[ends[j]] > w:
                w = first_free[ends[j]]
        while True:
            if w + 2 >= wcap:
                newcap = 2 * wcap + w + 2
                grown = <int64_t *>calloc(s.N * newcap + 1, sizeof(int64_t))
                for n in range(s.N):
                    for e in range(wcap):
                        grown[n * newcap + e] = load[n * wcap + e]
                free(load)
                load = grown
                wcap = newcap
            busy = False
            for j in range(ne):
                if load[ends[j] * wcap + w] >= L:
                    busy = True
            if not busy:
                break
            w += 1
        for j in range(ne):
            n = ends[j]
            load[n * wcap + w] += 1
            f = first_free[n]
            while f < wcap and load[n * wcap + f] >= L:
                f += 1
            first_free[n] = f
        next_wave[p] = w + 1
        out[i] = w
    free(next_wave)
    free(first_free)
    free(load)
    return out


cdef int64_t *to_c(object values, Py_ssize_t n) except NULL:
    cdef int64_t *out = <int64_t *>malloc((n + 1) * sizeof(int64_t))
    cdef Py_ssize_t i = 0
    cdef const long long[:] view
    if out == NULL:
        raise MemoryError()
    if isinstance(values, array.array) and values.typecode == "q":
        view = values
        if n:
            memcpy(out, &view[0], n * sizeof(int64_t))
        return out
    for v in values:
        out[i] = v
        i += 1
    return out


cdef array.array to_array(int64_t *values, Py_ssize_t n):
    cdef array.array out = array.clone(_QARRAY, n, False)
    if n:
        memcpy(out.data.as_longlongs, values, n * sizeof(int64_t))
    return out


cdef list to_list(int64_t *values, Py_ssize_t n):
    return [values[i] for i in range(n)]


cdef tuple final_csr(S *s):
    """The final assignment as CSR arrays('q'), node indexes ascending per partition."""
    cdef array.array off = array.clone(_QARRAY, s.P + 1, False)
    cdef int64_t total = 0, p, j, k, tmp, base
    cdef int64_t i
    for p in range(s.P):
        total += s.pn_len[p]
    cdef array.array rep = array.clone(_QARRAY, total, False)
    cdef long long *o = off.data.as_longlongs
    cdef long long *r = rep.data.as_longlongs
    total = 0
    for p in range(s.P):
        o[p] = total
        base = p * s.RMAX
        for j in range(s.pn_len[p]):
            r[total + j] = s.pn[base + j]
        for j in range(1, s.pn_len[p]):
            tmp = r[total + j]
            k = j - 1
            while k >= 0 and r[total + k] > tmp:
                r[total + k + 1] = r[total + k]
                k -= 1
            r[total + k + 1] = tmp
        total += s.pn_len[p]
    o[s.P] = total
    return off, rep


cdef int64_t *movable_heat(S *s) noexcept nogil:
    """Per node, its heat without split candidates (what the metrics and the bound count)."""
    cdef int64_t *out = split_heat(s)
    cdef int64_t n
    for n in range(s.N):
        out[n] = s.nheat[n] - out[n]
    return out


cdef void _keep_heat_order(S *s):
    """Hand a freshly made order of all partitions to the module cache (GIL held)."""
    global _HEAT_KEY, _HEAT_ORDER, _HEAT_N
    cdef int64_t *key
    if not s.horder_new:
        return
    key = <int64_t *>malloc((s.P + 1) * sizeof(int64_t))
    if key == NULL:
        return
    memcpy(key, s.heat, s.P * sizeof(int64_t))
    free(_HEAT_KEY)
    free(_HEAT_ORDER)
    _HEAT_KEY = key
    _HEAT_ORDER = s.horder
    _HEAT_N = s.P
    s.horder = NULL


def solve_dense(d):
    """Same contract as `_pure.solve_dense` (see `_pure.Raw`)."""
    cdef S s
    cdef LB b
    cdef int64_t *mheat = NULL
    cdef Py_ssize_t i, maxlen = 0
    cdef int64_t allowance, hard, failed = -1, status = 0, arg = 0, lb = 0, wave_count = 0
    cdef int64_t *mw = NULL
    s.N = len(d.zone)
    s.Z = d.zones
    s.P = len(d.rf)
    s.rf = to_c(d.rf, s.P)
    s.off = to_c(d.off, s.P + 1)
    for i in range(s.P):  # in C: a Python-level loop here cost more than a small solve
        if s.off[i + 1] - s.off[i] > maxlen:
            maxlen = s.off[i + 1] - s.off[i]
        if s.rf[i] > maxlen:
            maxlen = s.rf[i]
    if maxlen > 60:
        free(s.rf)
        free(s.off)
        raise ValueError("replication factor above 60 is not supported by the kernel")
    s.RMAX = maxlen + 1
    s.zone = to_c(d.zone, s.N)
    s.elig = to_c(d.elig, s.N)
    s.slots = to_c(d.slots, s.N)
    s.lo = to_c(d.lo, s.N)
    s.hi = to_c(d.hi, s.N)
    s.tq = to_c(d.tq, s.N)
    s.hcap = to_c(d.hcap, s.N)
    s.hfair = to_c(d.hfair, s.N)
    s.zshare = to_c(d.zshare, s.Z)
    s.heat = to_c(d.heat, s.P)
    s.split = to_c(d.split, s.P)
    s.rep = to_c(d.rep, len(d.rep))
    s.inflight = d.inflight
    s.budget = d.budget
    s.band_first = d.band_first
    s.count = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    s.nheat = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    s.zc = <int64_t *>calloc(s.Z + 1, sizeof(int64_t))
    s.nr = <int64_t **>calloc(s.N + 1, sizeof(int64_t *))
    s.nr_len = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    s.nr_cap = <int64_t *>calloc(s.N + 1, sizeof(int64_t))
    s.pn = <int64_t *>calloc(s.P * s.RMAX + 1, sizeof(int64_t))
    s.pn_pos = <int64_t *>calloc(s.P * s.RMAX + 1, sizeof(int64_t))
    s.pn_len = <int64_t *>calloc(s.P + 1, sizeof(int64_t))
    s.mp = NULL
    s.ms = NULL
    s.md = NULL
    s.nm = 0
    s.mcap = 0
    s.op = NULL
    s.os = NULL
    s.no = 0
    s.ocap = 0
    s.dirty = NULL
    s.horder = <int64_t *>malloc((s.P + 1) * sizeof(int64_t))
    s.horder_ok = False
    s.horder_new = False
    if s.pn == NULL or s.pn_pos == NULL or s.nr == NULL or s.horder == NULL:
        raise MemoryError()
    if _HEAT_N == s.P and s.P > 0 and memcmp(_HEAT_KEY, s.heat, s.P * sizeof(int64_t)) == 0:
        memcpy(s.horder, _HEAT_ORDER, s.P * sizeof(int64_t))
        s.horder_ok = True
    with nogil:
        add_all(&s, &b)
        normalize(&s)
        hard = s.nm + s.no
        allowance = UNLIMITED if s.budget < 0 else s.budget - hard
        if allowance < 0:
            status = 2
            arg = hard
        else:
            if s.budget < 0:  # see _pure.solve_dense for the two orders
                allowance -= hot_gifts(&s, &b)
                i = s.no
                shed(&s, allowance)
                allowance -= s.no - i
                failed = place(&s)
                if failed < 0:
                    allowance = fill_deficits(&s, allowance, True)
            else:
                failed = place(&s)
                if failed < 0 and s.band_first:
                    s.no = 0
                    shed(&s, allowance)
                    allowance -= s.no
                    failed = place(&s)
                    if failed < 0:
                        allowance = fill_deficits(&s, allowance, False)
                elif failed < 0:
                    allowance = fill_deficits(&s, allowance, False)
                    s.no = 0
                    shed(&s, allowance)
                    allowance -= s.no
                    failed = place(&s)
            if failed >= 0:
                status = 1
                arg = failed
            else:
                allowance = cap(&s, &b, allowance)
                allowance = shave(&s, allowance)
                peak(&s, allowance)
                mw = waves(&s)
                mheat = movable_heat(&s)
                lb = lb_plan(&s, &b, mheat)
        if status != 0:
            lb = lb_target(&s, &b)
    _keep_heat_order(&s)
    try:
        if status != 0:
            return status, arg, lb, [], [], [], [], [], [], [], [], 0
        for i in range(s.nm):
            if mw[i] >= wave_count:
                wave_count = mw[i] + 1
        return (0, 0, lb, to_array(s.mp, s.nm), to_array(s.ms, s.nm), to_array(s.md, s.nm),
                to_array(mw, s.nm), to_list(s.count, s.N), to_list(mheat, s.N),
                *final_csr(&s), wave_count)
    finally:
        lb_free(&b)
        for i in range(s.N):
            free(s.nr[i])
        free(s.zone); free(s.elig); free(s.slots); free(s.lo); free(s.hi); free(s.tq)
        free(s.hcap); free(s.hfair); free(s.zshare); free(s.rf); free(s.heat); free(s.split)
        free(s.off); free(s.rep); free(s.count); free(s.nheat); free(s.zc); free(s.nr)
        free(s.nr_len); free(s.nr_cap); free(s.pn); free(s.pn_pos); free(s.pn_len)
        free(s.mp); free(s.ms); free(s.md); free(s.op); free(s.os); free(mw); free(s.horder)
        free(mheat)
        free(s.dirty)


def dense_replicas(list part_ids, object assignment, dict node_idx):
    """Compiled `bounds.dense_replicas`: the same CSR lists, without the interpreter loop."""
    cdef list off = [0]
    cdef list rep = []
    cdef Py_ssize_t total = 0, k, j, i
    cdef int64_t tmp
    cdef int64_t buf[64]
    get = assignment.get
    for pid in part_ids:
        cur = get(pid)
        if cur:
            k = 0
            for n in cur:
                if k == 64:
                    raise ValueError("more than 64 replicas of one partition")
                buf[k] = node_idx[n]
                k += 1
            for j in range(1, k):
                tmp = buf[j]
                i = j - 1
                while i >= 0 and buf[i] > tmp:
                    buf[i + 1] = buf[i]
                    i -= 1
                buf[i + 1] = tmp
            for j in range(k):
                rep.append(buf[j])
            total += k
        off.append(total)
    return off, rep


def remap_nodes(object rep, list remap):
    """`[remap[n] for n in rep]` as an array('q'): node indexes after nodes joined."""
    cdef Py_ssize_t i, n = len(rep), m = len(remap)
    cdef array.array out = array.clone(_QARRAY, n, False)
    cdef long long *o = out.data.as_longlongs
    cdef int64_t *table = to_c(remap, m)
    cdef int64_t *src = to_c(rep, n)
    for i in range(n):
        o[i] = table[src[i]]
    free(table)
    free(src)
    return out


def touched_rows(object out, list part_ids, list node_ids, object moved, object off, object rep):
    """Compiled `bounds.touched_rows`: the same rows, set in `out` directly (no pair tuples).

    Borrowed pointers and the strings' cached hashes throughout: per row one tuple and one
    dict store, no reference-count traffic beyond the row's own. An empty `out` (a bootstrap)
    is filled through a dict made at its final size, then cloned in, instead of growing."""
    cdef Py_ssize_t i, j, nm = len(moved), P = len(part_ids), lo, hi, rows = 0
    cdef int64_t *mp = to_c(moved, nm)
    cdef int64_t *o = to_c(off, P + 1)
    cdef int64_t *r = to_c(rep, len(rep))
    cdef char *seen = <char *>calloc(P + 1, 1)
    cdef PyObject *name
    cdef PyObject *key
    cdef Py_ssize_t h
    cdef object row
    cdef object target
    try:
        for i in range(nm):
            if not seen[mp[i]]:
                seen[mp[i]] = 1
                rows += 1
        target = _PyDict_NewPresized(rows) if len(out) == 0 and rows > 0 else out
        for i in range(P):
            if not seen[i]:
                continue
            lo = o[i]
            hi = o[i + 1]
            row = PyTuple_New(hi - lo)
            for j in range(lo, hi):
                name = PyList_GET_ITEM(node_ids, r[j])
                Py_INCREF(<object>name)
                PyTuple_SET_ITEM(row, j - lo, <object>name)
            key = PyList_GET_ITEM(part_ids, i)
            h = (<PyASCIIObject *>key).hash  # the cached hash; -1 until first hashed
            _PyDict_SetItem_KnownHash(target, <object>key, row,
                                      h if h != -1 else PyObject_Hash(<object>key))
        if target is not out:
            PyDict_Update(out, target)
    finally:
        free(mp)
        free(o)
        free(r)
        free(seen)
