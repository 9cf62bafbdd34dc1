# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 2: place the orphans, hottest first, on the emptiest node of a wanted zone (_pure._place).


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
    cdef int64_t *start = <int64_t *>cp_xcalloc(s.P + 1, sizeof(int64_t))
    cdef Pair *parts = <Pair *>cp_xmalloc((s.no + 1) * sizeof(Pair))
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
        every = <Pair *>cp_xmalloc((s.P + 1) * sizeof(Pair))
        for i in range(s.P):
            every[i].a = -s.heat[i]
            every[i].b = i
            every[i].c = 0
        sort_pairs(every, s.P)
        for i in range(s.P):
            s.horder[i] = every[i].b
        cp_xfree(every)
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
    cp_xfree(parts)
    cp_xfree(start)


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
    cdef Pair *order = <Pair *>cp_xmalloc((s.no + 1) * sizeof(Pair))
    cdef int64_t n, z, i, p, src, dst, node, failed = -1
    cdef int k, k1, k2, r
    cdef int64_t *need = <int64_t *>cp_xcalloc(s.Z + 1, sizeof(int64_t))
    cdef int64_t *supply = <int64_t *>cp_xcalloc(s.Z + 1, sizeof(int64_t))
    cdef bint have, hot_deficit
    cdef int64_t bk = 0, bz = 0, bkey = 0, bn = 0, zk, after, x, hot_floor = -1
    cdef bint *free_zone = <bint *>cp_xcalloc(s.Z + 1, sizeof(bint))
    cdef bint *wait = <bint *>cp_xcalloc(s.N + 1, sizeof(bint))  # _pure._place's `wait`
    # hkey per node and zkey per zone, kept current as replicas land: only `add` below changes
    # them, and a 64-bit division per comparison was most of this loop
    cdef int64_t *hk = <int64_t *>cp_xmalloc((s.N + 1) * sizeof(int64_t))
    cdef int64_t *zks = <int64_t *>cp_xmalloc((s.Z + 1) * sizeof(int64_t))
    cdef int64_t empty = s.N
    cdef Py_ssize_t *tsize = <Py_ssize_t *>cp_xcalloc(s.Z + 1, sizeof(Py_ssize_t))
    cdef Py_ssize_t *tbase = <Py_ssize_t *>cp_xmalloc((2 * s.Z + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t *leaf = <Py_ssize_t *>cp_xmalloc((s.N + 1) * sizeof(Py_ssize_t))
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
        wait[n] = s.lo[n] - s.count[n] <= PLACE_HOT_WAIT
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
    win = <int64_t *>cp_xmalloc((total + 1) * sizeof(int64_t))
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
            CP_PREFETCH(&s.pn_len[p])
            CP_PREFETCH(&s.pn[p * s.RMAX])
            CP_PREFETCH(&s.pn_pos[p * s.RMAX])
            CP_PREFETCH(&s.heat[p])
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
                    hot_deficit = (r == 1 and hk[node] > (<int64_t>1 << SHIFT)
                                   and wait[node]
                                   and 2 * need[z] <= supply[z])
                    if hot_deficit:
                        r = 2  # _pure._place: over its heat cap, it competes as a node with room
                    if (not have or r < bk or (r == bk and (hk[node] < bkey or (
                            hk[node] == bkey and (zk < bz or (zk == bz and node < bn)))))):
                        have = True
                        bk = r
                        bz = zk
                        bkey = hk[node]
                        bn = node
                    if not hot_deficit:
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
    cp_xfree(order)
    cp_xfree(need)
    cp_xfree(supply)
    cp_xfree(free_zone)
    cp_xfree(wait)
    cp_xfree(hk)
    cp_xfree(zks)
    cp_xfree(tsize)
    cp_xfree(tbase)
    cp_xfree(leaf)
    cp_xfree(win)
    return failed
