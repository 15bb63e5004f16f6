# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled batch reductions of the TA hot path (see ``operators/_reduce.pyi`` for the API).

Why compiled: after msgspec has decoded a batch, reducing it is a few operations per message
(read four to seven fields, parse a timestamp, find the message's group), and on the 2-core
machines the TA flow is sized for, the interpreter's overhead per operation made that work
cost twice the decoding itself. These functions do exactly what their Python references do —
:func:`torghut.ta.microbars.preaggregate` and :func:`operators.quotes._latest_each` — for a
well-formed batch, in any order, and return None for anything else (a timestamp not in the
fixed-width UTC form producers write, a null or invalid price or size, a symbol outside the
allowlist, a non-string field), so the caller takes the Python path that dead-letters with a
reason. Property tests check the equality on arbitrary batches.
"""

cimport cython
from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy
from libc.math cimport isfinite
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.set cimport PySet_Add, PySet_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject

from types import MemberDescriptorType

from torghut.ta.microbars import BarPartial, LateTrade, SymbolBatch

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(object)
    bint PyUnicode_Check(object)
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef int64_t US = 1000000
cdef object _tuple_new = tuple.__new__


# --- fields of decoded structs ---------------------------------------------------------------
#
# A msgspec struct keeps its fields in slots behind member descriptors. Reading a slot through
# ``getattr`` walks the type's attribute lookup every time; the descriptor's offset, taken once
# per struct type, reads it directly. Any other object (a different type, an unset slot) makes
# the batch step aside.

cdef dict _OFFSETS = {}


cdef tuple _slots(type tp, tuple names):
    """The slot offsets of ``names`` in ``tp``, or None when one is not a plain member."""
    key = (tp, names)
    found = _OFFSETS.get(key)
    if found is not None or key in _OFFSETS:
        return found
    offsets = []
    for name in names:
        descr = tp.__dict__.get(name)
        if type(descr) is not MemberDescriptorType:
            _OFFSETS[key] = None
            return None
        offsets.append((<PyMemberDescrObject*>descr).d_member.offset)
    _OFFSETS[key] = result = tuple(offsets)
    return result


cdef inline PyObject* _slot(object obj, Py_ssize_t offset):
    """The object in the slot at ``offset`` (borrowed), NULL if unset."""
    return (<PyObject**>((<char*><PyObject*>obj) + offset))[0]


# --- timestamps ------------------------------------------------------------------------------

cdef class _Clock:
    """Parses ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; remembers the last whole second it converted."""

    cdef char prefix[19]
    cdef int64_t base
    cdef bint cached

    def __cinit__(self):
        self.cached = False

    cdef bint parse(self, object text, int64_t* out):
        """False unless ``text`` is in the fixed-width UTC form with a valid date and time."""
        if not PyUnicode_Check(text) or not PyUnicode_IS_COMPACT_ASCII(text):
            return False
        cdef Py_ssize_t n = PyUnicode_GET_LENGTH(text)
        cdef const char* s = <const char*>PyUnicode_DATA(text)
        cdef int64_t frac = 0
        cdef int k
        if n == 27:
            if s[19] != b'.' or s[26] != b'Z':
                return False
            for k in range(20, 26):
                if s[k] < b'0' or s[k] > b'9':
                    return False
                frac = frac * 10 + (s[k] - 48)
        elif n != 20 or s[19] != b'Z':
            return False
        if not (self.cached and memcmp(s, self.prefix, 19) == 0):
            if not _whole_seconds(s, &self.base):
                return False
            memcpy(self.prefix, s, 19)
            self.cached = True
        out[0] = self.base + frac
        return True


cdef inline int _digits(const char* s, int n, int* out):
    cdef int v = 0
    cdef int k
    for k in range(n):
        if s[k] < b'0' or s[k] > b'9':
            return 0
        v = v * 10 + (s[k] - 48)
    out[0] = v
    return 1


cdef bint _whole_seconds(const char* s, int64_t* out):
    """µs since the epoch of ``YYYY-MM-DDTHH:MM:SS`` (validated like ``datetime`` does)."""
    cdef int y, mo, d, h, mi, sec
    if s[4] != b'-' or s[7] != b'-' or s[10] != b'T' or s[13] != b':' or s[16] != b':':
        return False
    if not (_digits(s, 4, &y) and _digits(s + 5, 2, &mo) and _digits(s + 8, 2, &d)
            and _digits(s + 11, 2, &h) and _digits(s + 14, 2, &mi) and _digits(s + 17, 2, &sec)):
        return False
    if y < 1970 or mo < 1 or mo > 12 or d < 1 or h > 23 or mi > 59 or sec > 59:
        return False
    cdef int dim = 31
    if mo == 4 or mo == 6 or mo == 9 or mo == 11:
        dim = 30
    elif mo == 2:
        dim = 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if d > dim:
        return False
    # days from civil (Howard Hinnant's algorithm), y >= 1970 so no negative eras
    cdef int64_t yy = y - (1 if mo <= 2 else 0)
    cdef int64_t era = yy // 400
    cdef int64_t yoe = yy - era * 400
    cdef int64_t mp = (mo + 9) % 12
    cdef int64_t doy = (153 * mp + 2) // 5 + d - 1
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    cdef int64_t days = era * 146097 + doe - 719468
    out[0] = ((days * 24 + h) * 60 + mi) * 60 * US + sec * US
    return True


cdef object _time_and_symbol(object w, type wire_type, Py_ssize_t o_ts, Py_ssize_t o_sym,
                             _Clock clock, object allow, int64_t* ts):
    """The symbol of the envelope wire ``w``, its event time read into ``ts``; None unless both
    are well-formed and the symbol is allowed."""
    if type(w) is not wire_type:
        return None
    cdef PyObject* f_ts = _slot(w, o_ts)
    cdef PyObject* f_sym = _slot(w, o_sym)
    if f_ts == NULL or f_sym == NULL or not clock.parse(<object>f_ts, ts):
        return None
    sym = <object>f_sym
    if not PyUnicode_Check(sym) or (allow is not None and sym not in allow):
        return None
    return sym


# --- trades ----------------------------------------------------------------------------------

@cython.no_gc
cdef class _SymbolTrades:
    """One symbol's state while a batch is reduced (no cycles: not tracked by the GC)."""

    cdef int64_t max_ts
    cdef dict secs
    cdef list late
    cdef int64_t last_sec
    cdef object last_ticks

    def __cinit__(self, int64_t ts):
        self.max_ts = ts
        self.secs = {}
        self.late = []
        self.last_sec = -1
        self.last_ticks = None


cdef tuple _WIRE_FIELDS = ("event_ts", "symbol", "payload")
cdef tuple _BODY_FIELDS = ("trade_id", "exchange", "price", "size")


def reduce_trades(list wires, int64_t lateness_us, object allow):
    """``preaggregate`` of decoded trade wires: ``(batches, duplicates)``, or None."""
    if lateness_us < 0 or not wires:
        return None
    cdef type wire_type = type(wires[0])
    cdef type body_type = type((<object>wires[0]).payload)
    cdef tuple wo = _slots(wire_type, _WIRE_FIELDS)
    cdef tuple bo = _slots(body_type, _BODY_FIELDS)
    if wo is None or bo is None:
        return None
    cdef Py_ssize_t o_ts = wo[0], o_sym = wo[1], o_body = wo[2]
    cdef Py_ssize_t o_id = bo[0], o_ex = bo[1], o_px = bo[2], o_sz = bo[3]
    cdef _Clock clock = _Clock()
    cdef dict states = {}
    cdef _SymbolTrades st
    cdef int64_t ts, sec, mx
    cdef double price, size
    cdef Py_ssize_t before
    cdef long duplicates = 0
    cdef object w, body, sym, tick, ticks
    cdef PyObject* f_body
    cdef PyObject* f_id
    cdef PyObject* f_ex
    cdef PyObject* f_px
    cdef PyObject* f_sz
    cdef PyObject* found
    for w in wires:
        sym = _time_and_symbol(w, wire_type, o_ts, o_sym, clock, allow, &ts)
        if sym is None:
            return None
        f_body = _slot(w, o_body)
        if f_body == NULL or type(<object>f_body) is not body_type:
            return None
        body = <object>f_body
        f_id = _slot(body, o_id)
        f_ex = _slot(body, o_ex)
        f_px = _slot(body, o_px)
        f_sz = _slot(body, o_sz)
        if f_id == NULL or f_ex == NULL or f_px == NULL or f_sz == NULL:
            return None
        if not PyFloat_Check(<object>f_px) or not PyFloat_Check(<object>f_sz):
            return None
        price = PyFloat_AS_DOUBLE(<object>f_px)
        size = PyFloat_AS_DOUBLE(<object>f_sz)
        if not (isfinite(price) and price > 0.0 and isfinite(size) and size > 0.0):
            return None
        tick = (sym, ts, <object>f_id, <object>f_ex, <object>f_px, <object>f_sz)
        PyObject_GC_UnTrack(tick)  # atoms only: it can never be part of a cycle
        sec = ts // US
        found = PyDict_GetItem(states, sym)
        if found == NULL:
            st = _SymbolTrades(ts)
            PyDict_SetItem(states, sym, st)
        else:
            st = <_SymbolTrades>found
            mx = st.max_ts
            if (sec + 1) * US <= mx - lateness_us:
                st.late.append(_tuple_new(LateTrade, (tick, mx)))
                continue
            if ts > mx:
                st.max_ts = ts
        if sec == st.last_sec:
            ticks = st.last_ticks
        else:
            found = PyDict_GetItem(st.secs, sec)
            if found == NULL:
                ticks = set()
                PyObject_GC_UnTrack(ticks)  # holds ticks only: no cycle can pass through it
                PyDict_SetItem(st.secs, sec, _tuple_new(BarPartial, (sec, ticks)))
            else:
                ticks = (<object>found)[1]
            st.last_sec = sec
            st.last_ticks = ticks
        before = PySet_GET_SIZE(ticks)
        PySet_Add(ticks, tick)
        if PySet_GET_SIZE(ticks) == before:
            duplicates += 1
    cdef dict out = {}
    for sym, st in states.items():
        out[sym] = _tuple_new(SymbolBatch, (sym, list(st.secs.values()), st.late, st.max_ts))
    return out, duplicates


# --- quotes ----------------------------------------------------------------------------------

@cython.no_gc
cdef class _SymbolQuotes:
    """One symbol's latest quote per second bucket; the bucket it is in is held in C."""

    cdef int64_t newest
    cdef int64_t bucket
    cdef int64_t ts
    cdef Py_ssize_t index
    cdef dict others  # bucket -> (ts, index) of the other buckets, created when needed

    def __cinit__(self, int64_t bucket, int64_t ts, Py_ssize_t index):
        self.newest = ts
        self.bucket = bucket
        self.ts = ts
        self.index = index
        self.others = None

    cdef void add(self, int64_t bucket, int64_t ts, Py_ssize_t index):
        cdef object held
        if ts > self.newest:
            self.newest = ts
        if bucket != self.bucket:
            if self.others is None:
                self.others = {}
            self.others[self.bucket] = (self.ts, self.index)
            held = self.others.pop(bucket, None)
            self.bucket = bucket
            if held is None:
                self.ts, self.index = ts, index
                return
            self.ts, self.index = held
        if ts >= self.ts:  # ties: the one received last
            self.ts, self.index = ts, index


cdef tuple _QUOTE_FIELDS = ("event_ts", "symbol")


def latest_quotes(list wires, list values, object allow, dict groups_cache, object group_of):
    """Latest quote per (symbol, second bucket) of decoded quote wires, per key group; or None.

    ``values[i]`` is the message ``wires[i]`` was decoded from; a kept quote is held as it.
    Returns ``(chunks, ordered, first_us, high_us)``: ``chunks`` maps a key group to
    ``(buckets, newest)`` as :class:`operators.quotes.QuoteChunk` holds them; ``ordered``
    says whether the batch was in event-time order, ``first_us``/``high_us`` are its oldest
    and newest quote times. A symbol's group is looked up in ``groups_cache`` and computed
    by ``group_of`` when missing.
    """
    if not wires:
        return None
    cdef type wire_type = type(wires[0])
    cdef tuple wo = _slots(wire_type, _QUOTE_FIELDS)
    if wo is None:
        return None
    if len(values) != len(wires):
        return None
    cdef Py_ssize_t o_ts = wo[0], o_sym = wo[1]
    cdef _Clock clock = _Clock()
    cdef dict states = {}
    cdef _SymbolQuotes st
    cdef int64_t ts, bucket, prev = -1, low = 0, high = 0
    cdef bint ordered = True
    cdef Py_ssize_t i = 0
    cdef object w, sym
    cdef PyObject* found
    for w in wires:
        sym = _time_and_symbol(w, wire_type, o_ts, o_sym, clock, allow, &ts)
        if sym is None:
            return None
        if i == 0:
            low = high = ts
        else:
            if ts < prev:
                ordered = False
            if ts < low:
                low = ts
            if ts > high:
                high = ts
        prev = ts
        bucket = (ts + US - 1) // US  # (s-1, s] -> s; ts >= 0
        found = PyDict_GetItem(states, sym)
        if found == NULL:
            PyDict_SetItem(states, sym, _SymbolQuotes(bucket, ts, i))
        else:
            (<_SymbolQuotes>found).add(bucket, ts, i)
        i += 1
    cdef dict groups = {}
    cdef dict chunk_buckets, chunk_newest, entries
    cdef object group, held, bucket_key
    for sym, st in states.items():
        found = PyDict_GetItem(groups_cache, sym)
        group = <object>found if found != NULL else group_of(sym)
        found = PyDict_GetItem(groups, group)
        if found == NULL:
            chunk_buckets, chunk_newest = {}, {}
            groups[group] = (chunk_buckets, chunk_newest)
        else:
            chunk_buckets, chunk_newest = <tuple>(<object>found)
        _put(chunk_buckets, st.bucket, sym, st.ts, values[st.index])
        if st.others is not None:
            for bucket_key, held in st.others.items():
                _put(chunk_buckets, bucket_key, sym, held[0], values[held[1]])
        chunk_newest[sym] = st.newest
    return groups, ordered, low, high


cdef inline void _put(dict buckets, object bucket, object sym, object ts, object value):
    cdef dict entries
    cdef PyObject* found = PyDict_GetItem(buckets, bucket)
    if found == NULL:
        entries = {}
        PyDict_SetItem(buckets, bucket, entries)
    else:
        entries = <dict>found
    entries[sym] = (ts, value)
