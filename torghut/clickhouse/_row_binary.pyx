# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled RowBinary encoder of insert rows (see ``torghut/clickhouse/row_binary.py``).

Why compiled: clickhouse-connect writes an insert column by column in Python — a list per
column, a conversion per value (a ``DateTime64`` value is a ``timestamp()`` call and a floor
division in Python) — and at 5,000 symbols that was a tenth of the TA flow's samples (py-spy),
on the same interpreter as the flow's worker. This writes each row's values straight into one
buffer in ClickHouse's RowBinary format, which the server (or the embedded engine) parses in
C++. ``codes`` holds one byte per column (``row_binary.Layout``): the base type in the low
bits, ``NULLABLE`` set for ``Nullable(...)``, and ``scales`` the DateTime64 precision.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy
from cpython.datetime cimport (
    datetime,
    datetime_day,
    datetime_hour,
    datetime_microsecond,
    datetime_minute,
    datetime_month,
    datetime_second,
    datetime_tzinfo,
    datetime_year,
    import_datetime,
)

from datetime import timezone

import_datetime()

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object, Py_ssize_t*) except NULL
    object PyBytes_FromStringAndSize(const char*, Py_ssize_t)
    bint PyBytes_Check(object)
    char* PyBytes_AS_STRING(object)
    Py_ssize_t PyBytes_GET_SIZE(object)
    bint PyUnicode_Check(object)
    bint PyLong_Check(object)
    bint PyFloat_Check(object)
    bint PyBool_Check(object)
    double PyFloat_AsDouble(object) except? -1.0
    unsigned long long PyLong_AsUnsignedLongLong(object) except? <unsigned long long>-1
    long long PyLong_AsLongLong(object) except? -1

cdef enum:  # the base types and the flag of a column's code
    STRING = 1
    UINT8 = 2
    UINT32 = 3
    UINT64 = 4
    INT64 = 5
    FLOAT64 = 6
    DATETIME64 = 7
    NULLABLE = 0x80

CODES = {
    "String": STRING,
    "UInt8": UINT8,
    "UInt32": UINT32,
    "UInt64": UINT64,
    "Int64": INT64,
    "Float64": FLOAT64,
    "DateTime64": DATETIME64,
}
"""The code of each ClickHouse base type this encoder writes (what ``row_binary.Layout`` uses)."""
NULLABLE_FLAG = NULLABLE

cdef object _UTC = timezone.utc


cdef inline int64_t _pow10(int n):
    cdef int64_t p = 1
    while n > 0:
        p *= 10
        n -= 1
    return p


cdef struct _Buf:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(_Buf* buf, Py_ssize_t more) except -1:
    cdef Py_ssize_t need = buf.size + more
    cdef Py_ssize_t cap
    cdef char* grown
    if need <= buf.cap:
        return 0
    cap = buf.cap * 2 if buf.cap else 4096
    while cap < need:
        cap *= 2
    grown = <char*>realloc(buf.data, cap)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.cap = cap
    return 0


cdef inline int _put(_Buf* buf, const void* src, Py_ssize_t n) except -1:
    _reserve(buf, n)
    memcpy(buf.data + buf.size, src, n)
    buf.size += n
    return 0


cdef inline int _put_u8(_Buf* buf, uint8_t v) except -1:
    return _put(buf, &v, 1)


cdef int _put_string(_Buf* buf, object value) except -1:
    cdef Py_ssize_t n
    cdef const char* s
    cdef uint8_t byte
    cdef uint64_t length
    if PyUnicode_Check(value):
        s = PyUnicode_AsUTF8AndSize(value, &n)
    elif PyBytes_Check(value):
        s = PyBytes_AS_STRING(value)
        n = PyBytes_GET_SIZE(value)
    else:
        raise TypeError(f"a String needs str or bytes, got {type(value).__name__}")
    length = <uint64_t>n
    while length >= 0x80:  # the length as a LEB128 varint
        byte = <uint8_t>((length & 0x7F) | 0x80)
        _put(buf, &byte, 1)
        length >>= 7
    byte = <uint8_t>length
    _put(buf, &byte, 1)
    return _put(buf, s, n)


cdef int64_t _days_from_civil(int64_t y, int64_t m, int64_t d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    cdef int64_t era, yoe, doy, doe
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef inline int64_t _floor_div(int64_t a, int64_t b):
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef int64_t _ticks(object value, int scale) except? -1:
    """A DateTime64(scale) value: an int is taken as ticks, a datetime converted as
    clickhouse-connect does (``floor(timestamp())`` seconds and its microseconds, floored to
    the scale; a naive datetime is local time, as ``timestamp()`` takes it)."""
    cdef int64_t micros
    if PyLong_Check(value) and not PyBool_Check(value):
        return PyLong_AsLongLong(value)
    if not isinstance(value, datetime):
        raise TypeError(f"a DateTime64 needs a datetime or int ticks, got {type(value).__name__}")
    if type(value) is datetime and datetime_tzinfo(value) is _UTC:
        micros = (
            (_days_from_civil(datetime_year(value), datetime_month(value), datetime_day(value))
             * 86400
             + datetime_hour(value) * 3600
             + datetime_minute(value) * 60
             + datetime_second(value)) * 1000000
            + datetime_microsecond(value)
        )
    else:
        micros = (<int64_t>(value.timestamp() // 1)) * 1000000 + datetime_microsecond(value)
    if scale <= 6:
        return _floor_div(micros, _pow10(6 - scale))
    return micros * _pow10(scale - 6)


cdef int _put_value(_Buf* buf, object value, int base, int scale) except -1:
    cdef uint8_t u8
    cdef uint32_t u32
    cdef uint64_t u64
    cdef int64_t i64
    cdef double f64
    if base == STRING:
        return _put_string(buf, value)
    if base == FLOAT64:
        if not (PyFloat_Check(value) or PyLong_Check(value)):
            raise TypeError(f"a Float64 needs a float or int, got {type(value).__name__}")
        f64 = PyFloat_AsDouble(value)
        return _put(buf, &f64, 8)
    if base == DATETIME64:
        i64 = _ticks(value, scale)
        return _put(buf, &i64, 8)
    if not PyLong_Check(value):
        raise TypeError(f"an integer column needs an int, got {type(value).__name__}")
    if base == INT64:
        i64 = PyLong_AsLongLong(value)
        return _put(buf, &i64, 8)
    u64 = PyLong_AsUnsignedLongLong(value)
    if base == UINT64:
        return _put(buf, &u64, 8)
    if base == UINT32:
        if u64 > 0xFFFFFFFF:
            raise OverflowError(f"{value} does not fit a UInt32")
        u32 = <uint32_t>u64
        return _put(buf, &u32, 4)
    if base == UINT8:
        if u64 > 0xFF:
            raise OverflowError(f"{value} does not fit a UInt8")
        u8 = <uint8_t>u64
        return _put(buf, &u8, 1)
    raise ValueError(f"unknown column code {base}")


def encode(list rows, bytes codes, bytes scales, tuple names):
    """``rows`` (tuples of ``len(codes)`` values) as one RowBinary block.

    Raises ``TypeError``/``OverflowError``/``ValueError`` naming the row and column of a value
    its column cannot hold (``None`` in a column that is not ``Nullable`` included).
    """
    cdef Py_ssize_t ncols = len(codes)
    cdef const unsigned char* code = <const unsigned char*>PyBytes_AS_STRING(codes)
    cdef const unsigned char* scale = <const unsigned char*>PyBytes_AS_STRING(scales)
    cdef _Buf buf
    cdef Py_ssize_t r, c
    cdef tuple row
    cdef object value
    cdef int kind
    if len(scales) != ncols or len(names) != ncols:
        raise ValueError("codes, scales and names must have one entry per column")
    buf.data = NULL
    buf.size = 0
    buf.cap = 0
    try:
        _reserve(&buf, len(rows) * ncols * 8 + 64)
        for r in range(len(rows)):
            row = rows[r]
            if len(row) != ncols:
                raise ValueError(f"row {r} has {len(row)} values, the columns are {ncols}")
            for c in range(ncols):
                value = row[c]
                kind = code[c]
                try:
                    if kind & NULLABLE:
                        if value is None:
                            _put_u8(&buf, 1)
                            continue
                        _put_u8(&buf, 0)
                    elif value is None:
                        raise TypeError("None in a column that is not Nullable")
                    _put_value(&buf, value, kind & ~NULLABLE, scale[c])
                except (TypeError, OverflowError, ValueError) as exc:
                    # a string that is not UTF-8 encodable (a lone surrogate) is a ValueError
                    kind_of = ValueError if isinstance(exc, UnicodeError) else type(exc)
                    raise kind_of(f"row {r}, column {names[c]!r}: {exc}") from None
        return PyBytes_FromStringAndSize(buf.data, buf.size)
    finally:
        free(buf.data)
