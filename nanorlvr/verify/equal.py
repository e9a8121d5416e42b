"""Are two parsed answers the same? The equivalence test of nanorlvr/verifier.py.

Answers come from nanorlvr/verify/parse.py (sympy expressions, matrices, sets, and tagged tuples; see its
docstring). Expressions are equal when they are structurally equal, or their difference expands or
simplifies to zero; a numeric probe at a fixed point rejects most unequal pairs before simplify runs.
Decimals were parsed exactly, so 0.333 is not 1/3: no rounding tolerance, by design. Relations are equal
up to a constant factor (positive for inequalities); bare lists and \\{..\\} compare as sets, tuples
in order. simplify has no time bound, so the verifier calls this in a worker process it kills on a
deadline.
"""
import sympy
from sympy import Rational

from nanorlvr.verify.parse import PM, answer_kind, is_const, name_like, to_set


def _probe(a, b):
    """False if a and b clearly differ at a fixed point (positive values for symbols), else None."""
    syms = sorted((a - b).free_symbols, key=str)
    point = {x: Rational(61 + 17 * k, 100) for k, x in enumerate(syms)}
    try:
        va, vb = complex(a.evalf(30, subs=point)), complex(b.evalf(30, subs=point))
    except (TypeError, ValueError, ArithmeticError):
        return None
    if abs(va - vb) > 1e-20 * (1 + max(abs(va), abs(vb))):
        return False
    return None


def _expr_equal(a, b):
    """Exact equality of two sympy expressions: structural, then expand / simplify to zero."""
    if a == b:
        return True
    if a.is_Number and b.is_Number:  # rationals (decimals are parsed exactly) or infinities
        return False
    d = a - b
    if d == 0:
        return True
    if d.has(sympy.Sum, PM, sympy.zoo, sympy.nan, sympy.oo) or _probe(a, b) is False:
        return False
    if sympy.expand(d) == 0 or sympy.simplify(d) == 0:
        return True
    return not d.free_symbols and d.equals(0) is True


def _proportional(d1, d2, positive):
    """d1 = c * d2 for a constant c != 0 (c > 0 when positive): same equation / inequality."""
    if _expr_equal(d1, d2) or (not positive and _expr_equal(d1, -d2)):
        return True
    q = sympy.cancel(d1 / d2)
    return bool(q.is_number and q.is_finite and q != 0 and (q.is_positive or not positive))


def _rel_equal(r, s):
    (_, xs, xo), (_, ys, yo) = r, s
    if len(xs) != len(ys) or xo != yo:
        return False
    if len(xs) == 2 and xo[0] in ('=', '!='):
        return _proportional(xs[0] - xs[1], ys[0] - ys[1], False)
    if len(xs) == 2:
        return _proportional(xs[1] - xs[0], ys[1] - ys[0], True)
    return all(_expr_equal(x, y) for x, y in zip(xs, ys))


def _rel_to_set(r):
    """a < x <= b, x >= c: an interval, when the middle names a variable and the ends are constants."""
    _, xs, ops = r
    if not set(ops) <= {'<', '<='}:
        return None
    if len(xs) == 3 and is_const(xs[0]) and name_like(xs[1]) and is_const(xs[2]):
        return sympy.Interval(xs[0], xs[2], ops[0] == '<', ops[1] == '<')
    if len(xs) == 2 and name_like(xs[0]) and is_const(xs[1]):
        return sympy.Interval(-sympy.oo, xs[1], True, ops[0] == '<')
    if len(xs) == 2 and is_const(xs[0]) and name_like(xs[1]):
        return sympy.Interval(xs[0], sympy.oo, ops[0] == '<', True)
    return None


def _match(xs, ys):
    """Same sets: every x has an equivalent y and every y an equivalent x (repeats don't count)."""
    return all(any(equivalent(x, y) for y in ys) for x in xs) and \
        all(any(equivalent(x, y) for x in xs) for y in ys)


def _set_equal(a, b):
    if a == b:
        return True
    if isinstance(a, sympy.Interval) and isinstance(b, sympy.Interval):
        return (a.left_open, a.right_open) == (b.left_open, b.right_open) and \
            _expr_equal(a.start, b.start) and _expr_equal(a.end, b.end)
    if type(a) is type(b) and isinstance(a, (sympy.Union, sympy.FiniteSet)):
        return _match(list(a.args), list(b.args))
    return False


def equivalent(g, p):
    """Is answer p (parsed) the same as answer g (parsed)? Symmetric; see the module docstring."""
    kg, kp = answer_kind(g), answer_kind(p)
    if kp == 'assign' and kg != 'assign':
        g, p, kg, kp = p, g, kp, kg
    if kg == 'assign':
        if kp == 'assign' and equivalent(g[2], p[2]):
            return True
        if kp in ('assign', 'rel'):
            rg = ('rel', [g[1], g[2]], ['='])
            rp = ('rel', [p[1], p[2]], ['=']) if kp == 'assign' else p
            if answer_kind(g[2]) == 'interval' and kp == 'rel':
                return _rel_to_set(p) is not None and _set_equal(g[2], _rel_to_set(p))
            return all(answer_kind(x) in ('expr', 'matrix') for x in rg[1] + rp[1]) and _rel_equal(rg, rp)
        return equivalent(g[2], p)
    if kp == 'rel' and kg != 'rel':
        g, p, kg, kp = p, g, kp, kg
    if kg == 'rel':
        if kp == 'rel':
            return _rel_equal(g, p)
        s = _rel_to_set(g)
        return s is not None and kp in ('interval', 'tuple') and equivalent(s, p)
    if kg == 'text' or kp == 'text':
        return g == p
    if kg == 'interval' or kp == 'interval':
        if {kg, kp} == {'interval', 'tuple'} and len((g if kg == 'tuple' else p)[1]) == 2:
            g, p = to_set(g), to_set(p)
        return answer_kind(g) == answer_kind(p) == 'interval' and _set_equal(g, p)
    if kg == kp == 'set':
        return _match(g[1], p[1])
    if kg in ('set', 'tuple') and kp in ('set', 'tuple'):  # (1, 3) vs {1, 3}: as written
        return len(g[1]) == len(p[1]) and all(equivalent(x, y) for x, y in zip(g[1], p[1]))
    if kg == kp == 'matrix':
        return g.shape == p.shape and all(_expr_equal(x, y) for x, y in zip(g, p))
    return kg == kp == 'expr' and _expr_equal(g, p)
