# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Lower bounds (bounds.lower_bound_dense / plan_lower_bound_dense): LB set-up and finish.


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
    cdef int64_t p, j, i, n, valid, kept, dup, size, m, total = 0, h, hm, zn, pos, placed
    cdef int64_t *row
    cdef int64_t *prow
    cdef const int64_t *cur
    # The arrays as locals: stores through one int64 pointer would otherwise make the compiler
    # reload every field of s (it may alias them) for each replica.
    cdef int64_t **nr = s.nr
    cdef int64_t *nr_len = s.nr_len
    cdef int64_t *count = s.count
    cdef int64_t *nheat = s.nheat
    cdef int64_t *zc = s.zc
    cdef int64_t *mheat0
    cdef int64_t *count0
    cdef const int64_t *zone = s.zone
    cdef const int64_t *elig = s.elig
    cdef const int64_t *heat = s.heat
    cdef const int64_t *split = s.split
    cdef const int64_t *rf = s.rf
    cdef const int64_t *off = s.off
    cdef const int64_t *rep = s.rep
    cdef int64_t rmax = s.RMAX, parts = s.P, nodes = s.N
    cdef int64_t drops = 0, adds = 0, part_leave = 0, part_arrive = 0, hottest = 0, nd = 0
    b.count0 = count0 = <int64_t *>cp_xcalloc(nodes + 1, sizeof(int64_t))
    b.mheat0 = mheat0 = <int64_t *>cp_xcalloc(nodes + 1, sizeof(int64_t))
    b.hs_off = <int64_t *>cp_xcalloc(nodes + 1, sizeof(int64_t))
    s.dirty = <int64_t *>cp_xmalloc((parts + 1) * sizeof(int64_t))
    for j in range(off[parts]):
        count0[rep[j]] += 1
    for n in range(nodes):
        s.nr_cap[n] = (count0[n] if elig[n] else 0) + 8
        nr[n] = <int64_t *>cp_xmalloc(s.nr_cap[n] * sizeof(int64_t))
    for p in range(parts):
        valid = 0
        placed = 0
        h = heat[p]
        hm = 0 if split[p] else h
        row = &s.pn[p * rmax]
        prow = &s.pn_pos[p * rmax]
        cur = &rep[off[p]]
        size = off[p + 1] - off[p]
        for j in range(size):
            n = cur[j]
            mheat0[n] += hm
            if not elig[n]:
                continue
            pos = nr_len[n]
            nr[n][pos] = p
            nr_len[n] = pos + 1
            row[placed] = n
            prow[placed] = pos
            placed += 1
            count[n] += 1
            nheat[n] += h
            zn = zone[n]
            zc[zn] += 1
            dup = 0
            for i in range(j):
                if elig[cur[i]] and zone[cur[i]] == zn:
                    dup = 1
            valid += 1 - dup
        s.pn_len[p] = placed
        if valid != size or size > rf[p]:  # evictions or drops for normalize
            s.dirty[nd] = p
            nd += 1
        kept = valid if valid < rf[p] else rf[p]
        if size > rf[p]:
            drops += size - rf[p]
        else:
            adds += rf[p] - size
        part_leave += size - kept
        part_arrive += rf[p] - kept
        if hm > hottest:
            hottest = hm
    s.nd = nd
    b.drops = drops
    b.adds = adds
    b.part_leave = part_leave
    b.part_arrive = part_arrive
    b.hottest = hottest
    for n in range(s.N):
        b.hs_off[n] = total
        if s.elig[n] and b.mheat0[n] > target_cap(s, b, n):
            total += s.nr_len[n]
    b.hs_off[s.N] = total
    b.hs = <int64_t *>cp_xmalloc((total + 1) * sizeof(int64_t))
    for n in range(s.N):
        if b.hs_off[n + 1] == b.hs_off[n]:
            continue
        m = 0
        for i in range(s.nr_len[n]):
            p = s.nr[n][i]
            if not s.split[p]:
                b.hs[b.hs_off[n] + m] = s.heat[p]
                m += 1
        top_desc(&b.hs[b.hs_off[n]], m, b.mheat0[n] - target_cap(s, b, n))
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
    cdef int64_t *caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        caps[n] = target_cap(s, b, n)
    out = lb_finish(s, b, caps, s.lo, s.hi)
    cp_xfree(caps)
    return out


cdef int64_t lb_plan(S *s, LB *b, int64_t *mheat) noexcept nogil:
    """bounds.plan_lower_bound_dense(d, count, mheat) on the final state: each node's band
    widened to its final count and its heat cap raised to its final movable heat, per node
    (bounds.plan_bands, bounds.plan_heat_caps). Never below the target caps, as lb_finish needs."""
    cdef int64_t n, out
    cdef int64_t *caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *lo = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *hi = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        lo[n] = s.lo[n] if s.lo[n] < s.count[n] else s.count[n]
        hi[n] = s.hi[n] if s.hi[n] > s.count[n] else s.count[n]
        caps[n] = target_cap(s, b, n)
        if mheat[n] > caps[n]:
            caps[n] = mheat[n]
    out = lb_finish(s, b, caps, lo, hi)
    cp_xfree(caps)
    cp_xfree(lo)
    cp_xfree(hi)
    return out


cdef void lb_free(LB *b) noexcept nogil:
    cp_xfree(b.count0)
    cp_xfree(b.mheat0)
    cp_xfree(b.hs_off)
    cp_xfree(b.hs)
