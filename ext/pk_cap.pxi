# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 4: the heat cap (_pure._cap, _cap_node, _cap_room, _cap_single, _cap_swap) and the
# hot gifts of an unbudgeted solve (_pure._hot_gifts).


cdef int64_t cap_fresh(S *s, Cap *c, int64_t p, int64_t n) noexcept nogil:
    """_pure._fresh: the last move of p onto n in the plan, or -1."""
    cdef int64_t i = c.head[p]
    while i >= 0:
        if s.md[i] == n:
            return i
        i = c.prev[i]
    return -1


cdef void by_heat_fresh_sort(S *s, Cap *c, int64_t t) noexcept nogil:
    """c.bh[t]: t's movable replicas as (heat, index, 0), sorted."""
    cdef int64_t j, p, k = 0
    cp_xfree(c.bh[t])
    c.bh[t] = <Pair *>cp_xmalloc((s.nr_len[t] + 1) * sizeof(Pair))
    for j in range(s.nr_len[t]):
        p = s.nr[t][j]
        if not s.split[p]:
            c.bh[t][k].a = s.heat[p]
            c.bh[t][k].b = p
            c.bh[t][k].c = 0
            k += 1
    sort_pairs(c.bh[t], k)
    c.bh_len[t] = k


cdef void by_heat_resort(S *s, Cap *c, int64_t t) noexcept nogil:
    """c.bh[t] brought up to date from its stale self: the replicas still on t keep their
    order, the few that came since are sorted and merged in. The same row as sorting afresh
    (a total order), without sorting the hundreds that stayed after every move."""
    cdef int64_t j, p, i, e, k = 0, nadd = 0, a, b
    cdef int64_t *mark
    cdef Pair *old = c.bh[t]
    cdef Pair *out
    cdef Pair *add
    cdef int64_t *cur = s.nr[t]
    cdef int64_t nlen = s.nr_len[t]
    if s.bh_mark == NULL:
        s.bh_mark = <int64_t *>cp_xcalloc(s.P + 1, sizeof(int64_t))
    mark = s.bh_mark
    s.bh_epoch += 2
    e = s.bh_epoch  # e: on t now; e + 1: on t now and in the stale row
    for j in range(nlen):
        mark[cur[j]] = e
    for i in range(c.bh_len[t]):
        p = old[i].b
        if mark[p] == e:
            mark[p] = e + 1
            old[k] = old[i]
            k += 1
    out = <Pair *>cp_xmalloc((nlen + 1) * sizeof(Pair))
    add = <Pair *>cp_xmalloc((nlen + 1) * sizeof(Pair))
    for j in range(nlen):
        p = cur[j]
        if mark[p] == e and not s.split[p]:
            add[nadd].a = s.heat[p]
            add[nadd].b = p
            add[nadd].c = 0
            nadd += 1
    sort_pairs(add, nadd)
    a = 0
    b = 0
    j = 0
    while a < k and b < nadd:
        if _pair_less(&add[b], &old[a]):
            out[j] = add[b]
            b += 1
        else:
            out[j] = old[a]
            a += 1
        j += 1
    while a < k:
        out[j] = old[a]
        a += 1
        j += 1
    while b < nadd:
        out[j] = add[b]
        b += 1
        j += 1
    cp_xfree(add)
    cp_xfree(old)
    c.bh[t] = out
    c.bh_len[t] = j


cdef Pair *cap_by_heat(S *s, Cap *c, int64_t t) noexcept nogil:
    """_pure._by_heat, cached until t changes; with it _pure._fresh_row (c.fr[t])."""
    cdef int64_t j, k, f = 0
    if not c.bh_ok[t]:
        if c.bh[t] == NULL:
            by_heat_fresh_sort(s, c, t)
        else:
            by_heat_resort(s, c, t)
        k = c.bh_len[t]
        cp_xfree(c.fr[t])
        c.fr[t] = <Pair *>cp_xmalloc((k + 1) * sizeof(Pair))
        for j in range(k):
            if cap_fresh(s, c, c.bh[t][j].b, t) >= 0:
                c.fr[t][f] = c.bh[t][j]
                f += 1
        c.fr_len[t] = f
        c.bh_ok[t] = True
    return c.bh[t]


cdef inline bint on_node(S *s, int64_t p, int64_t n) noexcept nogil:
    cdef int64_t j
    for j in range(s.pn_len[p]):
        if s.pn[p * s.RMAX + j] == n:
            return True
    return False


cdef bint zone_free(S *s, int64_t p, int64_t skip, int64_t z) noexcept nogil:
    """No replica of p in zone z, the one on node `skip` aside."""
    cdef int64_t j, m
    for j in range(s.pn_len[p]):
        m = s.pn[p * s.RMAX + j]
        if m != skip and s.zone[m] == z:
            return False
    return True


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
    cdef int scan
    cdef Pair *row
    cdef bint found = False, bad, usable
    cdef int64_t cand[8]
    cdef int64_t takers = 0
    for b in range(nrooms):
        if takers >= CAP_SWAP_TAKERS:
            break
        t = rooms[b].b
        zt = s.zone[t]
        usable = False  # the zones let one of the candidates go to t
        for a in range(first, nhot):
            p = hot[a].b
            if on_node(s, p, t):
                continue
            bad = False
            if zt != zn:
                for j in range(s.pn_len[p]):
                    if s.zone[s.pn[p * s.RMAX + j]] == zt:
                        bad = True
                        break
            if not bad:
                usable = True
                break
        if not usable:
            continue
        takers += 1
        room = c.caps[t] - c.mov[t]
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
            for scan in range(2):  # t's replicas, then those this plan moves onto t
                row = cap_by_heat(s, c, t) if scan == 0 else c.fr[t]
                rlen = c.bh_len[t] if scan == 0 else c.fr_len[t]
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
                    if short:  # _pure: a paid swap that leaves n over, the most heat per move
                        cand[1] = 1 if cost > 0 else 0
                        cand[2] = -(gain // (cost if cost > 1 else 1))
                    else:
                        cand[1] = cost
                        cand[2] = gain
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
        c.prev = <int64_t *>cp_xrealloc(c.prev, c.pcap * sizeof(int64_t))
    c.prev[s.nm] = c.head[p]
    c.head[p] = s.nm
    record(s, p, src, dst)
    return 1


cdef void cap_log(int64_t **log, int64_t *nlog, Py_ssize_t *logcap, int64_t p, int64_t src,
                  int64_t dst, int64_t i) noexcept nogil:
    if nlog[0] + 4 > logcap[0]:
        logcap[0] = logcap[0] * 2 + 64
        log[0] = <int64_t *>cp_xrealloc(log[0], logcap[0] * sizeof(int64_t))
    log[0][nlog[0]] = p
    log[0][nlog[0] + 1] = src
    log[0][nlog[0] + 2] = dst
    log[0][nlog[0] + 3] = i
    nlog[0] += 4


cdef int64_t room_plan(S *s, int64_t n, int64_t r, int64_t t, int64_t need0, int64_t fits,
                       Pair *hot, Py_ssize_t nhot, Pair *row, Py_ssize_t rlen, int64_t *allowed,
                       int64_t *nb) noexcept nogil:
    """_pure._room_plan: how many of t's hottest replicas it sheds (-1: it cannot make room);
    the first nb[0] of `allowed` (n's coldest replicas t may take) go to t."""
    cdef int64_t h = s.heat[r], zt = s.zone[t], k = 0, need, b, q, bh, shed, left, rnd
    cdef Py_ssize_t a, na = 0
    for a in range(nhot):
        q = hot[a].b
        if q == r or on_node(s, q, t):
            continue
        if zt != s.zone[n] and not zone_free(s, q, -1, zt):
            continue
        allowed[na] = q
        na += 1
    nb[0] = 0
    for rnd in range(2):
        bh = 0
        for a in range(nb[0]):
            bh += s.heat[allowed[a]]
        need = need0 + bh
        k = 0
        a = rlen - 1
        while a >= 0:
            if need <= 0:
                break
            if row[a].a < h and row[a].a <= fits:
                need -= row[a].a
                k += 1
            a -= 1
        if need > 0:
            return -1
        b = s.lo[t] - (s.count[t] - k + 1)
        if b < 0:
            b = 0
        if b > na:
            return -1
        nb[0] = b
    shed = 0
    left = k
    a = rlen - 1
    while a >= 0:
        if left <= 0:
            break
        if row[a].a < h and row[a].a <= fits:
            shed += row[a].a
            left -= 1
        a -= 1
    b = s.lo[t] - (s.count[t] - k + 1)
    if b < 0:
        b = 0
    bh = 0
    for a in range(nb[0]):
        bh += s.heat[allowed[a]]
    if nb[0] < b or shed < need0 + bh:
        return -1
    return k


cdef int64_t cap_room(S *s, Cap *c, int64_t n, int64_t excess, Pair *hot, Py_ssize_t nhot,
                      Pair *rooms, Py_ssize_t nrooms, int64_t budget, int64_t **log,
                      int64_t *nlog, Py_ssize_t *logcap) noexcept nogil:
    """_pure._cap_room: make room for n's hottest replica on another node, then send it."""
    cdef int64_t h, r, t, need, k, j, m, q, hq, u, bk = 0, broom = 0, bt = -1, made = 0, i
    cdef int64_t dkey, dbest, du, fits, nb = 0, vacated
    cdef Py_ssize_t b, a, rlen
    cdef Pair *row
    cdef bint bad
    cdef int64_t *allowed
    if nhot == 0 or budget < 1:
        return 0  # _pure._cap_room: every plan takes a move at least
    h = hot[nhot - 1].a
    r = hot[nhot - 1].b
    fits = h - excess
    if nrooms > 0 and -rooms[0].a > fits:
        fits = -rooms[0].a
    allowed = <int64_t *>cp_xmalloc((nhot + 1) * sizeof(int64_t))
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
        k = room_plan(s, n, r, t, need, fits, hot, nhot, row, rlen, allowed, &nb)
        if k < 0 or k + nb + 1 > budget or s.count[n] - 1 - nb < s.lo[n]:
            continue
        if bt < 0 or k + nb < bk or (k + nb == bk and (rooms[b].a < broom or (
                rooms[b].a == broom and t < bt))):
            bk = k + nb
            broom = rooms[b].a
            bt = t
    if bt < 0:
        cp_xfree(allowed)
        return 0
    t = bt
    row = cap_by_heat(s, c, t)
    rlen = c.bh_len[t]
    k = room_plan(s, n, r, t, h + broom, fits, hot, nhot, row, rlen, allowed, &nb)
    need = h + broom
    for a in range(nb):
        need += s.heat[allowed[a]]
    cdef Pair *todo = <Pair *>cp_xmalloc((rlen + 1) * sizeof(Pair))
    memcpy(todo, row, rlen * sizeof(Pair))  # t's list changes as its replicas leave
    a = rlen - 1
    while a >= 0:
        if need <= 0:
            break
        hq = todo[a].a
        q = todo[a].b
        a -= 1
        if hq >= h or hq > fits:
            continue
        du = -1
        dbest = 0
        for u in range(s.N):
            if not s.elig[u] or u == t or s.pinned[u] or s.count[u] >= s.hi[u]:
                continue
            vacated = h if u == n else 0  # n: its room once r has left
            if c.caps[u] - c.mov[u] + vacated < hq:
                continue
            bad = False
            for j in range(s.pn_len[q]):
                m = s.pn[q * s.RMAX + j]
                if m != t and s.zone[m] == s.zone[u]:
                    bad = True
                    break
            if bad:
                continue
            dkey = c.mov[u] - vacated - c.caps[u]
            if du < 0 or dkey < dbest:
                du = u
                dbest = dkey
        if du < 0:
            cp_xfree(todo)
            cp_xfree(allowed)
            return -1
        made += cap_shift(s, c, q, t, du, -1)
        cap_log(log, nlog, logcap, q, t, du, -1)
        c.mov[t] -= hq
        c.mov[du] += hq
        c.bh_ok[du] = False
        need -= hq
    cp_xfree(todo)
    for a in range(nb):  # n's coldest keep t in its band
        q = allowed[a]
        made += cap_shift(s, c, q, n, t, -1)
        cap_log(log, nlog, logcap, q, n, t, -1)
        c.mov[n] -= s.heat[q]
        c.mov[t] += s.heat[q]
    cp_xfree(allowed)
    i = cap_fresh(s, c, r, n)
    made += cap_shift(s, c, r, n, t, i)
    cap_log(log, nlog, logcap, r, n, t, i)
    c.mov[n] -= h
    c.mov[t] += h
    c.bh_ok[n] = False
    c.bh_ok[t] = False
    return made


cdef int64_t peak_key(S *s) noexcept nogil:
    """_pure._peak_key: the hottest split candidate alone on the largest node, or -1."""
    cdef int64_t p, n, top = -1, fair_max = 0
    for p in range(s.P):
        if s.split[p] and s.heat[p] > top:
            top = s.heat[p]
    if top < 0:
        return -1
    for n in range(s.N):
        if s.elig[n] and s.hfair[n] > fair_max:
            fair_max = s.hfair[n]
    return (top << SHIFT) // (fair_max if fair_max > 1 else 1)


cdef bint cap_pinned(S *s, Cap *c, int64_t n, int64_t excess, Pair *hot, Py_ssize_t nhot,
                     int64_t allowance, int64_t peak, int64_t *best) noexcept nogil:
    """_pure._cap_pinned; the action into `best`, True if there is one."""
    cdef Py_ssize_t a
    cdef int64_t h, p, i, cost, src, t, j, m, key
    cdef int64_t bcost = 0, bh = 0, bkey = 0, bt = 0, bp = 0, bi = 0
    cdef bint found = False, used, better
    if peak < 0:
        return False
    for a in range(nhot):
        h = hot[a].a
        p = hot[a].b
        if h < excess:
            continue
        i = cap_fresh(s, c, p, n)
        cost = 0 if i >= 0 else 1
        if cost > allowance:
            continue
        if found and (cost > bcost or (cost == bcost and h > bh)):
            continue
        src = s.ms[i] if i >= 0 else -1
        for t in range(s.N):
            if (not s.pinned[t] or not s.elig[t] or t == n or t == src
                    or s.count[t] >= s.hi[t] or c.mov[t] + h > c.caps[t]):
                continue
            used = False
            for j in range(s.pn_len[p]):
                m = s.pn[p * s.RMAX + j]
                if m != n and s.zone[m] == s.zone[t]:
                    used = True
                    break
            if used:
                continue
            key = fair_key(s, s.nheat[t] + h, t)
            if key > peak:
                continue
            # (cost, h, key, t, p, i) < the best's; i follows from p
            better = not found or cost < bcost
            if not better and cost == bcost:
                better = h < bh or (h == bh and (key < bkey or (key == bkey and (
                    t < bt or (t == bt and p < bp)))))
            if better:
                bcost = cost
                bh = h
                bkey = key
                bt = t
                bp = p
                bi = i
                found = True
    if not found:
        return False
    best[0] = 0
    best[1] = bcost
    best[2] = bh
    best[3] = bp
    best[4] = bt
    best[5] = -1
    best[6] = bi
    best[7] = -1
    return True


cdef int64_t cap_node(S *s, Cap *c, int64_t n, Pair *rooms, int64_t allowance,
                      int64_t peak) noexcept nogil:
    """_pure._cap_node: actions until n is under its cap, all undone if it is not."""
    cdef Pair *hot
    cdef int64_t t, p, q, src, dst, i, actions, excess, k, rest, paid = 0, nlog = 0, made
    cdef int64_t fit, total
    cdef Py_ssize_t nhot, nrooms, ii, jj
    cdef bint have, have_swap
    cdef int64_t act[8]
    cdef int64_t swp[8]
    cdef int64_t *log = NULL    # 4 per shift: partition, from, to, move re-targeted or -1
    cdef Py_ssize_t logcap = 0
    hot = cap_by_heat(s, c, n)
    nhot = c.bh_len[n]
    fit = 0  # the most room under its cap of any other node (0 when there is none)
    have = False
    for t in range(s.N):
        if s.elig[t] and t != n and not s.pinned[t] and (not have or c.caps[t] - c.mov[t] > fit):
            fit = c.caps[t] - c.mov[t]
            have = True
    rest = c.mov[n] - c.caps[n]
    total = 0
    jj = 0  # hot[:jj]: the replicas that fit somewhere, then the coldest others while short
    while jj < nhot and (hot[jj].a <= fit or total < rest):
        total += hot[jj].a
        jj += 1
    k = 0  # _pure._leavers over hot[:jj]
    ii = jj - 1
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
            if s.elig[t] and t != n and not s.pinned[t]:
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
            if cap_pinned(s, c, n, excess, hot, nhot, allowance - paid, peak, swp):
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
        cp_xfree(log)
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
    cp_xfree(log)
    return allowance


cdef int64_t cap(S *s, LB *lb, int64_t allowance) noexcept nogil:
    """_pure._cap: every node under its heat cap with the fewest moves, re-targets first."""
    cdef Cap c
    cdef Pair *order = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
    cdef Pair *rooms = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
    cdef int64_t n, p, x, no = 0
    cdef Py_ssize_t a, ii
    c.caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    c.mov = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
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
        cp_xfree(order); cp_xfree(rooms); cp_xfree(c.caps); cp_xfree(c.mov)
        return allowance
    qsort(order, no, sizeof(Pair), _cmp_triple)
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
    x = peak_key(s)
    for a in range(no):
        n = order[a].b
        if allowance <= 0:  # _pure._cap: a spent budget leaves re-targets only
            for ii in range(s.nr_len[n]):
                if cap_fresh(s, &c, s.nr[n][ii], n) >= 0:
                    break
            else:
                continue  # no move of this plan ends on n: no action
        allowance = cap_node(s, &c, n, rooms, allowance, x)
    for n in range(s.N):
        cp_xfree(c.bh[n])
        cp_xfree(c.fr[n])
    cp_xfree(c.bh); cp_xfree(c.bh_len); cp_xfree(c.bh_ok); cp_xfree(c.head); cp_xfree(c.prev)
    cp_xfree(c.fr); cp_xfree(c.fr_len)
    cp_xfree(order); cp_xfree(rooms); cp_xfree(c.caps); cp_xfree(c.mov)
    return allowance


cdef int64_t hot_gifts(S *s, LB *lb) noexcept nogil:
    """_pure._hot_gifts: a node over its heat cap gives its coldest replica that brings it to
    its cap to the node below its band with the most room under its fair heat. Returns the
    moves made."""
    cdef int64_t *caps = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *mov = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *takers = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef Pair *order = <Pair *>cp_xmalloc((s.N + 1) * sizeof(Pair))
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
            if s.split[p] or h <= 0 or mov[n] - h > caps[n] or (bp >= 0 and h > bh):
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
                # key (h, -room, p, t), smallest wins
                if (bp < 0 or h < bh or (h == bh and (room > broom or (room == broom and (
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
    cp_xfree(caps); cp_xfree(mov); cp_xfree(takers); cp_xfree(order)
    return moves
