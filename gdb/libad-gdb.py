# gdb pretty-printers for libad: tensors NumPy-style, tapes, variables,
# forward accumulators and the per-thread context stack.
#
# Loaded automatically when installed as <auto-load dir>/<libad.so path>-gdb.py
# (see docs/debugging.md); otherwise, in gdb or ~/.gdbinit:
#
#     source /path/to/libad/gdb/libad-gdb.py
#
# Sourcing it twice (or auto-loading it for several objfiles) replaces the
# earlier registration instead of stacking a second one.
#
# The printers read the inferior's memory only; they never call into the
# program, so they also work on core files and never disturb a stopped
# program's state (use `call ad_summary(t)` for that).

import math
import struct

import gdb
import gdb.printing

# NumPy's default print options, as in src/print.c.
LINE_WIDTH = 75
PRECISION = 8
INTEGER_LIMIT = 1e16
MAX_DIMS = 8


class _Setting(gdb.Parameter):
    """libad's printers elide large tensors as NumPy does (see
    docs/debugging.md)."""

    def __init__(self, name, default, what):
        self.set_doc = "Set the " + what + "."
        self.show_doc = "Show the " + what + "."
        self.what = what
        super().__init__(name, gdb.COMMAND_DATA, gdb.PARAM_ZUINTEGER)
        self.value = default

    def get_show_string(self, svalue):
        return "The %s is %s." % (self.what, svalue)


def _make_settings():
    # gdb.Parameter objects must live as long as the session; re-sourcing
    # the script reuses the ones a first load made.
    existing = getattr(gdb, "_libad_settings", None)
    if existing:
        return existing
    settings = (
        _Setting("ad-print-threshold", 1000,
                 "number of elements above which libad tensors print "
                 "elided (NumPy's threshold)"),
        _Setting("ad-print-edgeitems", 3,
                 "number of items libad shows at each end of an elided "
                 "axis (NumPy's edgeitems)"),
    )
    gdb._libad_settings = settings
    return settings


_THRESHOLD, _EDGE_ITEMS = _make_settings()


# ---------------------------------------------------------------------------
# Reading the inferior
# ---------------------------------------------------------------------------

_byte_order = None


def _double_format(n):
    """struct format for n doubles in the target's byte order."""
    global _byte_order
    if _byte_order is None:
        try:
            text = gdb.execute("show endian", to_string=True)
            _byte_order = ">" if "big endian" in text else "<"
        except gdb.error:
            _byte_order = "<"
    return "%s%dd" % (_byte_order, n)


def _read_doubles(addr, n):
    if n <= 0:
        return []
    mem = gdb.selected_inferior().read_memory(addr, 8 * n)
    return list(struct.unpack(_double_format(n), bytes(mem)))


def _struct_type(tag):
    """The complete definition of struct <tag> (libad's debug info)."""
    t = gdb.lookup_type("struct " + tag)
    t.fields()  # raises TypeError when only an incomplete type is known
    return t


def _deref(ptr, tag):
    """*ptr as a complete struct <tag>.  A user's translation unit only sees
    the opaque typedef; gdb usually resolves it by itself, and the explicit
    cast covers the cases where it does not."""
    val = ptr.dereference()
    try:
        val.type.strip_typedefs().fields()
        return val
    except TypeError:
        return ptr.cast(_struct_type(tag).pointer()).dereference()


def _cstr(ptr, limit=200):
    """A C string of the inferior, shortened, never failing on bad bytes."""
    if not int(ptr):
        return ""
    text = ptr.string(errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."


def _addr(ptr):
    return int(ptr.cast(gdb.lookup_type("unsigned long")))


# A tensor is immutable, so within one stop its text depends only on its
# address and id; backtraces print the same tensors many times.
_cache = {}


def _clear_cache(event=None):
    _cache.clear()


# ---------------------------------------------------------------------------
# NumPy-style formatting: a port of src/print.c (itself NumPy's
# FloatingFormat / IntegerFormat and _formatArray), so that gdb shows what
# ad_print would.
# ---------------------------------------------------------------------------

def _signbit(x):
    return math.copysign(1.0, x) < 0


def _parse_exp_text(text):
    mant, _, exp = text.partition("e")
    digits = "".join(c for c in mant if c.isdigit()).rstrip("0") or "0"
    return digits, int(exp) if exp else 0


def _shortest_digits(x):
    # The shortest digits that read back as the same double, as Dragon4.
    ax = abs(x)
    for p in range(17):
        text = "%.*e" % (p, ax)
        if float(text) == ax:
            break
    return _parse_exp_text(text)


def _positional_parts(x):
    d, e = _shortest_digits(x)
    n = len(d)
    if n - 1 - e > PRECISION:
        ip, _, fp = ("%.*f" % (PRECISION, abs(x))).partition(".")
    elif e < 0:
        ip, fp = "0", "0" * (-e - 1) + d
    else:
        ip = "".join(d[k] if k < n else "0" for k in range(e + 1))
        fp = d[e + 1:]
    return ip, fp.rstrip("0")


def _scientific_parts(x):
    d, e = _shortest_digits(x)
    if len(d) - 1 > PRECISION:
        d, e = _parse_exp_text("%.*e" % (PRECISION, abs(x)))
    return d[0], d[1:], e


def _integer_text(x):
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "-inf" if x < 0 else "inf"
    return "%.0f" % (0.0 if x == 0 else x)


class _Format:
    def __init__(self, values):
        integral = True
        any_finite = any_nonfinite = any_neg_inf = any_nonzero = False
        max_abs = min_abs = 0.0
        for x in values:
            if not math.isfinite(x):
                any_nonfinite = True
                if math.isinf(x) and x < 0:
                    any_neg_inf = True
                continue
            any_finite = True
            if abs(x) >= INTEGER_LIMIT or x != math.floor(x):
                integral = False
            if x == 0:
                continue
            a = abs(x)
            if not any_nonzero or a > max_abs:
                max_abs = a
            if not any_nonzero or a < min_abs:
                min_abs = a
            any_nonzero = True
        self.pad_left = self.pad_right = self.precision = self.exp_size = 0
        if integral:
            self.mode = "int"
            self.width = max((len(_integer_text(x)) for x in values),
                             default=0)
            return
        sci = any_nonzero and (max_abs >= 1e8 or min_abs < 1e-4 or
                               max_abs / min_abs > 1e3)
        self.mode = "sci" if sci else "fixed"
        if any_finite:
            for x in values:
                if not math.isfinite(x):
                    continue
                sign = 1 if _signbit(x) else 0
                if sci:
                    _, fp, e = _scientific_parts(x)
                    self.pad_left = max(self.pad_left, 1 + sign)
                    self.precision = max(self.precision, len(fp))
                    self.exp_size = max(self.exp_size, len(str(abs(e))), 2)
                else:
                    ip, fp = _positional_parts(x)
                    self.pad_left = max(self.pad_left, len(ip) + sign)
                    self.pad_right = max(self.pad_right, len(fp))
            if sci:
                self.pad_right = self.exp_size + 2 + self.precision
        if any_nonfinite:
            offset = self.pad_right + 1
            inf_len = 4 if any_neg_inf else 3
            self.pad_left = max(self.pad_left, 3 - offset, inf_len - offset)

    def __call__(self, x):
        if self.mode == "int":
            return _integer_text(x).rjust(self.width)
        if not math.isfinite(x):
            text = "nan" if math.isnan(x) else ("-inf" if x < 0 else "inf")
            return text.rjust(self.pad_left + self.pad_right + 1)
        sign = 1 if _signbit(x) else 0
        if self.mode == "fixed":
            ip, fp = _positional_parts(x)
            return (" " * (self.pad_left - sign - len(ip)) + "-" * sign + ip +
                    "." + fp + " " * (self.pad_right - len(fp)))
        lead, fp, e = _scientific_parts(x)
        exponent = str(abs(e)).rjust(self.exp_size, "0")
        return (" " * (self.pad_left - sign - 1) + "-" * sign + lead + "." +
                fp + "0" * (self.precision - len(fp)) + "e" +
                ("-" if e < 0 else "+") + exponent)


class _Layout:
    """The elements shown (all, or the edges of every long axis when the
    tensor has more than ad-print-threshold elements) and their text."""

    def __init__(self, shape, strides, data, numel):
        self.shape, self.strides, self.data = shape, strides, data
        # At least one item per end, so that an elided axis shows "...".
        self.edge = max(1, int(_EDGE_ITEMS.value))
        self.summarize = numel > int(_THRESHOLD.value)
        self.values = {}
        self._read()
        self.fmt = _Format(list(self.values.values()))

    def elided(self, axis):
        return self.summarize and self.shape[axis] > 2 * self.edge

    def shown(self, axis):
        n = self.shape[axis]
        if self.elided(axis):
            return list(range(self.edge)) + list(range(n - self.edge, n))
        return list(range(n))

    def _read(self):
        ndim = len(self.shape)
        if ndim == 0:
            self.values[()] = _read_doubles(self.data, 1)[0]
            return
        last = ndim - 1
        prefixes = [()]
        for axis in range(last):
            prefixes = [p + (i,) for p in prefixes for i in self.shown(axis)]
        cols = self.shown(last)
        for p in prefixes:
            row = self.data + 8 * sum(i * s for i, s in zip(p, self.strides))
            if self.strides[last] == 1:
                # Whole runs of a row in one read: a row, or its two edges.
                runs = []
                for k, i in enumerate(cols):
                    if k > 0 and i == cols[k - 1] + 1:
                        runs[-1][1] += 1
                    else:
                        runs.append([i, 1])
                for i0, n in runs:
                    for j, x in enumerate(_read_doubles(row + 8 * i0, n)):
                        self.values[p + (i0 + j,)] = x
            else:
                for i in cols:
                    x = _read_doubles(row + 8 * i * self.strides[last], 1)[0]
                    self.values[p + (i,)] = x

    def _row(self, axis, prefix):
        indent, limit = axis + 1, LINE_WIDTH - axis - 1
        cols = self.shown(axis)
        out, line, length = ["["], "", indent
        for k, i in enumerate(cols):
            words = ["..."] if k == self.edge and self.elided(axis) else []
            words.append(self.fmt(self.values[prefix + (i,)]))
            for w, word in enumerate(words):
                # Wrapping a line that holds only the indent would not help.
                if length + len(word) > limit and length > indent:
                    out.append(line.rstrip(" ") + "\n" + " " * indent)
                    line, length = "", indent
                line += word
                length += len(word)
                if w + 1 < len(words) or k + 1 < len(cols):
                    line += " "
                    length += 1
        out.append(line + "]")
        return "".join(out)

    def _axis(self, axis, prefix):
        ndim = len(self.shape)
        if axis == ndim - 1:
            return self._row(axis, prefix)
        indent, newlines = axis + 1, "\n" * (ndim - axis - 1)
        rows = self.shown(axis)
        out = ["["]
        for k, i in enumerate(rows):
            if k > 0:
                out.append(" " * indent)
            if k == self.edge and self.elided(axis):
                out.append("..." + newlines + " " * indent)
            out.append(self._axis(axis + 1, prefix + (i,)))
            if k + 1 < len(rows):
                out.append(newlines)
        out.append("]")
        return "".join(out)

    def text(self):
        if not self.shape:
            return self.fmt(self.values[()])
        return self._axis(0, ())


def _shape_str(dims):
    if len(dims) == 1:
        return "(%d,)" % dims[0]
    return "(" + ", ".join(str(d) for d in dims) + ")"


# ---------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------

class _Tensor:
    """What the printers need of one ad_tensor, read once."""

    def __init__(self, val, addr):
        self.addr = addr
        self.problem = None
        self.refs = int(val["refs"])
        self.id = int(val["id"])
        self.ndim = int(val["ndim"])
        if not 0 <= self.ndim <= MAX_DIMS or not 0 < self.refs < 1 << 40:
            # Freed headers go back to a free list whose link overwrites
            # refs; a released or foreign pointer shows up here.
            self.problem = ("not a live tensor (refs=%d, ndim=%d): released "
                            "or not an ad_tensor" % (self.refs, self.ndim))
            return
        self.shape = [int(val["shape"][i]) for i in range(self.ndim)]
        self.strides = [int(val["strides"][i]) for i in range(self.ndim)]
        self.numel = int(val["numel"])
        self.contiguous = bool(val["contiguous"])
        self.data = _addr(val["data"])
        self.storage_refs = 0
        try:
            self.storage_refs = int(val["storage"].dereference()["refs"])
        except gdb.error:
            pass
        product = 1
        for d in self.shape:
            product *= d
        if min(self.shape, default=0) < 0 or product != self.numel:
            self.problem = "inconsistent header (shape %s, numel %d)" % (
                _shape_str(self.shape), self.numel)
        elif self.numel > 0 and self.data == 0:
            self.problem = "data pointer is NULL"

    def header(self):
        text = "shape=%s strides=%s %s refs=%d" % (
            _shape_str(self.shape), _shape_str(self.strides),
            "contiguous" if self.contiguous else "strided view", self.refs)
        if self.storage_refs > 1:
            # Views keep their base's storage alive: say it is shared.
            text += " storage-refs=%d" % self.storage_refs
        return text

    def values_text(self):
        key = (self.addr, self.id, int(_THRESHOLD.value),
               int(_EDGE_ITEMS.value))
        if key not in _cache:
            if self.numel == 0:
                _cache[key] = "[]"
            else:
                try:
                    _cache[key] = _Layout(self.shape, self.strides, self.data,
                                          self.numel).text()
                except gdb.MemoryError:
                    _cache[key] = ("<cannot read the values at 0x%x>" %
                                   self.data)
        return _cache[key]


class _Printer:
    """Common ground: the object's address, its struct, and one line of
    to_string; values (where there are any) come as one child so that gdb
    elides them as {...} in frame lines and backtraces."""

    tag = None
    c_name = None

    def __init__(self, val, is_pointer):
        self.val = val
        self.is_pointer = is_pointer

    def _struct(self):
        if self.is_pointer:
            return _deref(self.val, self.tag)
        return self.val

    def _address(self):
        if self.is_pointer:
            return _addr(self.val)
        a = self.val.address
        return _addr(a) if a is not None else 0

    def _prefix(self):
        if self.is_pointer:
            return "(%s *) 0x%x " % (self.c_name, self._address())
        return "%s " % self.c_name

    def to_string(self):
        try:
            return self._prefix() + self.describe(self._struct())
        except gdb.MemoryError:
            return self._prefix() + "<cannot read memory>"
        except (gdb.error, TypeError) as e:
            return self._prefix() + "<%s>" % e

    def describe(self, s):
        raise NotImplementedError


class TensorPrinter(_Printer):
    """print t: shape, strides, layout, reference count, then the values
    NumPy-style (elided in the middle above ad-print-threshold elements)."""

    tag = "ad_tensor"
    c_name = "ad_tensor"

    def _tensor(self):
        return _Tensor(self._struct(), self._address())

    def describe(self, s):
        t = _Tensor(s, self._address())
        return ("<%s>" % t.problem) if t.problem else t.header()

    def display_hint(self):
        return "array"

    def children(self):
        try:
            t = self._tensor()
        except (gdb.error, TypeError):
            return
        if t.problem:
            return
        yield "values", "\n" + t.values_text() + "\n"


def _tape_contexts():
    """This thread's context stack as (kind, address, paused) tuples, or None
    when it cannot be read (libad not linked, no debug info, no TLS)."""
    try:
        stack = gdb.parse_and_eval("ad__contexts")
        n = int(stack["n"])
        items = stack["items"]
        out = []
        for i in range(n):
            item = items[i]
            out.append((int(item["kind"]), _addr(item["obj"]),
                        int(item["paused"])))
        return out
    except (gdb.error, RuntimeError):
        return None


_CTX_TAPE, _CTX_LEVEL = 1, 2


def _context_position(addr):
    """(position, count) of addr in this thread's context stack, 1-based,
    and the forward level number among levels; None when not found."""
    ctx = _tape_contexts()
    if ctx is None:
        return None
    level = 0
    for i, (kind, obj, paused) in enumerate(ctx):
        if kind == _CTX_LEVEL:
            level += 1
        if obj == addr:
            nlevels = sum(1 for k, _, _ in ctx if k == _CTX_LEVEL)
            return {"index": i + 1, "count": len(ctx), "level": level,
                    "levels": nlevels, "paused": paused}
    return {"index": 0, "count": len(ctx)}


def _owner_thread(owner):
    """The gdb thread number of the thread whose pthread_t is owner."""
    try:
        for th in gdb.selected_inferior().threads():
            handle = th.handle()
            if int.from_bytes(bytes(handle), "little") == owner or \
               int.from_bytes(bytes(handle), "big") == owner:
                return th.num
    except (gdb.error, AttributeError, TypeError):
        pass
    return None


def _where(addr, owner):
    """Where a tape or level sits: its context on this thread, or which
    thread to switch to."""
    pos = _context_position(addr)
    if pos is None:
        return None, "context stack not readable"
    if pos["index"]:
        return pos, "context %d of %d on this thread%s" % (
            pos["index"], pos["count"], ", paused" if pos["paused"] else "")
    sel = gdb.selected_thread()
    num = _owner_thread(owner)
    if num is not None and (sel is None or num != sel.num):
        return None, "open on thread %d (`thread %d`, then print again)" % (
            num, num)
    return None, "not open on this thread"


class TapePrinter(_Printer):
    """print tape: nodes recorded, recording/persistent/spent, variables."""

    tag = "ad_tape"
    c_name = "ad_tape"

    def describe(self, s):
        nodes = int(s["nnodes"])
        flags = int(s["flags"])
        parts = ["%d node%s" % (nodes, "" if nodes == 1 else "s")]
        parts.append("recording" if bool(s["recording"]) else "stopped")
        parts.append("persistent" if flags & 1 else "non-persistent")
        if flags & 2:
            parts.append("no auto-watch")
        if bool(s["spent"]):
            parts.append("spent (its gradient was taken; record released)")
        nvars = int(s["nvars"])
        if nvars:
            names = []
            for i in range(min(nvars, 8)):
                v = s["vars"][i]["var"]
                try:
                    names.append('"%s"' % _cstr(_deref(v, "ad_var")["name"]))
                except gdb.error:
                    names.append("?")
            if nvars > 8:
                names.append("...")
            parts.append("variables: " + ", ".join(names))
        if self.is_pointer and bool(s["recording"]):
            # Only a recording tape sits in a context stack.
            _, where = _where(self._address(), int(s["owner"]))
            parts.append(where)
        return ", ".join(parts)


class VarPrinter(_Printer):
    """print v: the variable's name and current value."""

    tag = "ad_var"
    c_name = "ad_var"

    def _value(self):
        return self._struct()["value"]

    def describe(self, s):
        name = _cstr(s["name"])
        text = '"%s" refs=%d' % (name, int(s["refs"]))
        value = s["value"]
        if not int(value):
            return text + " value=NULL"
        t = _Tensor(_deref(value, "ad_tensor"), _addr(value))
        if t.problem:
            return text + " value=<%s>" % t.problem
        return text + " value: " + t.header()

    def display_hint(self):
        return "array"

    def children(self):
        try:
            value = self._value()
            if not int(value):
                return
            t = _Tensor(_deref(value, "ad_tensor"), _addr(value))
        except (gdb.error, TypeError):
            return
        if t.problem:
            return
        yield "value", "\n" + t.values_text() + "\n"


class FwdPrinter(_Printer):
    """print acc: the forward level (its place among this thread's levels
    and in the context stack) and the number of tangents it holds."""

    tag = "ad_fwd"
    c_name = "ad_fwd"

    def describe(self, s):
        n = int(s["nheld"])
        tangents = "%d tangent%s" % (n, "" if n == 1 else "s")
        if not self.is_pointer:
            return tangents
        pos, where = _where(self._address(), int(s["owner"]))
        if pos:
            return "level %d of %d (%s), %s" % (pos["level"], pos["levels"],
                                                where, tangents)
        return "%s, %s" % (where, tangents)


class ContextStackPrinter(_Printer):
    """print ad__contexts: this thread's open tapes and forward levels,
    outermost first."""

    tag = "ad__ctx_stack"
    c_name = "ad__contexts"

    def _prefix(self):
        return ""

    def describe(self, s):
        n = int(s["n"])
        text = "%d open context%s, %d active" % (n, "" if n == 1 else "s",
                                                int(s["active"]))
        if int(s["global_pause"]):
            text += ", recording paused (ad_pause_recording)"
        return text

    def children(self):
        s = self._struct()
        level = 0
        for i in range(int(s["n"])):
            item = s["items"][i]
            kind, obj = int(item["kind"]), item["obj"]
            paused = ", paused" if int(item["paused"]) else ""
            if kind == _CTX_TAPE:
                p = obj.cast(_struct_type("ad_tape").pointer())
                tape = p.dereference()
                text = "tape 0x%x (%d nodes%s)" % (
                    _addr(p), int(tape["nnodes"]), paused)
            else:
                level += 1
                p = obj.cast(_struct_type("ad_fwd").pointer())
                text = "forward level %d 0x%x (%d tangents%s)" % (
                    level, _addr(p), int(p.dereference()["nheld"]), paused)
            yield "[%d]" % i, text


_PRINTERS = {
    "ad_tensor": TensorPrinter,
    "ad_tape": TapePrinter,
    "ad_var": VarPrinter,
    "ad_fwd": FwdPrinter,
}
_STRUCT_ONLY = {"ad__ctx_stack": ContextStackPrinter}


def _lookup(val):
    t = val.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_PTR:
        target = t.target().strip_typedefs()
        if target.code != gdb.TYPE_CODE_STRUCT:
            return None
        cls = _PRINTERS.get(target.tag)
        if cls is None:
            return None
        try:
            if int(val) == 0:
                return None  # gdb's own "(ad_tensor *) 0x0"
        except gdb.error:
            return None
        return cls(val, True)
    if t.code == gdb.TYPE_CODE_STRUCT:
        cls = _PRINTERS.get(t.tag) or _STRUCT_ONLY.get(t.tag)
        if cls is not None:
            return cls(val, False)
    return None


class _ErrorFunction(gdb.Function):
    """$ad_error(): the selected thread's libad error as "AD_ESHAPE: message",
    or "AD_OK" when it has none.  It reads memory only, so it also works on a
    core file and where gdb cannot call ad_error_message() in the program."""

    def __init__(self):
        super().__init__("ad_error")

    def invoke(self):
        try:
            code = gdb.parse_and_eval("ad__last_code")
            if int(code) == 0:
                return "AD_OK"
            text = gdb.parse_and_eval("ad__last_message").string(length=1024)
            return "%s: %s" % (str(code), text.split("\0", 1)[0])
        except (gdb.error, RuntimeError) as e:
            raise gdb.GdbError("$ad_error: cannot read libad's error "
                               "state (%s)" % e)


_ErrorFunction()


class _LibadPrinters(gdb.printing.PrettyPrinter):
    """libad's printers, enabled and disabled as one
    (`disable pretty-printer global libad`; `print/r t` shows raw)."""

    def __init__(self):
        super().__init__("libad")

    def __call__(self, val):
        if not self.enabled:
            return None
        return _lookup(val)


def register(objfile=None):
    """Register the printers with objfile (auto-load) or globally."""
    gdb.printing.register_pretty_printer(objfile, _LibadPrinters(),
                                         replace=True)


if not getattr(gdb, "_libad_events", False):
    # The cache must not outlive a stop: the program may free and reuse
    # headers while it runs.
    gdb.events.stop.connect(_clear_cache)
    gdb.events.cont.connect(_clear_cache)
    gdb._libad_events = True

register(gdb.current_objfile())
