# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled aggregate of one bar's trades (see ``torghut/ta/_bar_stats.pyi``).

Why compiled: every emitted bar summarises its set of trades — open and close by trade order,
high, low, exactly-rounded volume and Σ price·size — and in Python that is a few passes over
the set per bar, as much time per bar as computing all its indicators. This does it in one
pass; the sums still go through ``math.fsum`` so their result is the one the reference gets.
"""

from libc.stdint cimport int64_t
from cpython.ref cimport PyObject
from cpython.object cimport PyObject_RichCompareBool, Py_LT, Py_GT

from math import fsum

cdef extern from "Python.h":
    PyObject* PyTuple_GET_ITEM(object, Py_ssize_t)
    double PyFloat_AS_DOUBLE(object)
    long long PyLong_AsLongLong(object) except? -1


cdef extern from "Python.h":
    object PyBytes_FromStringAndSize(const char*, Py_ssize_t)
    char* PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)

cdef struct _Record:
    int64_t ts
    int64_t trade_id
    double price
    double size


def bar_stats(set ticks):
    """``(open, high, low, close, volume, Σ price·size, count)`` of a non-empty set of ticks.

    A tick is ``(symbol, ts_us, trade_id, exchange, price, size)``; open and close are the
    prices of the smallest and largest tick in tuple order (event time first).
    """
    return _stats(ticks, NULL, None)


def closing_stats(set ticks):
    """``(bar_stats(ticks), records, exchanges)``: the stats and :func:`pack_ticks` in one pass.

    A bar that closes is summarised and packed at once; one pass touches each trade's
    objects once (the second pass of two separate calls cost half as much again). Raises
    ``OverflowError`` like :func:`pack_ticks`.
    """
    cdef Py_ssize_t n = len(ticks)
    cdef object records = PyBytes_FromStringAndSize(NULL, n * sizeof(_Record))
    cdef list exchanges = [None] * n
    stats = _stats(ticks, <_Record*>PyBytes_AS_STRING(records), exchanges)
    return stats, records, _codes(exchanges)


cdef object _codes(list exchanges):
    """The trades' exchange codes as one ``str`` of a character each when every code is one
    character (Alpaca's are), else a tuple: a ``str`` is a fraction of the memory, and a
    snapshot joins the bars' strings at C speed (``microbars.ClosedBars``)."""
    cdef object code
    for code in exchanges:
        if type(code) is not str or len(<str>code) != 1:
            return tuple(exchanges)
    return "".join(exchanges)


cdef tuple _stats(set ticks, _Record* rec, list exchanges):
    cdef object first = None
    cdef object last = None
    cdef int64_t first_ts = 0, last_ts = 0, ts
    cdef double high = 0.0, low = 0.0, price
    cdef Py_ssize_t n = len(ticks)
    cdef list sizes = [None] * n
    cdef list values = [None] * n
    cdef Py_ssize_t i = 0
    cdef object tick, size_obj
    if n == 0:
        raise ValueError("a bar has at least one trade")
    for tick in ticks:
        ts = PyLong_AsLongLong(<object>PyTuple_GET_ITEM(tick, 1))
        price = PyFloat_AS_DOUBLE(<object>PyTuple_GET_ITEM(tick, 4))
        size_obj = <object>PyTuple_GET_ITEM(tick, 5)
        sizes[i] = size_obj
        values[i] = price * PyFloat_AS_DOUBLE(size_obj)
        if rec != NULL:
            rec[i].ts = ts
            rec[i].trade_id = PyLong_AsLongLong(<object>PyTuple_GET_ITEM(tick, 2))
            rec[i].price = price
            rec[i].size = PyFloat_AS_DOUBLE(size_obj)
            exchanges[i] = <object>PyTuple_GET_ITEM(tick, 3)
        if i == 0:
            first = last = tick
            first_ts = last_ts = ts
            high = low = price
        else:
            if ts < first_ts or (ts == first_ts and PyObject_RichCompareBool(tick, first, Py_LT)):
                first, first_ts = tick, ts
            if ts > last_ts or (ts == last_ts and PyObject_RichCompareBool(tick, last, Py_GT)):
                last, last_ts = tick, ts
            if price > high:
                high = price
            if price < low:
                low = price
        i += 1
    return first[4], high, low, last[4], fsum(sizes), fsum(values), n


def pack_ticks(set ticks):
    """``(records, exchanges)``: a bar's ticks in 32 bytes each plus their exchange codes (one
    character each of a ``str``, or a tuple: :func:`_codes`).

    Why: a closed bar is kept for the correction horizon (60 s by default) only in case a late
    trade corrects it, and as a set of tuples each trade costs about 250 bytes of Python
    objects; packed, 40. The symbol is the bar's own and is not stored. Raises
    ``OverflowError`` when a time or trade id does not fit 64 bits (the caller keeps the set).
    """
    cdef Py_ssize_t n = len(ticks), i = 0
    cdef object records = PyBytes_FromStringAndSize(NULL, n * sizeof(_Record))
    cdef _Record* rec = <_Record*>PyBytes_AS_STRING(records)
    cdef list exchanges = [None] * n
    cdef object tick
    for tick in ticks:
        rec[i].ts = PyLong_AsLongLong(<object>PyTuple_GET_ITEM(tick, 1))
        rec[i].trade_id = PyLong_AsLongLong(<object>PyTuple_GET_ITEM(tick, 2))
        rec[i].price = PyFloat_AS_DOUBLE(<object>PyTuple_GET_ITEM(tick, 4))
        rec[i].size = PyFloat_AS_DOUBLE(<object>PyTuple_GET_ITEM(tick, 5))
        exchanges[i] = <object>PyTuple_GET_ITEM(tick, 3)
        i += 1
    return records, _codes(exchanges)


def unpack_ticks(str symbol, bytes records, object exchanges):
    """The set of ticks :func:`pack_ticks` packed, for the bar of ``symbol`` (equal tuples)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(records) // sizeof(_Record), i
    if len(exchanges) != n:
        raise ValueError("records and exchanges of a packed bar disagree")
    cdef const _Record* rec = <const _Record*>PyBytes_AS_STRING(records)
    cdef set ticks = set()
    for i in range(n):
        ticks.add((symbol, rec[i].ts, rec[i].trade_id, exchanges[i], rec[i].price, rec[i].size))
    return ticks
