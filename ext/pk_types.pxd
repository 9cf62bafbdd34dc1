"""Shared declarations of the placement kernel (ext/placement_kernel.pyx and its ext/pk_*.pxi).

Included by `from pk_types cimport *` (structs, enums and C shims only: nothing here needs a
runtime import). The phases live in ext/pk_*.pxi, one per phase of the twin, in solve order:
pk_heap (heaps, sort), pk_state (S), pk_bounds, pk_normalize, pk_place, pk_deficits, pk_cap,
pk_isolate, pk_shave, pk_waves; placement_kernel.pyx holds the Python-facing glue.

Glossary: the short names the kernel and the twin (coreplane/placement/_pure.py) share.
  n, p, z, t   a node, partition, zone index; t a target node (indexes in sorted-id order)
  N, Z, P      how many nodes, zones, partitions; RMAX (kernel) max replicas per partition + 1
  S            the solver state (the twin's `_State`): inputs, counts, replica sets, moves
  rf           replication factor per partition
  elig         1 if a node is alive (not draining, not dead)
  lo, hi       a node's replica-count band
  tq           a node's integer fair replica count (>= 1): the denominator of its fill key
  hcap, hfair  a node's heat cap and its fair heat share
  zshare, zc   a zone's fair replica count and its current replica count (eligible nodes)
  heat, nheat  heat per partition; heat per node (sum over its replicas)
  split        1 if a partition is hotter than every fair share (a split candidate)
  mheat, mov   per node, heat without split candidates (movable heat)
  off, rep     the assignment as CSR: per partition offsets into rep, node indexes ascending
  nr, pn       node -> its partitions; partition -> its nodes (the twin's node_reps, part_reps)
  mp, ms, md   the move list as parallel arrays: partition, source node, destination node
               (-1: no source, a new replica); nm moves; mw the wave of each move
  op, os       orphans (replicas to place) as parallel arrays: partition, source; no orphans
  SHIFT        fixed-point bits of the integer keys: fill (count/tq), hkey (nheat/hcap),
               zkey (zc/zshare); klass 0 below band, 1 room below hi, 2 full
  lb, LB       lower bound on the moves (bounds.lower_bound_dense); LB its kernel state
  budget       moves_max (-1 unlimited); allowance the moves left of it
  inflight     moves one node may run at once (the waves)
  ukey         U of the shave pass: the largest hottest-movable-replica / fair-heat key
  horder       every partition by (-heat, p) (kernel: cached across solves)
"""

from libc.stdint cimport int64_t, uint64_t, INT64_MAX
from libc.stdlib cimport malloc, calloc, realloc, free, qsort
from libc.string cimport memcmp, memcpy, memset
from cpython cimport array
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.dict cimport PyDict_Update
from cpython.list cimport PyList_GET_ITEM
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.object cimport PyObject, PyObject_Hash

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void *op)
    bint PyUnicode_CheckExact(object o)

# Portability shims. The GCC/Clang prefetch hint is a no-op on other compilers. The private
# CPython calls (presized dict, insert with a known hash, a str's cached hash) are used on CPython
# <= 3.12 only; elsewhere (PyPy, the limited API, newer CPythons) the public PyDict_New and
# PyDict_SetItem do the same job. Same results either way: they only save a resize and a rehash.
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define CP_PREFETCH(addr) __builtin_prefetch(addr)
    #else
    #define CP_PREFETCH(addr) ((void)(addr))
    #endif
    #if defined(PYPY_VERSION) || defined(Py_LIMITED_API) || PY_VERSION_HEX >= 0x030D0000
    #define CP_DICT_NEW_PRESIZED(n) PyDict_New()
    #define CP_DICT_SETITEM_KNOWN_HASH(d, k, v, h) PyDict_SetItem((d), (k), (v))
    #define CP_CACHED_HASH(o) ((Py_ssize_t)-1)
    #else
    #define CP_CACHED_HASH(o) \
        (PyUnicode_CheckExact(o) ? ((PyASCIIObject *)(o))->hash : (Py_ssize_t)-1)
    #define CP_DICT_NEW_PRESIZED(n) _PyDict_NewPresized(n)
    #define CP_DICT_SETITEM_KNOWN_HASH(d, k, v, h) _PyDict_SetItem_KnownHash((d), (k), (v), (h))
    #endif
    """
    void CP_PREFETCH(const void *addr) noexcept nogil
    Py_ssize_t CP_CACHED_HASH(PyObject *o) noexcept
    object CP_DICT_NEW_PRESIZED(Py_ssize_t minused)
    int CP_DICT_SETITEM_KNOWN_HASH(object mp, object key, object item, Py_ssize_t hash) except -1


# Checked allocation for the phases, which run without the GIL and cannot raise. Every block a
# phase makes (cp_xmalloc/cp_xcalloc/cp_xrealloc) carries a small header that links it into
# this thread's list of live phase blocks, and is given back with cp_xfree (never plain free;
# the glue's own arrays use plain malloc/free). The glue runs the phases through
# cp_run_guarded: when an allocation fails there, every live phase block is freed, control
# jumps back (longjmp) and cp_run_guarded returns -1, so the glue raises MemoryError with
# nothing leaked. Nothing between the jump and its target holds a Python object. A failed
# allocation outside cp_run_guarded (none today) stops the process with a message (abort).
# A size of 0 asks for 1 byte, so a legal NULL from malloc(0) is never taken for a failure.
cdef extern from *:
    """
    #include <setjmp.h>
    #include <string.h>
    #include <stdio.h>
    #include <stdlib.h>
    #if defined(_MSC_VER)
    #define CP_TLS __declspec(thread)
    #elif defined(__GNUC__) || defined(__clang__)
    #define CP_TLS __thread
    #else
    #define CP_TLS _Thread_local
    #endif
    typedef union cp_hdr {
        struct { union cp_hdr *prev, *next; } l;
        long double align_ld;
        long long align_ll;
        void *align_p;
    } cp_hdr;
    static CP_TLS cp_hdr cp_live;       /* sentinel of the live-block list (lazily linked) */
    static CP_TLS int cp_guarded = 0;   /* inside cp_run_guarded */
    static CP_TLS jmp_buf cp_jump;
    static void cp_live_init(void) {
        if (cp_live.l.next == NULL) { cp_live.l.next = &cp_live; cp_live.l.prev = &cp_live; }
    }
    static void cp_fail(size_t bytes) {
        if (cp_guarded) { longjmp(cp_jump, 1); }
        fprintf(stderr, "coreplane placement kernel: out of memory (%zu bytes)\\n", bytes);
        fflush(stderr);
        abort();
    }
    static void *cp_link(cp_hdr *h) {
        cp_live_init();
        h->l.next = cp_live.l.next; h->l.prev = &cp_live;
        cp_live.l.next->l.prev = h; cp_live.l.next = h;
        return (void *)(h + 1);
    }
    static void *cp_xmalloc(size_t n) {
        cp_hdr *h = (n > (size_t)-1 - sizeof(cp_hdr)) ? NULL : (cp_hdr *)malloc(sizeof(cp_hdr) + n);
        if (h == NULL) { cp_fail(n); return NULL; }
        return cp_link(h);
    }
    static void *cp_xcalloc(size_t count, size_t size) {
        size_t n;
        void *p;
        if (size != 0 && count > ((size_t)-1 - sizeof(cp_hdr)) / size) { cp_fail((size_t)-1); }
        n = count * size;
        p = cp_xmalloc(n);
        memset(p, 0, n);
        return p;
    }
    static void cp_xfree(void *p) {
        cp_hdr *h;
        if (p == NULL) return;
        h = (cp_hdr *)p - 1;
        h->l.prev->l.next = h->l.next; h->l.next->l.prev = h->l.prev;
        free(h);
    }
    static void *cp_xrealloc(void *old, size_t n) {
        cp_hdr *h, *q;
        if (old == NULL) return cp_xmalloc(n);
        h = (cp_hdr *)old - 1;
        q = (n > (size_t)-1 - sizeof(cp_hdr)) ? NULL : (cp_hdr *)realloc(h, sizeof(cp_hdr) + n);
        if (q == NULL) { cp_fail(n); return NULL; }  /* the old block stays linked: freed */
        q->l.prev->l.next = q; q->l.next->l.prev = q;
        return (void *)(q + 1);
    }
    typedef void (*cp_phases_fn)(void *);
    /* Run fn(ctx); 0 when it returns, -1 when an allocation failed (every live phase block
       is freed then; the caller must drop its pointers to them). */
    static int cp_run_guarded(cp_phases_fn fn, void *ctx) {
        cp_live_init();
        if (setjmp(cp_jump) != 0) {
            cp_hdr *h = cp_live.l.next;
            cp_guarded = 0;
            while (h != &cp_live) { cp_hdr *next = h->l.next; free(h); h = next; }
            cp_live.l.next = &cp_live; cp_live.l.prev = &cp_live;
            return -1;
        }
        cp_guarded = 1;
        fn(ctx);
        cp_guarded = 0;
        return 0;
    }
    """
    void *cp_xmalloc(size_t n) noexcept nogil
    void *cp_xcalloc(size_t count, size_t size) noexcept nogil
    void *cp_xrealloc(void *old, size_t n) noexcept nogil
    void cp_xfree(void *p) noexcept nogil
    ctypedef void (*cp_phases_fn)(void *) noexcept nogil
    int cp_run_guarded(cp_phases_fn fn, void *ctx) noexcept nogil


cdef enum:
    SHIFT = 20
    SORT_SMALL = 24  # sort_pairs: at most this many triples take an insertion sort
    PLACE_HOT_DIV = 8
    PLACE_HOT_WAIT = 8


cdef struct Heap:
    int64_t *key
    int64_t *val
    Py_ssize_t size
    Py_ssize_t cap


cdef struct Pair:
    int64_t a
    int64_t b
    int64_t c


cdef struct S:
    # sizes
    Py_ssize_t N, Z, P, RMAX
    # inputs
    int64_t *zone
    int64_t *elig
    int64_t *slots
    int64_t *lo
    int64_t *hi
    int64_t *tq
    int64_t *hcap
    int64_t *hfair
    int64_t *zshare
    int64_t *rf
    int64_t *heat
    int64_t *split
    int64_t *off
    int64_t *rep
    int64_t inflight
    int64_t budget
    int64_t band_first
    # state
    int64_t *count
    int64_t *nheat
    int64_t *zc
    int64_t **nr          # node -> partitions on it (unordered)
    int64_t *nr_len
    int64_t *nr_cap
    int64_t *pn           # partition -> nodes, RMAX per partition
    int64_t *pn_pos       # position of that partition in the node's list
    int64_t *pn_len
    # moves
    int64_t *mp
    int64_t *ms
    int64_t *md
    Py_ssize_t nm, mcap
    # orphans (partition, source)
    int64_t *op
    int64_t *os
    Py_ssize_t no, ocap
    # partitions normalize has work on (evictions or drops), ascending
    int64_t *dirty
    Py_ssize_t nd
    # every partition by (-heat, p): from the module cache, or made here by a big orphan_order
    int64_t *horder
    bint horder_ok, horder_new
    # 1: the node holds a split candidate (_pure._State.pinned); made by the phases
    int64_t *pinned
    # cap_by_heat's scratch for re-sorting a stale row: a stamp per partition, made on first use
    int64_t *bh_mark
    int64_t bh_epoch


cdef struct LB:
    # bounds.lower_bound_dense, split in two: what the current assignment alone decides (made
    # once, before the solve) and the node view for given caps and bands (after it).
    int64_t drops, adds, part_leave, part_arrive, hottest
    int64_t *count0       # replicas per node in the current assignment
    int64_t *mheat0       # movable heat per node in the current assignment
    int64_t *hs_off       # N + 1 offsets into hs
    int64_t *hs           # movable heats, hottest first, of each node over its target cap


cdef enum:
    CAP_SWAP_CANDIDATES = 8
    CAP_SLACK_NUM = 16
    CAP_SLACK_ADD = 16
    CAP_SWAP_SCAN = 8
    CAP_SWAP_TAKERS = 64


cdef struct Cap:
    # _pure._cap's working state: caps, movable heat, move chains, per-node replicas by heat
    int64_t *caps
    int64_t *mov
    int64_t *head        # partition -> its last move, -1
    int64_t *prev        # move -> the partition's move before it, -1
    Py_ssize_t pcap
    Pair **bh            # node -> movable replicas as (heat, index, 0), coldest first
    int64_t *bh_len
    bint *bh_ok
    Pair **fr            # node -> those of bh a move of this plan brings there (_fresh_row)
    int64_t *fr_len


cdef enum:
    ISOLATE_CANDIDATES = 8


cdef enum:
    PEAK_ROUNDS = 256
    PEAK_CANDIDATES = 4
    PEAK_GAIN_PERMILLE = 10
    PEAK_GAIN_OVER_PERMILLE = 5
    PEAK_SLACK_PCT = 1
    PEAK_BACK_SCAN = 8
    DONOR_HOLD_SHIFT = 40
    POLISH_ROUNDS = 16
    POLISH_CANDIDATES = 4
    POLISH_TAKERS = 32
    POLISH_SCAN = 8
