# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Phase 6: waves: group the moves so at most `inflight` run at once per node (_pure.waves).


cdef int64_t *waves(S *s) noexcept nogil:
    cdef int64_t *out = <int64_t *>cp_xmalloc((s.nm + 1) * sizeof(int64_t))
    cdef int64_t *next_wave = <int64_t *>cp_xcalloc(s.P + 1, sizeof(int64_t))
    cdef int64_t *first_free = <int64_t *>cp_xcalloc(s.N + 1, sizeof(int64_t))
    cdef Py_ssize_t wcap = 64, newcap
    cdef int64_t *load = <int64_t *>cp_xcalloc(s.N * wcap + 1, sizeof(int64_t))
    cdef int64_t *grown
    cdef Py_ssize_t i
    cdef int64_t p, w, e, n, f, L = s.inflight
    cdef int64_t ends[2]
    cdef int ne, j
    cdef bint busy
    for i in range(s.nm):
        p = s.mp[i]
        ne = 0
        if s.ms[i] >= 0:
            ends[ne] = s.ms[i]
            ne += 1
        if s.md[i] >= 0:
            ends[ne] = s.md[i]
            ne += 1
        w = next_wave[p]
        for j in range(ne):
            if first_free[ends[j]] > w:
                w = first_free[ends[j]]
        while True:
            if w + 2 >= wcap:
                newcap = 2 * wcap + w + 2
                grown = <int64_t *>cp_xcalloc(s.N * newcap + 1, sizeof(int64_t))
                for n in range(s.N):
                    for e in range(wcap):
                        grown[n * newcap + e] = load[n * wcap + e]
                cp_xfree(load)
                load = grown
                wcap = newcap
            busy = False
            for j in range(ne):
                if load[ends[j] * wcap + w] >= L:
                    busy = True
            if not busy:
                break
            w += 1
        for j in range(ne):
            n = ends[j]
            load[n * wcap + w] += 1
            f = first_free[n]
            while f < wcap and load[n * wcap + f] >= L:
                f += 1
            first_free[n] = f
        next_wave[p] = w + 1
        out[i] = w
    cp_xfree(next_wave)
    cp_xfree(first_free)
    cp_xfree(load)
    return out
