"""Safe math-answer parser, used by nanorlvr/verifier.py (nanorlvr/verify/equal.py compares its results).

An answer string (already cut out of the model output and cleaned of LaTeX noise by the verifier) is
tokenised against an allow-list -- numbers, operators, brackets, single letters, a fixed set of
function / constant / LaTeX command names -- and anything else is rejected. A recursive-descent
parser then builds sympy objects itself (Rational, Symbol, Add, Mul, Pow, sin, ...): nothing here
calls eval, exec, sympify or parse_expr. Size guards make construction cheap by design: at most
MAX_TOKENS tokens and MAX_DEPTH nesting, numeric powers limited to MAX_BITS bits of result,
factorials and binomials to n <= MAX_FACT.

A parsed answer is a sympy Expr, a sympy Matrix, a sympy Set (intervals and their unions), or a
tagged tuple: ('tuple', items) ordered, ('set', items) unordered (bare lists "1, 2" and \\{..\\}),
('rel', sides, ops) (equations, inequalities, chains), ('assign', name, value) (x = 3, |AB| = 1,
(p, q) = (3, 2), x \\in [0, 1]), ('text', words) for plain-word answers ("odd", "Evelyn").
"""
import re
from fractions import Fraction

import sympy
from sympy import Rational, Symbol

MAX_TOKENS, MAX_DEPTH, MAX_BITS, MAX_FACT, MAX_ITEMS = 600, 60, 20000, 2000, 40
PM = Symbol('PM_')  # placeholder for \pm, expanded into two answers; no user token can name it


class ParseError(ValueError):
    pass


FUNCS = {'sin': sympy.sin, 'cos': sympy.cos, 'tan': sympy.tan, 'sec': sympy.sec, 'csc': sympy.csc,
         'cot': sympy.cot, 'arcsin': sympy.asin, 'arccos': sympy.acos, 'arctan': sympy.atan,
         'sinh': sympy.sinh, 'cosh': sympy.cosh, 'tanh': sympy.tanh, 'exp': sympy.exp,
         'ln': sympy.log, 'log': sympy.log, 'sqrt': sympy.sqrt}
GREEK = set('alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu '
            'xi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Sigma Phi '
            'Psi Omega'.split())
CONSTS = {'pi': sympy.pi, 'infty': sympy.oo, 'infinity': sympy.oo, 'inf': sympy.oo,
          'emptyset': sympy.S.EmptySet, 'varnothing': sympy.S.EmptySet}
RELS = {'=': '=', '==': '=', '<': '<', '>': '>', '<=': '<=', '>=': '>=', '!=': '!=', 'le': '<=',
        'leq': '<=', 'leqslant': '<=', 'ge': '>=', 'geq': '>=', 'geqslant': '>=', 'lt': '<',
        'gt': '>', 'ne': '!=', 'neq': '!=', 'in': 'in'}
ADDOPS = {'+', '-', 'pm', 'mp', 'cup', 'cap', 'setminus'}
MULOPS = {'*', '/', 'cdot', 'times', 'div'}
STRUCT = {'frac', 'dfrac', 'tfrac', 'cfrac', 'sqrt', 'sum', 'binom', 'dbinom',
          'lfloor', 'rfloor', 'lceil', 'rceil', '{', '}', '|'}
KNOWN_CMDS = set(FUNCS) | GREEK | set(CONSTS) | set(RELS) | ADDOPS | MULOPS | STRUCT
ATOM_CMDS = (set(FUNCS) | GREEK | set(CONSTS) | STRUCT) - {'}', '|', 'rfloor', 'rceil'}
WORDS_OK = set(FUNCS) | {'pi', 'inf', 'infty', 'infinity'}

_TOKEN = re.compile(r"""(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d{1,3}(?![\d.]))?)
  |(?P<env>\\(?:begin|end)\s*\{[a-zA-Z]+\*?\})
  |(?P<cmd>\\[a-zA-Z]+|\\[{}|])|(?P<letters>[a-zA-Z]+)
  |(?P<op><=|>=|!=|==|!!|\\\\|[-+*/^_()\[\]{},;=<>!|:'&])|(?P<ws>\s+)""", re.X)


def tokenize(s):
    """Split an answer into (kind, text) tokens; anything outside the allow-list raises ParseError."""
    toks, pos = [], 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            raise ParseError(f'unexpected character {s[pos]!r}')
        kind, text = m.lastgroup, m.group()
        if kind == 'env':
            toks.append(('begin' if text[1] == 'b' else 'endenv', text.split('{')[1].rstrip('*}')))
        elif kind == 'cmd':
            if text[1:] not in KNOWN_CMDS:
                raise ParseError(f'unknown command {text}')
            toks.append(('cmd', text[1:]))
        elif kind == 'letters':
            # A run of letters is a known name, a plain word ("odd", "cm", "and"), or a product of
            # single-letter symbols ("xy", "AB"). Words stand alone: start after a space (or at the
            # start) and either are 3+ letters or end before a space / the end.
            alone = pos == 0 or s[pos - 1].isspace()
            ends = m.end() == len(s) or s[m.end()].isspace() or s[m.end()] in ',;.:!?)'

            if text in ('and', 'or'):
                toks.append(('word', text))
            elif text in WORDS_OK:
                toks.append(('cmd', text))
            elif len(text) > 1 and alone and (len(text) >= 3 or ends):
                toks.append(('word', text.lower()))
            else:
                toks.extend(('sym', c) for c in text)
        elif kind != 'ws':
            toks.append((kind, text))
        if len(toks) > MAX_TOKENS:
            raise ParseError('answer too long')
        pos = m.end()
    return toks


def answer_kind(v):
    """'expr', 'matrix', 'interval', or the tag of a tagged tuple ('tuple', 'set', 'rel', 'assign', 'text')."""
    if isinstance(v, tuple):
        return v[0]
    if isinstance(v, sympy.MatrixBase):
        return 'matrix'
    return 'interval' if isinstance(v, sympy.Set) else 'expr'


def _scalar(v):
    if isinstance(v, (sympy.Expr, sympy.MatrixBase)):
        return v
    raise ParseError('arithmetic on a non-number')


def _pow(b, e):
    b, e = _scalar(b), _scalar(e)
    if isinstance(b, sympy.MatrixBase):
        if not (e.is_Integer and abs(e) <= 64):
            raise ParseError('bad matrix power')
        return b ** int(e)
    if e.is_Rational and b.is_Rational and b not in (0, 1, -1):
        if max(abs(b.p).bit_length(), b.q.bit_length()) * abs(e.p) > MAX_BITS:
            raise ParseError('power too large')
    elif e.is_Rational and abs(e.p) > 1000 and b not in (0, 1, -1):
        raise ParseError('exponent too large')
    return b ** e


def _fact(v, double=False):
    v = _scalar(v)
    if v.is_number and not (v.is_Integer and 0 <= v <= MAX_FACT):
        raise ParseError('factorial too large or not a natural number')
    return sympy.factorial2(v) if double else sympy.factorial(v)


def _number(text):
    f = Fraction(text)
    if max(f.numerator.bit_length(), f.denominator.bit_length()) > MAX_BITS:
        raise ParseError('number too large')
    return Rational(f.numerator, f.denominator)


def is_const(v):
    return isinstance(v, sympy.Expr) and not v.free_symbols


def name_like(v):
    """x, x_1, |AB|, f(x), A:B, (p, q): something an answer names rather than a value."""
    if isinstance(v, tuple):
        return v[0] == 'tuple' and all(name_like(x) for x in v[1])
    return (isinstance(v, sympy.Expr) and bool(v.free_symbols) and not v.has(PM)
            and not any(isinstance(a, sympy.Add) for a in sympy.preorder_traversal(v))
            and all(n in (1, -1) for n in v.atoms(sympy.Number)))


def _interval(a, b, lo, ro):
    a, b = _scalar(a), _scalar(b)
    if (a.is_extended_real and b.is_extended_real and a >= b) or not (is_const(a) and is_const(b)):
        raise ParseError('not an interval')
    return sympy.Interval(a, b, lo, ro)


def to_set(v):
    k = answer_kind(v)
    if k == 'interval':
        return v
    if k == 'tuple' and len(v[1]) == 2:
        return _interval(v[1][0], v[1][1], True, True)
    if k == 'set':
        return sympy.FiniteSet(*[_scalar(x) for x in v[1]])
    return sympy.FiniteSet(_scalar(v))


def _expand_pm(v):
    """1 +- sqrt(2) stands for two answers."""
    if answer_kind(v) == 'assign':
        return _expand_pm(v[2])
    if isinstance(v, sympy.Expr) and v.has(PM):
        return [v.subs(PM, 1), v.subs(PM, -1)]
    return [v]


class _Parser:
    def __init__(self, toks):
        self.toks, self.i, self.depth, self.in_abs = toks, 0, 0, 0

    def peek(self, k=0):
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ('end', '')

    def take(self, want=None):
        tok = self.peek()
        if want is not None and tok[1] != want:
            raise ParseError(f'expected {want!r}, got {tok[1]!r}')
        self.i += 1
        return tok

    def answer(self, top=True):
        groups, seps = [[]], {',', ';', 'and', 'or'}
        while True:
            if self.peek()[1] not in seps and self.peek()[0] != 'end':
                groups[-1].append(self.item())
            tok = self.peek()
            if tok[0] == 'end':
                break
            if tok[1] not in seps:
                raise ParseError(f'unexpected {tok[1]!r}')
            self.take()
            if tok[1] != ',' and groups[-1]:
                groups.append([])
        flat = []
        for g in groups:  # "p=5, q=2; p=7, q=2": groups of assignments are tuples
            if len(groups) > 1 and len(g) > 1 and all(answer_kind(x) == 'assign' for x in g):
                flat.append(('tuple', [x[2] for x in g]))
            else:
                flat.extend(g)
        if len(flat) == 1 and (not top or len(_expand_pm(flat[0])) == 1):
            return flat[0]
        items = [y for x in flat for y in _expand_pm(x)]
        if not items or len(items) > MAX_ITEMS:
            raise ParseError('empty or too long list')
        return items[0] if len(items) == 1 else ('set', items)

    def item(self):
        if self.peek()[0] == 'word':  # a plain-word answer: "odd", "the midpoints form a hexagon"
            words = []
            while self.peek()[0] in ('word', 'sym') and self.peek()[1] not in ('and', 'or'):
                words.append(self.take()[1])
            return ('text', ' '.join(words))
        sides, ops = [self.expr()], []
        while self.peek()[1] in RELS and self.peek()[0] in ('op', 'cmd'):
            ops.append(RELS[self.take()[1]])
            sides.append(self.expr())
        while self.peek()[0] == 'word' and self.peek()[1] not in ('and', 'or'):
            self.take()  # trailing unit words: "35 cm", "28 percent"
        if not ops:
            return sides[0]
        if ops == ['in'] and name_like(sides[0]):
            return ('assign', sides[0], sides[1])
        if 'in' in ops:
            raise ParseError('bad use of \\in')
        if set(ops) == {'='}:
            if len(sides) > 2:
                return sides[-1]  # x = 5+5+1 = 11: the last side is the answer
            if name_like(sides[0]):
                return ('assign', sides[0], sides[1])
            if is_const(sides[0]) and is_const(sides[1]):
                return sides[1]
        if set(ops) <= {'>', '>='}:  # write every chain with < and <=
            sides, ops = sides[::-1], [o.replace('>', '<') for o in ops[::-1]]
        for s in sides:
            _scalar(s)
        return ('rel', sides, ops)

    def expr(self):
        left = self.term()
        while self.peek()[1] in ADDOPS:
            op = self.take()[1]
            right = self.term()
            if op in ('cup', 'cap', 'setminus'):
                a, b = to_set(left), to_set(right)
                left = a.union(b) if op == 'cup' else a.intersect(b) if op == 'cap' else a - b
            elif op in ('pm', 'mp'):
                left = _scalar(left) + (PM if op == 'pm' else -PM) * _scalar(right)
            else:
                left = _scalar(left) + _scalar(right) if op == '+' else _scalar(left) - _scalar(right)
        return left

    def starts_atom(self):
        kind, text = self.peek()
        if kind in ('num', 'sym', 'begin') or text == '(' or (text == '|' and not self.in_abs):
            return True
        return kind == 'cmd' and text in ATOM_CMDS

    def term(self):
        left = self.factor()
        while True:
            text = self.peek()[1]
            if text in MULOPS and self.peek()[0] in ('op', 'cmd'):
                self.take()
                right = _scalar(self.factor())
                left = _scalar(left) / right if text in ('/', 'div') else _scalar(left) * right
            elif text == ':' and self.peek(1)[0] != 'end':  # ratio A:B, or a time 12:00
                self.take()
                if isinstance(left, sympy.Integer) and len(self.peek()[1]) == 2 and self.peek()[1].isdigit():
                    return ('tuple', [left, _number(self.take()[1]), Symbol('h:m')])
                left = _scalar(left) / _scalar(self.factor())
            elif self.starts_atom():  # implicit multiplication: 2x, 2\sqrt{3}, (x-1)(x+1)
                left = _scalar(left) * _scalar(self.factor())
            else:
                return left

    def factor(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError('nested too deeply')
        try:
            text = self.peek()[1]
            if text in ('-', '+', 'pm', 'mp'):
                self.take()
                v = _scalar(self.factor())
                return {'-': -v, '+': v, 'pm': PM * v, 'mp': -PM * v}[text]
            return self.power()
        finally:
            self.depth -= 1

    def power(self):
        base = self.postfix()
        if self.peek()[1] == '^':
            self.take()
            return _pow(base, self.exponent())
        return base

    def exponent(self):
        return self.group() if self.peek()[1] == '{' else self.factor()

    def postfix(self):
        v = self.atom()
        while True:
            text = self.peek()[1]
            if text in ('!', '!!'):
                self.take()
                v = _fact(v, text == '!!')
            elif text == "'" and isinstance(v, Symbol):
                self.take()
                v = Symbol(v.name + "'")
            elif text == '_':
                self.take()
                v = self.subscript(v)
            else:
                return v

    def subscript(self, v):
        if self.peek()[1] == '{':  # keep the subscript's text: x_{n-1} is one symbol
            self.take()
            parts, level = [], 1
            while True:
                tok = self.take()
                if tok[0] == 'end':
                    raise ParseError('unclosed subscript')
                level += {'{': 1, '}': -1}.get(tok[1], 0)
                if level == 0:
                    break
                parts.append(tok[1])
            sub = ''.join(parts)
        else:
            sub = self.take()[1]
        if isinstance(v, sympy.Integer) and sub.isdigit() and 2 <= int(sub) <= 36:  # 204_5: base 5
            try:
                return sympy.Integer(int(str(v), int(sub)))
            except ValueError:
                raise ParseError('bad digit for base') from None
        if isinstance(v, Symbol):
            return Symbol(f'{v.name}_{sub}')
        raise ParseError('bad subscript')

    def arg(self):
        """A LaTeX argument: {...} or a single character (\\frac13, \\sqrt2)."""
        kind, text = self.peek()
        if text == '{':
            return self.group()
        if kind == 'num' and len(text) > 1:
            self.toks[self.i] = ('num', text[1:])
            return _number(text[0])
        return self.factor() if kind != 'num' else _number(self.take()[1])

    def inner(self, closers):
        """Parse the tokens up to the bracket closing the one just taken: (value, closing token)."""
        level, j = 0, self.i
        while j < len(self.toks):
            kind, t = self.toks[j]
            if kind in ('op', 'cmd') and t in ('(', '[', '{'):
                level += 1
            elif kind in ('op', 'cmd') and t in (')', ']', '}'):
                if level == 0:
                    break
                level -= 1
            j += 1
        if j == len(self.toks) or self.toks[j] not in closers or j == self.i:
            raise ParseError('unbalanced or empty brackets')
        sub = _Parser(self.toks[self.i:j])
        sub.depth = self.depth + 1
        if sub.depth > MAX_DEPTH:
            raise ParseError('nested too deeply')
        v, self.i = sub.answer(top=False), j + 1
        return v, self.toks[j]

    def group(self):
        self.take('{')
        return self.inner([('op', '}')])[0]

    def atom(self):
        kind, text = self.peek()
        if kind == 'num':
            self.take()
            v = _number(text)
            if text.isdigit() and self.peek()[1] in ('frac', 'dfrac', 'tfrac'):
                self.take()  # a mixed number, 918\frac{1}{2}, unless the fraction is not a number
                frac = _scalar(self.arg()) / _scalar(self.arg())
                return v + frac if frac.is_Rational else v * frac
            return v
        if kind == 'sym':
            self.take()
            return {'e': sympy.E, 'i': sympy.I}.get(text, Symbol(text))
        if text in ('(', '['):
            return self.bracket()
        if kind == 'begin':
            return self.matrix()
        if kind == 'op' and text == '{':
            return self.group()
        if kind == 'op' and text == '|':
            self.take()
            self.in_abs += 1
            v = _scalar(self.expr())
            self.in_abs -= 1
            self.take('|')
            return sympy.Abs(v)
        if kind != 'cmd':
            raise ParseError(f'unexpected {text!r}')
        self.take()
        if text in CONSTS:
            return CONSTS[text]
        if text in GREEK:
            return Symbol(text)
        if text in ('frac', 'dfrac', 'tfrac', 'cfrac'):
            num = _scalar(self.arg())
            return num / _scalar(self.arg())
        if text == 'sqrt':
            if self.peek()[1] == '[':
                self.take()
                n = self.inner([('op', ']')])[0]
                return _pow(self.arg(), 1 / _scalar(n))
            return sympy.sqrt(_scalar(self.arg()))
        if text in FUNCS:
            return self.function(text)
        if text == '{':
            v = self.inner([('cmd', '}')])[0]
            return ('set', v[1]) if answer_kind(v) == 'set' else ('set', [v])
        if text in ('lfloor', 'lceil'):
            v = _scalar(self.expr())
            self.take('r' + text[1:])
            return sympy.floor(v) if text == 'lfloor' else sympy.ceiling(v)
        if text in ('binom', 'dbinom'):
            n, k = _scalar(self.arg()), _scalar(self.arg())
            if n.is_number and not (n.is_Integer and 0 <= n <= MAX_FACT):
                raise ParseError('binomial too large')
            return sympy.binomial(n, k)
        if text == 'sum':
            self.take('_')
            self.take('{')
            var = _scalar(self.factor())
            self.take('=')
            lo = _scalar(self.inner([('op', '}')])[0])
            self.take('^')
            hi = self.exponent()
            if not isinstance(var, Symbol):
                raise ParseError('bad sum index')
            return sympy.Sum(_scalar(self.term()), (var, lo, _scalar(hi)))
        raise ParseError(f'unexpected \\{text}')

    def function(self, name):
        power = base = None
        while self.peek()[1] in ('^', '_'):
            which = self.take()[1]
            v = self.arg() if self.peek()[1] == '{' or self.peek()[0] == 'num' else self.atom()
            if which == '^':
                power = v
            else:
                base = v
        if self.peek()[1] in ('(', '{'):
            arg = self.bracket() if self.peek()[1] == '(' else self.group()
        else:
            arg = self.power()
        arg = _scalar(arg)
        v = sympy.log(arg, _scalar(base)) if (name == 'log' and base is not None) else FUNCS[name](arg)
        return v if power is None else _pow(v, power)

    def bracket(self):
        opening = self.take()[1]
        v, (_, closing) = self.inner([('op', ')'), ('op', ']')])  # intervals mix ( and ]
        items, pair = (v[1] if answer_kind(v) == 'set' else [v]), opening + closing
        if len(items) == 1 and pair in ('()', '[]'):
            return items[0]
        if len(items) == 2 and pair != '()':
            try:
                return _interval(items[0], items[1], opening == '(', closing == ')')
            except ParseError:
                if pair != '[]':
                    raise
        if pair not in ('()', '[]'):
            raise ParseError('bad interval')
        return ('tuple', items)  # (1, 2) is a tuple that compares as an open interval too

    def matrix(self):
        env = self.take()[1]
        if env not in ('pmatrix', 'bmatrix', 'matrix', 'array', 'smallmatrix'):
            raise ParseError(f'unsupported environment {env}')
        if env == 'array' and self.peek()[1] == '{':  # column spec {cc}
            while self.take()[1] not in ('}', ''):
                pass
        rows, row = [], []
        while self.peek()[0] != 'endenv':
            row.append(_scalar(self.expr()))
            sep = self.take()
            if sep[1] == '\\\\':
                rows.append(row)
                row = []
            elif sep[0] == 'endenv':
                self.i -= 1
            elif sep[1] != '&':
                raise ParseError('bad matrix')
        rows = [r for r in rows + [row] if r]
        if self.take()[1] != env or not rows or len({len(r) for r in rows}) != 1 or len(rows) * len(rows[0]) > 100:
            raise ParseError('bad matrix')
        return sympy.ImmutableMatrix(rows)


def parse_answer(s):
    """Parse one cleaned answer string; raises ParseError if it is not a math answer we accept."""
    toks = tokenize(s)
    if not toks:
        raise ParseError('empty answer')
    if all(k == 'word' or (k == 'sym' and len(toks) > 1) for k, _ in toks):
        if any(k == 'word' for k, _ in toks):
            return ('text', ' '.join(t for _, t in toks).lower())
    try:
        return _Parser(toks).answer()
    except ParseError:
        raise
    except (ArithmeticError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
        raise ParseError(f'{type(e).__name__}: {e}') from None
