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


cdef void sort_pairs(Pair *items, Py_ssize_t n) noexcept nogil:
    """The order qsort(_cmp_triple) gives (a total order, so any sort agrees), as a bottom-up
    merge sort with the comparison inlined: glibc's qsort calling back per comparison was the
    largest single cost of a bootstrap (300k orphans)."""
    cdef Pair *tmp
    cdef Pair *src = items
    cdef Pair *dst
    cdef Pair *swap
    cdef Pair t
    cdef Py_ssize_t run = 16, lo, mid, hi, i, j, k
    if n < 2:
        return
    lo = 0
    while lo < n:  # insertion-sort runs of 16
        hi = lo + run if lo + run < n else n
        for i in range(lo + 1, hi):
            t = items[i]
            j = i - 1
            while j >= lo and _pair_less(&t, &items[j]):
                items[j + 1] = items[j]
                j -= 1
            items[j + 1] = t
        lo = hi
    if n <= run:
        return
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
