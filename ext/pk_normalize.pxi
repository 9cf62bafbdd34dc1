# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 1: normalize (evict replicas on ineligible nodes, drop extras) and shed (_pure._normalize,
# _pure._shed, _pure._fallback).


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
    cdef int64_t *need = <int64_t *>cp_xcalloc(s.Z + 1, sizeof(int64_t))
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
    cp_xfree(over.key)
    cp_xfree(over.val)
    cp_xfree(need)
    return allowance


cdef int64_t fallback(S *s, int64_t p, int64_t src) noexcept nogil:
    cdef int64_t n, best = -1
    for n in range(s.N):
        if (s.elig[n] and n != src and not zone_used(s, p, s.zone[n])
                and s.count[n] < s.slots[n]):
            if best < 0 or fill(s, n) < fill(s, best):
                best = n
    return best
