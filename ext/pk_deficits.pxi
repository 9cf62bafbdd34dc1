# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 3: fill the nodes below their band from donors (_pure._fill_deficits and helpers).


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
    cdef Pair *cands = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
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
    cp_xfree(cands)
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


cdef int64_t hold_gift(S *s, int64_t donor, int64_t dst) noexcept nogil:
    """_pure._hold_gift: a split candidate's node gives its hottest other replica that keeps
    dst under its heat cap, or -1."""
    cdef int64_t j, p, best = -1
    for j in range(s.nr_len[donor]):
        p = s.nr[donor][j]
        if s.split[p] or s.nheat[dst] + s.heat[p] > s.hcap[dst]:
            continue
        if best < 0 or s.heat[p] > s.heat[best] or (s.heat[p] == s.heat[best] and p < best):
            best = p
    return best


cdef int64_t fill_deficits(S *s, int64_t allowance, bint hot_first) noexcept nogil:
    cdef Heap *donors
    cdef Heap *h
    cdef int64_t n, dst, donor, e, p, z
    cdef int64_t *mov
    cdef int64_t *hot
    cdef int64_t *hold
    cdef Py_ssize_t nhot = 0, j
    for n in range(s.N):
        if s.elig[n] and s.count[n] < s.lo[n]:
            break
    else:
        return allowance  # no node is short: as _pure, skip the set-up
    donors = <Heap *>cp_xcalloc(s.Z, sizeof(Heap))
    mov = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    hot = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    hold = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))  # _pure: a split's node gives first
    if hot_first:
        for n in range(s.N):
            for j in range(s.nr_len[n]):
                if s.split[s.nr[n][j]]:
                    hold[n] = (<int64_t>1) << DONOR_HOLD_SHIFT
                    break
    for n in range(s.N):
        if s.elig[n] and s.count[n] > s.lo[n]:
            heap_push(&donors[s.zone[n]], -fill(s, n) - hold[n], n)
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
            if s.count[e] > s.lo[e] and h.key[0] == -fill(s, e) - hold[e]:
                donor = e
                p = hold_gift(s, donor, dst) if hold[e] else -1
                if p < 0:
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
            heap_push(&donors[s.zone[donor]], -fill(s, donor) - hold[donor], donor)
        if s.count[dst] < s.lo[dst]:
            heap_push(&short, short_key(s, dst), dst)
    cp_xfree(short.key)
    cp_xfree(short.val)
    for z in range(s.Z):
        cp_xfree(donors[z].key)
        cp_xfree(donors[z].val)
    cp_xfree(donors)
    cp_xfree(mov)
    cp_xfree(hot)
    cp_xfree(hold)
    return allowance


cdef int64_t *split_heat(S *s) noexcept nogil:
    """Per node, the heat of its split-candidate replicas (node heat minus this is its movable
    heat): a scan of the partitions, in order, instead of every replica's split flag at random."""
    cdef int64_t *out = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    cdef int64_t p, j
    for p in range(s.P):
        if s.split[p]:
            for j in range(s.pn_len[p]):
                out[s.pn[p * s.RMAX + j]] += s.heat[p]
    return out
