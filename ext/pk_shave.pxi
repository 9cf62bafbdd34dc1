# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 5: shave the hottest nodes toward their fair heat, then the peak pass (_pure._shave,
# _pure._peak).


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
    cdef int64_t *movable = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef Pair *order = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
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
            if (not s.elig[m] or m == n or s.pinned[m] or s.count[m] >= s.hi[m]
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
    cp_xfree(movable)
    cp_xfree(order)
    return allowance


cdef void peak(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._peak: lower the hottest node while one move does it."""
    cdef int64_t *movable = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    cdef int64_t *cold = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))  # -2: not computed
    cdef int64_t hot[PEAK_CANDIDATES]
    cdef int64_t n, m, i, j, k, p, r, t, h, round_, nh, top, after_n, after_t, worst
    cdef int64_t bk0 = 0, bk1 = 0, br = -1, bt = -1, bq = -1, q, back
    cdef bint ok, swap
    cdef bint over = False
    cdef int64_t *sh = split_heat(s)
    for n in range(s.N):
        cold[n] = -2
        movable[n] = s.nheat[n] - sh[n]
        if s.elig[n] and movable[n] > target_cap(s, lb, n):
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
                if (not s.elig[t] or t == n or s.pinned[t]
                        or (not swap and s.count[t] >= s.hi[t])):
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
                if (movable[t] + h - back > target_cap(s, lb, t)
                        and movable[t] + h - back > movable[t]):
                    continue  # _pure._peak: never pushes another node over its cap
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
    cp_xfree(movable)
    cp_xfree(cold)
    cp_xfree(sh)
