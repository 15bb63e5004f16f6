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

from libc.stdint cimport int64_t
from libc.string cimport memcmp, memcpy
from libc.math cimport isfinite
from cpython.float cimport PyFloat_Check, PyFloat_AS_DOUBLE
from cpython.set cimport PySet_Add, PySet_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject

from torghut.ta.microbars import BarPartial, LateTrade, SymbolBatch

cdef extern from "Python.h":
    bint PyUnicode_Check(object)
    bint PyUnicode_IS_COMPACT_ASCII(object)
    Py_ssize_t PyUnicode_GET_LENGTH(object)
    void* PyUnicode_DATA(object)

cdef int64_t US = 1000000
cdef object _tuple_new = tuple.__new__


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


# --- trades ----------------------------------------------------------------------------------

cdef class _SymbolTrades:
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


def reduce_trades(list wires, int64_t lateness_us, object allow):
    """``preaggregate`` of decoded trade wires: ``(batches, duplicates)``, or None."""
    if lateness_us < 0:
        return None
    cdef _Clock clock = _Clock()
    cdef dict states = {}
    cdef _SymbolTrades st
    cdef int64_t ts, sec, mx
    cdef double price, size
    cdef Py_ssize_t before
    cdef long duplicates = 0
    cdef object w, body, sym, tick, ticks, py_price, py_size
    cdef PyObject* found
    for w in wires:
        if not clock.parse(w.event_ts, &ts):
            return None
        body = w.payload
        py_price = body.price
        py_size = body.size
        if not PyFloat_Check(py_price) or not PyFloat_Check(py_size):
            return None
        price = PyFloat_AS_DOUBLE(py_price)
        size = PyFloat_AS_DOUBLE(py_size)
        if not (isfinite(price) and price > 0.0 and isfinite(size) and size > 0.0):
            return None
        sym = w.symbol
        if not PyUnicode_Check(sym) or (allow is not None and sym not in allow):
            return None
        tick = (sym, ts, body.trade_id, body.exchange, py_price, py_size)
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

cdef class _SymbolQuotes:
    """One symbol's latest quote per second bucket; the bucket it is in is held in C."""

    cdef int64_t newest
    cdef int64_t bucket
    cdef int64_t ts
    cdef Py_ssize_t index
    cdef dict others  # bucket -> (ts, index) of the buckets not current

    def __cinit__(self, int64_t bucket, int64_t ts, Py_ssize_t index):
        self.newest = ts
        self.bucket = bucket
        self.ts = ts
        self.index = index
        self.others = {}

    cdef void add(self, int64_t bucket, int64_t ts, Py_ssize_t index):
        cdef object held
        if ts > self.newest:
            self.newest = ts
        if bucket != self.bucket:
            self.others[self.bucket] = (self.ts, self.index)
            held = self.others.pop(bucket, None)
            self.bucket = bucket
            if held is None:
                self.ts, self.index = ts, index
                return
            self.ts, self.index = held
        if ts >= self.ts:  # ties: the one received last
            self.ts, self.index = ts, index


def latest_quotes(list wires, object allow, object group_of):
    """Latest quote per (symbol, second bucket) of decoded quote wires, per key group; or None.

    Returns ``(chunks, ordered, first_us, high_us)``: ``chunks`` maps a key group to
    ``(buckets, newest)`` as :class:`operators.quotes.QuoteChunk` holds them; ``ordered``
    says whether the batch was in event-time order, ``first_us``/``high_us`` are its oldest
    and newest quote times.
    """
    if not wires:
        return None
    cdef _Clock clock = _Clock()
    cdef dict states = {}
    cdef _SymbolQuotes st
    cdef int64_t ts, bucket, prev = -1, low = 0, high = 0
    cdef bint ordered = True
    cdef Py_ssize_t i = 0
    cdef object w, sym
    cdef PyObject* found
    for w in wires:
        if not clock.parse(w.event_ts, &ts):
            return None
        sym = w.symbol
        if not PyUnicode_Check(sym) or (allow is not None and sym not in allow):
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
        group = group_of(sym)
        found = PyDict_GetItem(groups, group)
        if found == NULL:
            chunk_buckets, chunk_newest = {}, {}
            groups[group] = (chunk_buckets, chunk_newest)
        else:
            chunk_buckets, chunk_newest = <tuple>(<object>found)
        st.others[st.bucket] = (st.ts, st.index)
        for bucket_key, held in st.others.items():
            found = PyDict_GetItem(chunk_buckets, bucket_key)
            if found == NULL:
                entries = {}
                PyDict_SetItem(chunk_buckets, bucket_key, entries)
            else:
                entries = <dict>found
            entries[sym] = (held[0], (<object>wires[<Py_ssize_t>held[1]]).payload)
        chunk_newest[sym] = st.newest
    return groups, ordered, low, high
