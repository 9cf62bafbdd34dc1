# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Placement kernel: coreplane/placement/_pure.py in C, byte for byte, with the GIL released.

Every phase, key and tie-break mirrors the twin; read the twin for the why. The Python side
hands over `bounds.Dense` (lists of ints); they are copied into C arrays, the whole solve runs
under `nogil` so Raft heartbeats keep flowing on other threads, and the raw moves come back as
lists. Integer arithmetic only (int64; model validation keeps every product in range).

The phases are in ext/pk_*.pxi (included below, one extension module), the shared structs,
enums and C shims in ext/pk_types.pxd, with a glossary of the short names both sides use.
"""

from pk_types cimport *

import array as _array

cdef array.array _QARRAY = _array.array("q")
cdef int64_t UNLIMITED = (<int64_t>1) << 62


include "pk_heap.pxi"
include "pk_state.pxi"
include "pk_bounds.pxi"
include "pk_normalize.pxi"
include "pk_place.pxi"
include "pk_deficits.pxi"
include "pk_cap.pxi"
include "pk_isolate.pxi"
include "pk_shave.pxi"
include "pk_waves.pxi"


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
    try:
        for v in values:
            out[i] = v
            i += 1
    except BaseException:
        free(out)
        raise
    return out


cdef int64_t *borrow(object values, Py_ssize_t n, list views) except? NULL:
    """The int64 data of `values` itself when it is an array('q') of at least n items (n > 0),
    else NULL (copy it with to_c). No copy: the inputs are read-only to the kernel, and the
    buffer export kept in `views` pins the array (it cannot be resized) until `views` goes."""
    cdef array.array arr
    if n > 0 and isinstance(values, array.array) and values.typecode == "q" and len(values) >= n:
        arr = values
        views.append(memoryview(arr))
        return <int64_t *>arr.data.as_longlongs
    return NULL


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


cdef struct Run:
    # solve_dense's phases: their state and what they hand back
    S *s
    LB *b
    int64_t status, arg, lb
    int64_t *mw
    int64_t *mheat


cdef void _phases(void *ctx) noexcept nogil:
    """Every phase in solve order, without the GIL, under cp_run_guarded (see pk_types.pxd)."""
    cdef Run *r = <Run *>ctx
    cdef S *s = r.s
    cdef LB *b = r.b
    cdef int64_t allowance, hard, failed = -1
    cdef Py_ssize_t i
    s.pinned = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    add_all(s, b)
    normalize(s)
    hard = s.nm + s.no
    allowance = UNLIMITED if s.budget < 0 else s.budget - hard
    if allowance < 0:
        r.status = 2
        r.arg = hard
    else:
        if s.budget < 0:  # see _pure.solve_dense for the two orders
            allowance -= hot_gifts(s, b)
            i = s.no
            shed(s, allowance)
            allowance -= s.no - i
            failed = place(s)
            if failed < 0:
                allowance = fill_deficits(s, allowance, True)
        else:
            failed = place(s)
            if failed < 0 and s.band_first:
                s.no = 0
                shed(s, allowance)
                allowance -= s.no
                failed = place(s)
                if failed < 0:
                    allowance = fill_deficits(s, allowance, False)
            elif failed < 0:
                allowance = fill_deficits(s, allowance, False)
                s.no = 0
                shed(s, allowance)
                allowance -= s.no
                failed = place(s)
        if failed >= 0:
            r.status = 1
            r.arg = failed
        else:
            allowance = isolate(s, b, allowance)
            allowance = cap(s, b, allowance)
            allowance = shave(s, b, allowance)
            peak(s, b, allowance)
            polish(s, b)
            r.mw = waves(s)
            r.mheat = movable_heat(s)
            r.lb = lb_plan(s, b, r.mheat)
    if r.status != 0:
        r.lb = lb_target(s, b)


def solve_dense(d):
    """Same contract as `_pure.solve_dense` (see `_pure.Raw`)."""
    cdef S s
    cdef LB b
    cdef int64_t *mheat = NULL
    cdef Py_ssize_t i, maxlen = 0
    cdef int64_t status = 0, arg = 0, lb = 0, wave_count = 0
    cdef int64_t *mw = NULL
    cdef Run run
    cdef int guarded
    # Every pointer NULL before the first allocation, so the one `finally` frees exactly what was
    # made, whichever allocation or conversion fails first.
    # The per-partition inputs (P-sized, often array('q') from the memos) are read in place;
    # those that are not arrays are copied, and only those copies are freed (`owned`).
    cdef list views = []
    cdef int64_t *owned[5]
    memset(owned, 0, sizeof(owned))
    memset(&s, 0, sizeof(S))
    memset(&b, 0, sizeof(LB))
    s.N = len(d.zone)
    s.Z = d.zones
    s.P = len(d.rf)
    try:
        s.rf = borrow(d.rf, s.P, views)
        if s.rf == NULL:
            s.rf = owned[0] = to_c(d.rf, s.P)
        s.off = borrow(d.off, s.P + 1, views)
        if s.off == NULL:
            s.off = owned[1] = to_c(d.off, s.P + 1)
        for i in range(s.P):  # in C: a Python-level loop here cost more than a small solve
            if s.off[i + 1] - s.off[i] > maxlen:
                maxlen = s.off[i + 1] - s.off[i]
            if s.rf[i] > maxlen:
                maxlen = s.rf[i]
        if maxlen > 60:
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
        s.heat = borrow(d.heat, s.P, views)
        if s.heat == NULL:
            s.heat = owned[2] = to_c(d.heat, s.P)
        s.split = borrow(d.split, s.P, views)
        if s.split == NULL:
            s.split = owned[3] = to_c(d.split, s.P)
        s.rep = borrow(d.rep, len(d.rep), views)
        if s.rep == NULL:
            s.rep = owned[4] = to_c(d.rep, len(d.rep))
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
        s.horder = <int64_t *>malloc((s.P + 1) * sizeof(int64_t))
        s.horder_ok = False
        s.horder_new = False
        if (s.count == NULL or s.nheat == NULL or s.zc == NULL or s.nr == NULL
                or s.nr_len == NULL or s.nr_cap == NULL or s.pn == NULL or s.pn_pos == NULL
                or s.pn_len == NULL or s.horder == NULL):
            raise MemoryError()
        if _HEAT_N == s.P and s.P > 0 and memcmp(_HEAT_KEY, s.heat, s.P * sizeof(int64_t)) == 0:
            memcpy(s.horder, _HEAT_ORDER, s.P * sizeof(int64_t))
            s.horder_ok = True
        run.s = &s
        run.b = &b
        run.status = 0
        run.arg = 0
        run.lb = 0
        run.mw = NULL
        run.mheat = NULL
        with nogil:
            guarded = cp_run_guarded(_phases, &run)
        if guarded != 0:
            # A phase allocation failed: cp_run_guarded freed every block the phases made, so
            # forget the pointers to them (the finally frees the glue's own arrays only).
            for i in range(s.N):
                s.nr[i] = NULL
            s.mp = s.ms = s.md = s.op = s.os = s.dirty = s.pinned = s.bh_mark = NULL
            memset(&b, 0, sizeof(LB))
            raise MemoryError()
        status, arg, lb, mw, mheat = run.status, run.arg, run.lb, run.mw, run.mheat
        _keep_heat_order(&s)
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
        if s.nr != NULL:
            for i in range(s.N):
                cp_xfree(s.nr[i])
        free(s.zone); free(s.elig); free(s.slots); free(s.lo); free(s.hi); free(s.tq)
        free(s.hcap); free(s.hfair); free(s.zshare)
        for i in range(5):
            free(owned[i])
        free(s.count); free(s.nheat); free(s.zc); free(s.nr)
        free(s.nr_len); free(s.nr_cap); free(s.pn); free(s.pn_pos); free(s.pn_len)
        free(s.horder)
        # made by the phases (cp_x* blocks)
        cp_xfree(s.mp); cp_xfree(s.ms); cp_xfree(s.md); cp_xfree(s.op); cp_xfree(s.os)
        cp_xfree(s.dirty); cp_xfree(s.pinned); cp_xfree(mw); cp_xfree(mheat)
        cp_xfree(s.bh_mark)


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
    cdef int64_t *src = NULL
    cdef int64_t *own = NULL
    cdef list views = []
    try:
        src = borrow(rep, n, views)
        if src == NULL:
            src = own = to_c(rep, n)
        for i in range(n):
            o[i] = table[src[i]]
    finally:
        free(table)
        free(own)
    return out


def touched_rows(object out, list part_ids, list node_ids, object moved, object off, object rep):
    """Compiled `bounds.touched_rows`: the same rows, set in `out` directly (no pair tuples).

    Borrowed pointers and the strings' cached hashes throughout: per row one tuple and one
    dict store, no reference-count traffic beyond the row's own. An empty `out` (a bootstrap)
    is filled through a dict made at its final size, then cloned in, instead of growing."""
    cdef Py_ssize_t i, j, nm = len(moved), P = len(part_ids), lo, hi, rows = 0
    cdef int64_t *mp = NULL
    cdef int64_t *o = NULL
    cdef int64_t *r = NULL
    cdef char *seen = NULL
    cdef PyObject *name
    cdef PyObject *key
    cdef Py_ssize_t h
    cdef object row
    cdef object target
    cdef bint strs
    cdef int64_t *owned[3]
    cdef list views = []
    memset(owned, 0, sizeof(owned))
    try:
        mp = borrow(moved, nm, views)
        if mp == NULL:
            mp = owned[0] = to_c(moved, nm)
        o = borrow(off, P + 1, views)
        if o == NULL:
            o = owned[1] = to_c(off, P + 1)
        r = borrow(rep, len(rep), views)
        if r == NULL:
            r = owned[2] = to_c(rep, len(rep))
        seen = <char *>calloc(P + 1, 1)
        if seen == NULL:
            raise MemoryError()
        for i in range(nm):
            if not seen[mp[i]]:
                seen[mp[i]] = 1
                rows += 1
        target = CP_DICT_NEW_PRESIZED(rows) if len(out) == 0 and rows > 0 else out
        for i in range(P):
            if not seen[i]:
                continue
            lo = o[i]
            hi = o[i + 1]
            row = PyTuple_New(hi - lo)
            strs = True
            for j in range(lo, hi):
                name = PyList_GET_ITEM(node_ids, r[j])
                Py_INCREF(<object>name)
                PyTuple_SET_ITEM(row, j - lo, <object>name)
                strs = strs and PyUnicode_CheckExact(<object>name)
            # A tuple of strs joins no cycle: the collector would untrack it on its first pass
            # (_PyTuple_MaybeUntrack); untracked now, a drain's thousands of rows cost it nothing.
            if strs:
                PyObject_GC_UnTrack(<PyObject *>row)
            key = PyList_GET_ITEM(part_ids, i)
            h = CP_CACHED_HASH(key)  # the str's cached hash; -1 until first hashed (or unknown)
            CP_DICT_SETITEM_KNOWN_HASH(target, <object>key, row,
                                      h if h != -1 else PyObject_Hash(<object>key))
        if target is not out:
            PyDict_Update(out, target)
    finally:
        free(owned[0])
        free(owned[1])
        free(owned[2])
        free(seen)


cdef int64_t *view_or_copy(object values, Py_ssize_t n, list views, int64_t **owned,
                           int *nowned) except NULL:
    """`borrow`, else a copy listed in owned[*nowned] (the caller frees those)."""
    cdef int64_t *ptr = borrow(values, n, views)
    if ptr == NULL:
        ptr = to_c(values, n)
        owned[nowned[0]] = ptr
        nowned[0] += 1
    return ptr


def plan_metrics(d, object count, object mheat, object off, object rep):
    """Compiled `bounds.plan_metrics`: the same band violations, nodes over their heat cap and
    heat max/fair (a double divided in C as Python divides two ints below 2**53)."""
    cdef Py_ssize_t N = len(d.node_ids), P = len(d.part_ids), n, p, j
    cdef list views = []
    cdef int64_t *owned[12]
    cdef int nowned = 0, k
    cdef int64_t *heat = NULL
    cdef int64_t *cnt
    cdef int64_t *o
    cdef int64_t *r
    cdef int64_t *split
    cdef int64_t *pheat
    cdef int64_t *elig
    cdef int64_t *lo
    cdef int64_t *hi
    cdef int64_t *hcap
    cdef int64_t *hfair
    cdef int64_t cap_floor = d.heat_top, cap, band = 0, hot = 0
    cdef double ratio = 0.0, x
    memset(owned, 0, sizeof(owned))
    try:
        heat = to_c(mheat, N)
        cnt = view_or_copy(count, N, views, owned, &nowned)
        o = view_or_copy(off, P + 1, views, owned, &nowned)
        r = view_or_copy(rep, len(rep), views, owned, &nowned)
        split = view_or_copy(d.split, P, views, owned, &nowned)
        pheat = view_or_copy(d.heat, P, views, owned, &nowned)
        elig = view_or_copy(d.elig, N, views, owned, &nowned)
        lo = view_or_copy(d.lo, N, views, owned, &nowned)
        hi = view_or_copy(d.hi, N, views, owned, &nowned)
        hcap = view_or_copy(d.hcap, N, views, owned, &nowned)
        hfair = view_or_copy(d.hfair, N, views, owned, &nowned)
        for p in range(P):
            if split[p]:
                for j in range(o[p], o[p + 1]):
                    heat[r[j]] += pheat[p]
        for n in range(N):
            if not elig[n]:
                band += cnt[n] > 0
                continue
            band += not (lo[n] <= cnt[n] <= hi[n])
            cap = hcap[n] if hcap[n] > cap_floor else cap_floor
            hot += heat[n] > cap
            if hfair[n] > 0:
                x = <double>heat[n] / <double>hfair[n]
                if x > ratio:
                    ratio = x
        return band, hot, ratio
    finally:
        free(heat)
        for k in range(nowned):
            free(owned[k])


def hotter_than(object heat, long long above, list part_ids):
    """Compiled `bounds.hotter_than`: array('q') of 1 where heat > above, else 0, and the ids
    flagged, in order."""
    cdef Py_ssize_t i, n = len(heat), k = 0
    cdef array.array out = array.clone(_QARRAY, n, False)
    cdef long long *o = out.data.as_longlongs
    cdef list views = []
    cdef int64_t *h = borrow(heat, n, views)
    cdef int64_t *own = NULL
    cdef list ids = []
    if h == NULL:
        h = own = to_c(heat, n)
    try:
        for i in range(n):
            o[i] = 1 if h[i] > above else 0
            if o[i]:
                ids.append(part_ids[i])
    finally:
        free(own)
    return out, tuple(ids)


def same_items(list parts, tuple partitions):
    """True if `parts` holds the very objects of `partitions`, in the same order."""
    cdef Py_ssize_t i, n = len(parts)
    if n != len(partitions):
        return False
    for i in range(n):
        if PyList_GET_ITEM(parts, i) != PyTuple_GET_ITEM(partitions, i):
            return False
    return True


def parts_delta(tuple old, tuple new, object rf_old, object heat_old):
    """The partition arrays of `new` (see bounds._partition_arrays) from those of `old`, an
    earlier tuple in sorted-id order whose arrays are `rf_old` and `heat_old`: the partitions
    `new` shares with it (the same objects at the same places) keep their values, the others
    are read. None when `new` is longer or shorter or has another id anywhere."""
    cdef Py_ssize_t i, n = len(new)
    cdef array.array rf, heat
    cdef long long *r
    cdef long long *h
    cdef PyObject *a
    cdef long long replicas = 0, heat_total = 0, heat_sum = 0, rf_max = 0, heat_top = 0
    if (len(old) != n or not isinstance(rf_old, array.array) or not isinstance(heat_old, array.array)
            or len(rf_old) != n or len(heat_old) != n):
        return None
    rf = array.copy(rf_old)
    heat = array.copy(heat_old)
    if rf.typecode != "q" or heat.typecode != "q":
        return None
    r = rf.data.as_longlongs
    h = heat.data.as_longlongs
    for i in range(n):
        a = PyTuple_GET_ITEM(new, i)
        if a == PyTuple_GET_ITEM(old, i):
            continue
        if (<object>a).id != (<object>PyTuple_GET_ITEM(old, i)).id:
            return None
        r[i] = (<object>a).rf
        h[i] = (<object>a).heat
    for i in range(n):
        replicas += r[i]
        heat_total += h[i] * r[i]
        heat_sum += h[i]
        if r[i] > rf_max:
            rf_max = r[i]
        if h[i] > heat_top:
            heat_top = h[i]
    return rf, heat, replicas, heat_total, heat_sum, rf_max, heat_top
