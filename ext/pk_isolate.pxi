# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 4b: isolate split candidates (_pure._isolate, _isolate_home, _kept, _isolate_shed).


cdef void pin_all(S *s) noexcept nogil:
    """s.pinned[n] = 1 for every node holding a split candidate (_pure._State.pinned)."""
    cdef int64_t p, j
    for p in range(s.P):
        if s.split[p]:
            for j in range(s.pn_len[p]):
                s.pinned[s.pn[p * s.RMAX + j]] = 1


cdef int64_t kept(S *s, int64_t t, Pair *buf) noexcept nogil:
    """_pure._kept: the sum of t's coldest lo - 1 movable heats (`buf` holds nr_len[t])."""
    cdef int64_t i, p, k = 0, total = 0
    for i in range(s.nr_len[t]):
        p = s.nr[t][i]
        if not s.split[p]:
            buf[k].a = s.heat[p]
            buf[k].b = 0
            buf[k].c = 0
            k += 1
    sort_pairs(buf, k)
    for i in range(k if k < s.lo[t] - 1 else s.lo[t] - 1):
        total += buf[i].a
    return total


cdef int64_t isolate_home(S *s, Cap *c, int64_t p, int64_t n, Pair *cands, Pair *buf,
                          int64_t *qout) noexcept nogil:
    """_pure._isolate_home: the new node for split replica p on n (-1: none), its send-back
    replica into qout (-1: none)."""
    cdef int64_t t, q, i, k, bq, bh, nc = 0
    cdef Py_ssize_t a
    qout[0] = -1
    for t in range(s.N):
        if (not s.elig[t] or s.pinned[t] or s.hfair[t] <= s.hfair[n]
                or not zone_free(s, p, n, s.zone[t])):
            continue
        cands[nc].a = fair_key(s, s.heat[p] + kept(s, t, buf), t)
        cands[nc].b = t
        cands[nc].c = 0
        nc += 1
    sort_pairs(cands, nc)
    for a in range(nc if nc < ISOLATE_CANDIDATES else ISOLATE_CANDIDATES):
        t = cands[a].b
        if s.count[n] > s.lo[n] and s.count[t] < s.hi[t]:
            return t
        bq = -1
        bh = 0
        for i in range(s.nr_len[t]):
            q = s.nr[t][i]
            if s.split[q] or on_node(s, q, n):
                continue
            if s.zone[t] != s.zone[n] and not zone_free(s, q, -1, s.zone[n]):
                continue
            if s.nheat[n] - s.heat[p] + s.heat[q] > c.caps[n]:
                continue
            if bq < 0 or s.heat[q] > bh or (s.heat[q] == bh and q < bq):
                bq = q
                bh = s.heat[q]
        if bq >= 0:
            qout[0] = bq
            return t
    return -1


cdef int64_t isolate_shed(S *s, Cap *c, int64_t n, int64_t allowance, int64_t paid_above,
                          Pair *buf) noexcept nogil:
    """_pure._isolate_shed: n's hottest other replicas away while it is over its 1.10x cap and
    above its band (new moves only while its other heat is above `paid_above`)."""
    cdef int64_t i, k, q, u, h, du, dkey, bq, fresh, pinned_heat = 0
    cdef Py_ssize_t a
    cdef bint paid
    for i in range(s.nr_len[n]):
        if s.split[s.nr[n][i]]:
            pinned_heat += s.heat[s.nr[n][i]]
    while allowance > 0 and s.nheat[n] > s.hcap[n] and s.count[n] > s.lo[n]:
        paid = s.nheat[n] - pinned_heat > paid_above
        k = 0
        for i in range(s.nr_len[n]):
            q = s.nr[n][i]
            if not s.split[q]:
                buf[k].a = -s.heat[q]
                buf[k].b = q
                buf[k].c = 0
                k += 1
        sort_pairs(buf, k)
        bq = -1
        du = -1
        for a in range(k):
            q = buf[a].b
            fresh = cap_fresh(s, c, q, n)
            if not paid and fresh < 0:
                continue
            h = s.heat[q]
            du = -1
            dkey = 0
            for u in range(s.N):
                if (not s.elig[u] or u == n or s.pinned[u] or s.count[u] >= s.hi[u]
                        or s.nheat[u] + h > c.caps[u] or not zone_free(s, q, n, s.zone[u])):
                    continue
                if du < 0 or s.nheat[u] - c.caps[u] < dkey:
                    du = u
                    dkey = s.nheat[u] - c.caps[u]
            if du >= 0:
                bq = q
                break
        if bq < 0:
            break
        allowance -= cap_shift(s, c, bq, n, du, cap_fresh(s, c, bq, n))
    return allowance


cdef int64_t isolate(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._isolate: each split candidate's replicas on the nodes where they do least harm."""
    cdef Cap c
    cdef int64_t p, n, t, q, i, j, k, tmp, home, ns = 0, nmax = 0, top = 0, paid_above
    cdef int64_t fair_max, floor_key
    cdef bint low
    cdef int64_t *cold
    cdef Py_ssize_t ncold = 0
    cdef int64_t reps[64]
    cdef Pair *splits
    cdef Pair *cands
    cdef Pair *buf
    cdef Py_ssize_t a, ii
    for p in range(s.P):
        if s.split[p]:
            ns += 1
        if s.heat[p] > top:
            top = s.heat[p]  # Dense.heat_top
    if ns == 0:
        return allowance
    splits = <Pair *>cp_xmalloc((ns + 1) * sizeof(Pair))
    ns = 0
    for p in range(s.P):
        if s.split[p]:
            splits[ns].a = -s.heat[p]
            splits[ns].b = p
            splits[ns].c = 0
            ns += 1
    sort_pairs(splits, ns)
    pin_all(s)
    for n in range(s.N):
        nmax += s.nr_len[n]  # every replica: a node never holds more, whatever moves
    cands = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
    buf = <Pair *>cp_xmalloc((nmax + 2) * sizeof(Pair))
    c.caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    for n in range(s.N):
        c.caps[n] = target_cap(s, lb, n)
    c.head = <int64_t *>cp_xmalloc((s.P + 1) * sizeof(int64_t))
    c.pcap = s.nm + 64
    c.prev = <int64_t *>cp_xmalloc(c.pcap * sizeof(int64_t))
    for p in range(s.P):
        c.head[p] = -1
    for ii in range(s.nm):
        c.prev[ii] = c.head[s.mp[ii]]
        c.head[s.mp[ii]] = ii
    cold = <int64_t *>cp_xmalloc((s.P + 1) * sizeof(int64_t))  # prefix sums, coldest first
    for p in range(s.P):
        if not s.split[p]:
            cold[ncold] = s.heat[p]
            ncold += 1
    sort_i64(cold, ncold)
    tmp = 0
    for ii in range(ncold):  # cold[i] becomes the sum of the i coldest
        k = cold[ii]
        cold[ii] = tmp
        tmp += k
    cold[ncold] = tmp
    fair_max = 0  # _pure._isolate: the peak no plan avoids
    for n in range(s.N):
        if s.elig[n] and s.hfair[n] > fair_max:
            fair_max = s.hfair[n]
    floor_key = (s.heat[splits[0].b] << SHIFT) // (fair_max if fair_max > 1 else 1)
    for a in range(ns):
        p = splits[a].b
        k = s.pn_len[p]
        for j in range(k):  # a snapshot, ascending (_pure: sorted(s.part_reps[p]))
            reps[j] = s.pn[p * s.RMAX + j]
        for j in range(1, k):
            tmp = reps[j]
            i = j - 1
            while i >= 0 and reps[i] > tmp:
                reps[i + 1] = reps[i]
                i -= 1
            reps[i + 1] = tmp
        for j in range(k):
            n = reps[j]
            if allowance <= 0:
                break
            home = n
            t = -1
            q = -1
            low = 4 * fair_key(s, s.nheat[n], n) <= 5 * floor_key
            if s.nheat[n] > (s.hcap[n] if s.hcap[n] > top else top) and not low:
                t = isolate_home(s, &c, p, n, cands, buf, &q)
            if t >= 0 and allowance >= 1 + (1 if q >= 0 else 0):
                allowance -= cap_shift(s, &c, p, n, t, cap_fresh(s, &c, p, n))
                s.pinned[t] = 1
                s.pinned[n] = 0
                for i in range(s.nr_len[n]):
                    if s.split[s.nr[n][i]]:
                        s.pinned[n] = 1
                if q >= 0:
                    allowance -= cap_shift(s, &c, q, t, n, cap_fresh(s, &c, q, t))
                home = t
            if home != n:
                paid_above = -1
            else:  # _pure._isolate: twice the coldest lo - 1 movable heats anywhere
                i = s.lo[n] - 1
                if i < 0:
                    i = 0
                if i > ncold:
                    i = ncold
                paid_above = 2 * cold[i]
                if low:
                    paid_above = UNLIMITED
            allowance = isolate_shed(s, &c, home, allowance, paid_above, buf)
        if allowance <= 0:
            break
    cp_xfree(cold); cp_xfree(splits); cp_xfree(cands); cp_xfree(buf); cp_xfree(c.caps); cp_xfree(c.head)
    cp_xfree(c.prev)
    return allowance
