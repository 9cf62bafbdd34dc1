# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# The solver state S: fill and heat keys, adding/removing replicas, recording moves and orphans
# (_pure._State).


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
        s.nr[n] = <int64_t *>cp_xrealloc(s.nr[n], s.nr_cap[n] * sizeof(int64_t))
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
        s.mp = <int64_t *>cp_xrealloc(s.mp, s.mcap * sizeof(int64_t))
        s.ms = <int64_t *>cp_xrealloc(s.ms, s.mcap * sizeof(int64_t))
        s.md = <int64_t *>cp_xrealloc(s.md, s.mcap * sizeof(int64_t))
    s.mp[s.nm] = p
    s.ms[s.nm] = src
    s.md[s.nm] = dst
    s.nm += 1


cdef void orphan(S *s, int64_t p, int64_t src) noexcept nogil:
    if s.no == s.ocap:
        s.ocap = s.ocap * 2 + 64
        s.op = <int64_t *>cp_xrealloc(s.op, s.ocap * sizeof(int64_t))
        s.os = <int64_t *>cp_xrealloc(s.os, s.ocap * sizeof(int64_t))
    s.op[s.no] = p
    s.os[s.no] = src
    s.no += 1


cdef int _cmp_desc(const void *x, const void *y) noexcept nogil:
    cdef int64_t a = (<const int64_t *>x)[0]
    cdef int64_t b = (<const int64_t *>y)[0]
    return -1 if a > b else (1 if a < b else 0)
