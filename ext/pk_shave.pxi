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
    fair key of a node's hottest movable replica over eligible nodes. Read partition by
    partition (s.pn is laid out in partition order; sums and maxima do not depend on the order),
    not node by node through every replica's heat at random: several phases call this."""
    cdef int64_t n, j, p, h, k, ukey = 0, rmax = s.RMAX, parts = s.P, nodes = s.N
    cdef const int64_t *heat = s.heat
    cdef const int64_t *split = s.split
    cdef const int64_t *pn = s.pn
    cdef const int64_t *pn_len = s.pn_len
    cdef const int64_t *row
    cdef int64_t *top = <int64_t *>cp_xcalloc(nodes + 1, sizeof(int64_t))
    memset(mov, 0, nodes * sizeof(int64_t))
    for p in range(parts):
        if split[p]:
            continue
        h = heat[p]
        row = &pn[p * rmax]
        for j in range(pn_len[p]):
            n = row[j]
            mov[n] += h
            if h > top[n]:
                top[n] = h
    for n in range(nodes):
        if s.elig[n]:
            k = fair_key(s, top[n], n)
            if k > ukey:
                ukey = k
    cp_xfree(top)
    return ukey


cdef int64_t shave(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._shave: one move off each node above the unavoidable ratio U, unless every node
    meets its heat cap."""
    cdef int64_t *movable = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef Pair *order = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
    cdef int64_t n, i, j, p, no = 0, r, h, t, m, k
    cdef bint ok
    cdef bint over = False
    cdef int64_t ukey = movable_and_u(s, movable)
    for n in range(s.N):
        if s.elig[n] and movable[n] > target_cap(s, lb, n):
            over = True
    for n in range(s.N if over else 0):
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


cdef Pair *sorted_movable(S *s, Pair **rows, int64_t *rows_len, bint *rows_ok,
                          int64_t t) noexcept nogil:
    """_pure._by_heat for node t, cached in `rows` until rows_ok[t] is cleared."""
    cdef int64_t j, p, k = 0
    if not rows_ok[t]:
        cp_xfree(rows[t])
        rows[t] = <Pair *>cp_xmalloc((s.nr_len[t] + 1) * sizeof(Pair))
        for j in range(s.nr_len[t]):
            p = s.nr[t][j]
            if not s.split[p]:
                rows[t][k].a = s.heat[p]
                rows[t][k].b = p
                rows[t][k].c = 0
                k += 1
        sort_pairs(rows[t], k)
        rows_len[t] = k
        rows_ok[t] = True
    return rows[t]


cdef int64_t peak_back(S *s, Pair **rows, int64_t *rows_len, bint *rows_ok, int64_t n,
                       int64_t t, int64_t h, int64_t need) noexcept nogil:
    """_pure._peak_back: t's coldest replica of heat >= need and < h that n may hold, or -1."""
    cdef Pair *row = sorted_movable(s, rows, rows_len, rows_ok, t)
    cdef Py_ssize_t lo = 0, hi = rows_len[t], mid, k
    cdef int64_t q, j, m
    cdef bint ok
    while lo < hi:
        mid = (lo + hi) // 2
        if row[mid].a < need:
            lo = mid + 1
        else:
            hi = mid
    for k in range(lo, min(lo + PEAK_BACK_SCAN, rows_len[t])):
        if row[k].a >= h:
            break
        q = row[k].b
        if on_node(s, q, n):
            continue
        ok = True
        for j in range(s.pn_len[q]):
            m = s.pn[q * s.RMAX + j]
            if m != t and s.zone[m] == s.zone[n]:
                ok = False
                break
        if ok:
            return q
    return -1


cdef void peak(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._peak: lower the hottest node while one move does it."""
    cdef int64_t *movable = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    cdef int64_t *cold = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))  # -2: not computed
    cdef int64_t hot[PEAK_CANDIDATES]
    cdef int64_t n, m, i, j, k, p, r, t, h, round_, nh, top, after_n, after_t, worst
    cdef int64_t bk0 = 0, bk1 = 0, br = -1, bt = -1, bq = -1, q, back, gain
    cdef bint ok, swap
    cdef bint over = False
    cdef int64_t *sh = split_heat(s)
    cdef Pair **rows = <Pair **>cp_xcalloc(s.N + 1, sizeof(Pair *))
    cdef int64_t *rows_len = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    cdef bint *rows_ok = <bint *>cp_xcalloc(s.N + 1, sizeof(bint))
    for n in range(s.N):
        cold[n] = -2
        movable[n] = s.nheat[n] - sh[n]
        if s.elig[n] and movable[n] > target_cap(s, lb, n):
            over = True
    cdef int64_t slack_end = 0  # _pure._peak: moves the relaxed gain may take the plan to
    if over:
        slack_end = lb_target(s, lb)
        slack_end += slack_end * PEAK_SLACK_PCT // 100
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
                        q = peak_back(s, rows, rows_len, rows_ok, n, t, h,
                                      movable[t] + h - target_cap(s, lb, t))
                        if q < 0:
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
        gain = PEAK_GAIN_PERMILLE
        if movable[n] > target_cap(s, lb, n) and s.nm + 1 + (1 if swap else 0) <= slack_end:
            gain = PEAK_GAIN_OVER_PERMILLE
        if br < 0 or bk0 * 1000 > top * (1000 - gain):
            break
        cold[n] = -2
        cold[bt] = -2
        rows_ok[n] = False
        rows_ok[bt] = False
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
    for n in range(s.N):
        cp_xfree(rows[n])
    cp_xfree(rows)
    cp_xfree(rows_len)
    cp_xfree(rows_ok)
    cp_xfree(movable)
    cp_xfree(cold)
    cp_xfree(sh)


cdef void polish(S *s, LB *lb) noexcept nogil:
    """_pure._polish: lower the hottest node by swapping the targets of two moves (free)."""
    cdef Cap c
    cdef Pair *order
    cdef Pair *fn
    cdef Pair *ft
    cdef int64_t n, m, t, p, r, q, h, b, i, j, k, peak_, after_n, after_t, worst, takers
    cdef int64_t bk0 = 0, bk1 = 0, br = -1, bt = -1, bq = -1, bi = -1, bj = -1, ncand
    cdef int64_t round_
    cdef Py_ssize_t a, no, x, ii
    cdef bint ok
    if s.nm == 0:
        return
    c.caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    c.mov = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    movable_and_u(s, c.mov)
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
    c.bh = <Pair **>cp_xcalloc(s.N + 1, sizeof(Pair *))
    c.bh_len = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    c.bh_ok = <bint *>cp_xcalloc(s.N + 1, sizeof(bint))
    c.fr = <Pair **>cp_xcalloc(s.N + 1, sizeof(Pair *))
    c.fr_len = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    order = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
    cdef char *filled = <char *>cp_xcalloc(s.N + 1, 1)  # a move of this plan ends there
    for ii in range(s.nm):
        if s.md[ii] >= 0:
            filled[s.md[ii]] = 1
    for round_ in range(POLISH_ROUNDS):
        n = -1
        for m in range(s.N):
            if s.elig[m] and (n < 0 or fair_key(s, s.nheat[m], m) > fair_key(s, s.nheat[n], n)):
                n = m
        if n < 0:
            break
        peak_ = fair_key(s, s.nheat[n], n)
        cap_by_heat(s, &c, n)
        no = 0
        for m in range(s.N):
            if s.elig[m] and m != n and not s.pinned[m] and filled[m]:
                order[no].a = fair_key(s, s.nheat[m], m)
                order[no].b = m
                order[no].c = 0
                no += 1
        sort_pairs(order, no)
        br = -1
        ncand = 0
        a = c.fr_len[n] - 1
        while a >= 0 and ncand < POLISH_CANDIDATES:
            fn = c.fr[n]  # re-read: cap_by_heat of another node never touches n's row
            h = fn[a].a
            r = fn[a].b
            a -= 1
            if h <= 0:
                continue
            ncand += 1
            i = cap_fresh(s, &c, r, n)
            takers = 0
            for x in range(no):
                if takers >= POLISH_TAKERS:
                    break
                t = order[x].b
                if t == s.ms[i] or on_node(s, r, t):
                    continue
                ok = True
                for k in range(s.pn_len[r]):
                    m = s.pn[r * s.RMAX + k]
                    if m != n and s.zone[m] == s.zone[t]:
                        ok = False
                        break
                if not ok:
                    continue
                cap_by_heat(s, &c, t)
                if c.fr_len[t] == 0:
                    continue
                takers += 1
                ft = c.fr[t]
                for k in range(min(<int64_t>POLISH_SCAN, c.fr_len[t])):
                    b = ft[k].a
                    q = ft[k].b
                    if b >= h:
                        break
                    if on_node(s, q, n):
                        continue
                    ok = True
                    for j in range(s.pn_len[q]):
                        m = s.pn[q * s.RMAX + j]
                        if m != t and s.zone[m] == s.zone[n]:
                            ok = False
                            break
                    if not ok:
                        continue
                    j = cap_fresh(s, &c, q, t)
                    if s.ms[j] == n:
                        continue
                    if c.mov[t] + h - b > c.caps[t] and c.mov[t] + h - b > c.mov[t]:
                        continue  # never pushes the taker over its cap
                    after_n = fair_key(s, s.nheat[n] - h + b, n)
                    after_t = fair_key(s, s.nheat[t] + h - b, t)
                    worst = after_n if after_n > after_t else after_t
                    # key (worst, after_t, r, t, q), smallest wins (i, j follow from them)
                    if (br < 0 or worst < bk0 or (worst == bk0 and (after_t < bk1 or (
                            after_t == bk1 and (r < br or (r == br and (t < bt or (
                                t == bt and q < bq)))))))):
                        bk0 = worst
                        bk1 = after_t
                        br = r
                        bt = t
                        bq = q
                        bi = i
                        bj = j
                    break
        if br < 0 or bk0 >= peak_:
            break
        remove(s, br, n)
        add(s, br, bt)
        s.md[bi] = bt
        remove(s, bq, bt)
        add(s, bq, n)
        s.md[bj] = n
        c.mov[n] += s.heat[bq] - s.heat[br]
        c.mov[bt] += s.heat[br] - s.heat[bq]
        c.bh_ok[n] = False
        c.bh_ok[bt] = False
    for n in range(s.N):
        cp_xfree(c.bh[n])
        cp_xfree(c.fr[n])
    cp_xfree(c.bh); cp_xfree(c.bh_len); cp_xfree(c.bh_ok); cp_xfree(c.fr); cp_xfree(c.fr_len)
    cp_xfree(c.head); cp_xfree(c.prev); cp_xfree(c.caps); cp_xfree(c.mov); cp_xfree(order)
    cp_xfree(filled)
