#!/usr/bin/env python3
"""Writes the seed corpus of the libad fuzzer (tests/fuzz/corpus/*.bin):
one small program per family of ops, in the byte format that
tests/fuzz/fuzz_ad.c parses.  Run from anywhere; rewrites the corpus.

Format (see parse() in fuzz_ad.c): a header byte (inputs = 1 + h % 3,
bit 2: second-order checks, bits 3-5 all set: NaN and infinities among
the input bytes), then per input a rank byte (rank = b % 5), its sizes
(b % 5, or b % 4 at rank 4) and one byte per value ((b - 127.75) / 32),
then 10 bytes per instruction: kind, three operand selectors (value index
modulo the number of values so far) and six attribute bytes, the first of
which picks the op within its kind (k0 >> 1) and asks for the op's safe
domain (k0 & 1).
"""
import os

KINDS = ["unary", "unary2", "unary3", "binary", "binary2", "scalar",
         "reduce", "axis", "reshape", "permute", "broadcast", "slice",
         "join", "gather", "where", "conv", "pool", "create", "custom",
         "checkpoint", "functional"]
UNARY = ["neg", "exp", "log", "log1p", "expm1", "sqrt", "square", "abs",
         "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
         "sigmoid", "softplus", "relu", "erf", "sign", "floor", "transpose",
         "inv", "cholesky", "det", "logdet", "stop_gradient", "sum_all"]
BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "atan2",
          "mod", "less", "greater", "equal", "matmul", "solve"]
REDUCE = ["sum", "mean", "prod", "max", "min", "logsumexp"]
AXIS = ["softmax", "log_softmax", "argmax", "expand_dims", "squeeze"]
SCALAR = ["add_scalar", "mul_scalar", "pow_scalar", "clip"]
CREATE = ["zeros", "ones", "full", "rand_uniform", "rand_normal", "eye",
          "arange", "linspace"]
FUNCTIONAL = ["grad", "jvp", "vjp", "hvp", "jacobian"]


def value_byte(v):
    return max(0, min(252, int(round(v * 32 + 127.75))))


def axis_byte(axis):
    """The byte that axis_of() maps to axis (-5..5)."""
    return axis + 5


def program(inputs, instrs, second_order=False, specials=False):
    """inputs: list of (shape, values); instrs: list of (kind, sub, safe,
    operands, attrs) with attrs the bytes k1..k5."""
    h = next(h for h in range(256)
             if h % 3 == len(inputs) - 1 and (h >> 2) & 1 == second_order
             and (((h >> 3) & 7) == 7) == specials)
    out = bytearray([h])
    for shape, values in inputs:
        out.append(len(shape))
        out.extend(shape)
        out.extend(v if isinstance(v, int) and v >= 253 else value_byte(v)
                   for v in values)
    for kind, sub, safe, ops, attrs in instrs:
        assert len(ops) <= 3 and len(attrs) <= 5, (kind, ops, attrs)
        ops = list(ops) + [0] * (3 - len(ops))
        attrs = list(attrs) + [0] * (5 - len(attrs))
        out.append(KINDS.index(kind))
        out.extend(ops)
        out.append((sub << 1) | (1 if safe else 0))
        out.extend(attrs)
    return bytes(out)


def vals(n, start=-1.3, step=0.37):
    return [round((start + i * step) % 3.1 - 1.5, 3) for i in range(n)]


def U(name, a, safe=False):
    return ("unary", UNARY.index(name), safe, [a], [])


def B(name, a, b, safe=False):
    return ("binary", BINARY.index(name), safe, [a, b], [])


def R(name, a, naxes, axes=(), keep=False):
    axes = list(axes) + [0, 0]
    return ("reduce", REDUCE.index(name), False, [a],
            [naxes, axis_byte(axes[0]), axis_byte(axes[1]), 1 if keep else 0])


def A(name, a, axis):
    return ("axis", AXIS.index(name), False, [a], [0, axis_byte(axis)])


SEEDS = {
    "unary_chain": program(
        [((2, 3), vals(6))],
        [U("exp", 0, True), U("log", 1, True), U("sin", 2), U("tanh", 3),
         U("asin", 4, True), U("sqrt", 5, True), U("erf", 6),
         U("softplus", 7)], second_order=True),
    "unary_kinks": program(
        [((4,), [-1.0, -0.25, 0.5, 1.25])],
        [U("abs", 0), U("relu", 0), U("sign", 0), U("floor", 0),
         U("square", 1), U("sigmoid", 2)]),
    "binary_broadcast": program(
        [((2, 3), vals(6)), ((3,), vals(3, 0.2))],
        [B("add", 0, 1), B("mul", 2, 1), B("div", 0, 1, True),
         B("pow", 1, 0, True), B("maximum", 3, 4), B("atan2", 0, 1, True)],
        second_order=True),
    "binary_invalid_shapes": program(
        [((2, 3), vals(6)), ((2,), vals(2))],
        [B("add", 0, 1), B("matmul", 0, 1), B("sub", 2, 0), U("exp", 3)]),
    "mod_and_compare": program(
        [((4,), vals(4)), ((4,), vals(4, 0.9, 0.61))],
        [B("mod", 0, 1, True), B("less", 0, 1), B("equal", 0, 0),
         B("greater", 2, 0)]),
    "scalar_ops": program(
        [((3,), vals(3))],
        [("scalar", 0, False, [0], [0, 150]), ("scalar", 1, False, [1], [0, 90]),
         ("scalar", 2, True, [2], [0, 7]), ("scalar", 3, False, [3], [0, 100, 140])],
        second_order=True),
    "reductions": program(
        [((2, 3, 2), vals(12))],
        [R("sum", 0, 1, [1], True), R("mean", 0, 2, [0, -1]),
         R("prod", 0, 1, [2]), R("max", 0, 0), R("min", 0, 1, [0]),
         R("logsumexp", 0, 1, [-2], True), R("sum", 0, 2, [1, 1])],
        second_order=True),
    "softmax_and_axes": program(
        [((2, 4), vals(8))],
        [A("softmax", 0, -1), A("log_softmax", 0, 0), A("argmax", 0, 1),
         A("expand_dims", 0, 1), A("squeeze", 4, 1), A("softmax", 0, 5)],
        second_order=True),
    "reshape": program(
        [((2, 3), vals(6))],
        [("reshape", 0, False, [0], [0, 2, 1, 2]),
         ("reshape", 0, False, [0], [0, 0, 0, 1]),
         ("reshape", 0, False, [0], [210, 3, 7, 9])]),
    "permute_transpose": program(
        [((2, 3, 4), vals(24))],
        [("permute", 0, False, [0], [1, 2, 0, 1, 1]), U("transpose", 0),
         B("add", 1, 2), ("permute", 112, False, [0], [3, 5])],
        second_order=True),
    "broadcast_to": program(
        [((1, 3), vals(3))],
        [("broadcast", 0, False, [0], [0, 1, 2, 0xff, 1]), U("exp", 1),
         ("broadcast", 0, False, [0], [230, 4, 5, 6])]),
    "slices": program(
        [((4, 3), vals(12))],
        [("slice", 0, False, [0], [axis_byte(0), 6 + 1, 6 + 5, 0 + 5]),
         ("slice", 0, False, [0], [axis_byte(-1), 6 - 1, 6 - 6, 2]),
         ("slice", 0, False, [0], [axis_byte(0), 6, 6, 3]),
         B("mul", 1, 1), R("sum", 4, 0)],
        second_order=True),
    "concat_stack": program(
        [((2, 2), vals(4)), ((2, 2), vals(4, 0.5))],
        [("join", 0, False, [0, 1, 0], [2, axis_byte(1)]),
         ("join", 1, False, [0, 1, 1], [1, axis_byte(0)]),
         ("join", 0, False, [0, 2, 0], [1, axis_byte(0)])],
        second_order=True),
    "gather": program(
        [((3, 4), vals(12))],
        [("gather", 0, False, [0], [axis_byte(1), 4, 7, 11, 3]),
         ("gather", 0, False, [0], [axis_byte(0), 2, 250, 0, 0])],
        second_order=True),
    "where": program(
        [((2, 3), vals(6)), ((2, 3), vals(6, 0.4))],
        [("where", 0, False, [0, 1, 0], [1]), ("where", 0, False, [1, 0, 1], [0])]),
    "conv_pool": program(
        [((1, 3, 3, 2), vals(18)), ((2, 2, 2, 2), vals(16, 0.3))],
        [("conv", 0, False, [0, 1], [1, 1, 1, 1]),
         ("pool", 0, False, [0], [2, 2, 1, 1]),
         ("conv", 0, False, [0, 1], [0, 1, 1, 1]), R("sum", 2, 0)],
        second_order=True),
    "linear_algebra": program(
        [((3, 3), vals(9)), ((3,), vals(3))],
        [U("inv", 0, True), U("cholesky", 0, True), U("det", 0, True),
         U("logdet", 0, True), B("solve", 0, 1, True), B("matmul", 0, 1),
         U("det", 0)],
        second_order=True),
    "constructors": program(
        [((2,), vals(2))],
        [("create", 0, False, [], [2, 2, 3]), ("create", 5, False, [], [0, 3]),
         ("create", 6, False, [], [0, 100, 150, 140]),
         ("create", 7, False, [], [0, 4, 140]),
         ("create", 3, False, [], [1, 3, 0, 1, 9]),
         ("create", 0, False, [], [2, 252, 2]),
         ("create", 1, False, [], [255]),
         ("create", 2, False, [], [2, 2, 3, 0xf0, 3])]),
    "custom_ops": program(
        [((3,), vals(3)), ((3,), vals(3, 0.7))],
        [("custom", 0, False, [0], [0]), ("custom", 0, False, [0], [1]),
         ("custom", 0, False, [1], [2]), ("custom", 1, False, [0, 1], [0]),
         ("custom", 1, False, [0, 1], [1])],
        second_order=True),
    "checkpoint": program(
        [((2, 2), vals(4))],
        [("checkpoint", 0, False, [0], []), ("checkpoint", 0, False, [1], [])],
        second_order=True),
    "functional": program(
        [((3,), vals(3)), ((3,), vals(3, 0.25))],
        [("functional", 0, False, [0], []), ("functional", 1, False, [0, 1], []),
         ("functional", 2, False, [0, 1], []), ("functional", 3, False, [0, 1], []),
         ("functional", 4, False, [0], [0]), ("functional", 4, False, [1], [1])],
        second_order=True),
    "empty_tensors": program(
        [((0, 3), []), ((3,), vals(3))],
        [B("add", 0, 1), R("sum", 0, 1, [0]), R("max", 0, 1, [0]),
         A("softmax", 0, -1), ("join", 0, False, [0, 0], [1, axis_byte(0)]),
         B("matmul", 0, 1), U("exp", 2)],
        second_order=True),
    "specials": program(
        [((2, 2), [255, 254, 253, 0.5])],
        [U("exp", 0), U("log", 0), R("max", 0, 0), A("softmax", 0, 1),
         U("det", 0), B("mul", 0, 0)], specials=True),
    "null_chain": program(
        [((2,), vals(2))],
        [A("softmax", 0, 5), U("exp", 1), B("add", 2, 0), R("sum", 3, 0)]),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "corpus")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if f.endswith(".bin"):
            os.remove(os.path.join(out, f))
    for name, data in SEEDS.items():
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(SEEDS), out))


if __name__ == "__main__":
    main()
