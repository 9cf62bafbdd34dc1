# Included by placement_kernel.pyx (one extension module); declarations in pk_types.pxd.
# Heaps and sorting: the (key, index) min-heap and the stable sort of Pair triples.


cdef inline bint _less(int64_t ka, int64_t va, int64_t kb, int64_t vb) noexcept nogil:
    return ka < kb or (ka == kb and va < vb)


cdef void heap_push(Heap *h, int64_t k, int64_t v) noexcept nogil:
    cdef Py_ssize_t i, parent
    if h.size == h.cap:
        h.cap = h.cap * 2 + 16
        h.key = <int64_t *>cp_xrealloc(h.key, h.cap * sizeof(int64_t))
        h.val = <int64_t *>cp_xrealloc(h.val, h.cap * sizeof(int64_t))
    i = h.size
    h.size += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not _less(k, v, h.key[parent], h.val[parent]):
            break
        h.key[i] = h.key[parent]
        h.val[i] = h.val[parent]
        i = parent
    h.key[i] = k
    h.val[i] = v


cdef void heap_pop(Heap *h) noexcept nogil:
    cdef Py_ssize_t i = 0, child
    cdef int64_t k, v
    h.size -= 1
    if h.size == 0:
        return
    k = h.key[h.size]
    v = h.val[h.size]
    while True:
        child = 2 * i + 1
        if child >= h.size:
            break
        if child + 1 < h.size and _less(h.key[child + 1], h.val[child + 1],
                                        h.key[child], h.val[child]):
            child += 1
        if not _less(h.key[child], h.val[child], k, v):
            break
        h.key[i] = h.key[child]
        h.val[i] = h.val[child]
        i = child
    h.key[i] = k
    h.val[i] = v


cdef int _cmp_triple(const void *x, const void *y) noexcept nogil:
    cdef const Pair *p = <const Pair *>x
    cdef const Pair *q = <const Pair *>y
    if p.a != q.a:
        return -1 if p.a < q.a else 1
    if p.b != q.b:
        return -1 if p.b < q.b else 1
    if p.c != q.c:
        return -1 if p.c < q.c else 1
    return 0


cdef inline bint _pair_less(const Pair *p, const Pair *q) noexcept nogil:
    if p.a != q.a:
        return p.a < q.a
    if p.b != q.b:
        return p.b < q.b
    return p.c < q.c


cdef inline int _bitlen(uint64_t x) noexcept nogil:
    cdef int k = 0
    while x:
        x >>= 1
        k += 1
    return k


cdef inline uint64_t _mask(int w) noexcept nogil:
    """The w low bits set (0 <= w <= 64)."""
    return 0 if w == 0 else (<uint64_t>0xFFFFFFFFFFFFFFFF) >> (64 - w)


cdef void radix_keys(uint64_t *keys, uint64_t *tmp, Py_ssize_t n, int bits) noexcept nogil:
    """keys[:n] sorted ascending, byte by byte from the lowest (LSD radix; `tmp` holds n more);
    only the low `bits` bits are read, and a byte every key shares is skipped."""
    cdef Py_ssize_t cnt[8][256]
    cdef Py_ssize_t i, total, c
    cdef int d, passes = (bits + 7) // 8
    cdef unsigned int sh
    cdef uint64_t k
    cdef uint64_t *src = keys
    cdef uint64_t *dst = tmp
    cdef uint64_t *swap
    if passes == 0 or n < 2:
        return
    memset(cnt, 0, passes * 256 * sizeof(Py_ssize_t))
    for i in range(n):
        k = keys[i]
        for d in range(passes):
            cnt[d][(k >> (8 * d)) & 255] += 1
    for d in range(passes):
        sh = 8 * d
        if cnt[d][(src[0] >> sh) & 255] == n:
            continue  # every key has this byte: the pass would move nothing
        total = 0
        for i in range(256):
            c = cnt[d][i]
            cnt[d][i] = total
            total += c
        for i in range(n):
            k = src[i]
            c = (k >> sh) & 255
            dst[cnt[d][c]] = k
            cnt[d][c] += 1
        swap = src
        src = dst
        dst = swap
    if src != keys:
        memcpy(keys, src, n * sizeof(uint64_t))


cdef void sort_i64(int64_t *values, Py_ssize_t n) noexcept nogil:
    """values[:n] ascending: a radix sort of their offsets from the smallest (the order
    qsort(_cmp_asc) gives)."""
    cdef Py_ssize_t i
    cdef int64_t lo, hi
    cdef uint64_t *keys
    if n < 2:
        return
    lo = hi = values[0]
    for i in range(1, n):
        if values[i] < lo:
            lo = values[i]
        elif values[i] > hi:
            hi = values[i]
    keys = <uint64_t *>cp_xmalloc(2 * n * sizeof(uint64_t))
    for i in range(n):
        keys[i] = <uint64_t>values[i] - <uint64_t>lo
    radix_keys(keys, keys + n, n, _bitlen(<uint64_t>hi - <uint64_t>lo))
    for i in range(n):
        values[i] = <int64_t>(<uint64_t>lo + keys[i])
    cp_xfree(keys)


cdef void _insertion_pairs(Pair *items, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef Pair t
    for i in range(lo + 1, hi):
        t = items[i]
        j = i - 1
        while j >= lo and _pair_less(&t, &items[j]):
            items[j + 1] = items[j]
            j -= 1
        items[j + 1] = t


cdef bint _radix_pairs(Pair *items, Py_ssize_t n) noexcept nogil:
    """Sort by (a, b, c) packed into one 64-bit key (each field's offset from its smallest, in
    as many bits as its range needs), when the three ranges fit; False (nothing done) if not.
    The packing keeps the order of the triples, so the result is the triples' sorted order."""
    cdef Py_ssize_t i
    cdef int64_t amin, amax, bmin, bmax, cmin, cmax
    cdef int wa, wb, wc, sa, sb
    cdef uint64_t k, ma, mb, mc
    cdef uint64_t *keys
    amin = amax = items[0].a
    bmin = bmax = items[0].b
    cmin = cmax = items[0].c
    for i in range(1, n):
        if items[i].a < amin:
            amin = items[i].a
        elif items[i].a > amax:
            amax = items[i].a
        if items[i].b < bmin:
            bmin = items[i].b
        elif items[i].b > bmax:
            bmax = items[i].b
        if items[i].c < cmin:
            cmin = items[i].c
        elif items[i].c > cmax:
            cmax = items[i].c
    wa = _bitlen(<uint64_t>amax - <uint64_t>amin)
    wb = _bitlen(<uint64_t>bmax - <uint64_t>bmin)
    wc = _bitlen(<uint64_t>cmax - <uint64_t>cmin)
    if wa + wb + wc > 64:
        return False
    sb = wc  # below 64 whenever b has bits of its own (likewise sa for a)
    sa = wb + wc
    ma = _mask(wa)
    mb = _mask(wb)
    mc = _mask(wc)
    keys = <uint64_t *>cp_xmalloc(2 * n * sizeof(uint64_t))
    for i in range(n):
        k = <uint64_t>items[i].c - <uint64_t>cmin
        if wb:
            k |= (<uint64_t>items[i].b - <uint64_t>bmin) << sb
        if wa:
            k |= (<uint64_t>items[i].a - <uint64_t>amin) << sa
        keys[i] = k
    radix_keys(keys, keys + n, n, wa + wb + wc)
    for i in range(n):
        k = keys[i]
        items[i].c = <int64_t>(<uint64_t>cmin + (k & mc))
        items[i].b = <int64_t>(<uint64_t>bmin + ((k >> sb) & mb if wb else 0))
        items[i].a = <int64_t>(<uint64_t>amin + ((k >> sa) & ma if wa else 0))
    cp_xfree(keys)
    return True


cdef void sort_pairs(Pair *items, Py_ssize_t n) noexcept nogil:
    """The order qsort(_cmp_triple) gives (a total order, so any sort agrees). A few items: an
    insertion sort; more: a radix sort of the triples packed into 64-bit keys (they nearly
    always fit: heats, keys and indexes of one solve), else a bottom-up merge sort with the
    comparison inlined. glibc's qsort calling back per comparison was the largest single cost
    of a bootstrap (300k orphans); the merge sort's mispredicted branches were next (the rows
    of node heats the cap phases sort, and their re-sorts)."""
    cdef Pair *tmp
    cdef Pair *src = items
    cdef Pair *dst
    cdef Pair *swap
    cdef Py_ssize_t run = 16, lo, mid, hi, i, j, k
    if n < 2:
        return
    if n <= SORT_SMALL:
        _insertion_pairs(items, 0, n)
        return
    if _radix_pairs(items, n):
        return
    lo = 0
    while lo < n:  # insertion-sort runs of 16
        hi = lo + run if lo + run < n else n
        _insertion_pairs(items, lo, hi)
        lo = hi
    tmp = <Pair *>cp_xmalloc(n * sizeof(Pair))
    dst = tmp
    while run < n:
        lo = 0
        while lo < n:
            mid = lo + run if lo + run < n else n
            hi = lo + 2 * run if lo + 2 * run < n else n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if _pair_less(&src[j], &src[i]):
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        swap = src
        src = dst
        dst = swap
        run *= 2
    if src != items:
        memcpy(items, src, n * sizeof(Pair))
    cp_xfree(tmp)


cdef inline void heap_sift_max(int64_t *a, Py_ssize_t size, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t c
    cdef int64_t v = a[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and a[c + 1] > a[c]:
            c += 1
        if a[c] <= v:
            break
        a[i] = a[c]
        i = c
    a[i] = v


cdef void top_desc(int64_t *a, Py_ssize_t m, int64_t need) noexcept nogil:
    """The largest values of a[:m] first, largest first, until they add up to `need` (the rest
    after them, in no order): what the bound reads of a node's heats (`lb_finish` stops there,
    and a plan's caps are never below the target caps). A max-heap popped that far, instead of
    sorting every heat of every node over its cap (most nodes after an add)."""
    cdef Py_ssize_t size = m, i, lo, hi
    cdef int64_t v, got = 0
    i = m // 2 - 1
    while i >= 0:  # heapify
        heap_sift_max(a, size, i)
        i -= 1
    while size > 0 and got < need:  # the max to the end, then the heap shrinks
        v = a[0]
        a[0] = a[size - 1]
        a[size - 1] = v
        size -= 1
        heap_sift_max(a, size, 0)
        got += v
    lo = 0  # reverse: the popped values (at the end, largest last) come first, largest first
    hi = m - 1
    while lo < hi:
        v = a[lo]
        a[lo] = a[hi]
        a[hi] = v
        lo += 1
        hi -= 1
