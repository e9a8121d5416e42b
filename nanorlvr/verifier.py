"""The reward function: does a model's response contain the gold answer? Safe and time-bounded.

    reward(texts, golds, truncated=None, questions=None, ...) -> list[bool]   (rollouts and evaluation)
    verify(response, gold, timeout=1.0) -> bool                                  (one pair)
    verify_batch_detailed(responses, golds, ...) -> list[(bool, reason)]
    check_gold(gold) -> None, raises ValueError if the gold answer cannot be parsed
    extract_answer(text, last_number_fallback=True) -> str | None

Pipeline. (1) Extraction, plain string work on the last MAX_TEXT characters: text after </think>
(none if a <think> is never closed), then candidate answers, tried in order until one parses:
explicit ones -- the last \\boxed{}/\\fbox{} (boxes joined by "and" or commas are one list answer),
a GSM8K "#### x" line, "the (final) answer is x", the latest first -- and, only when there is no
box or ####, the whole text if short, then the later of the last $..$ / \\[..\\] math and the last
number. A gold's answer is never guessed from its last number. (2) Cleaning:
\\left, spacing, $, \\%, degrees, units in \\text{..}, thousands separators. (3) If the first candidate
on both sides is a plain number (integer, decimal, a/b, \\frac{a}{b}, 1e5) the two are compared as
exact fractions.Fraction right here: no sympy, microseconds -- most RL rewards end here. (4) Anything
else goes to a worker process (verify/workers.py: a deadline per item, a hung worker killed and replaced) that
parses each side with nanorlvr/verify/parse.py (an allow-list tokenizer and a hand-written parser that builds
sympy objects; never eval/sympify) and tests equivalence exactly with nanorlvr/verify/equal.py: structurally,
then by expand/simplify (decimals are exact rationals, so 3.50 == 7/2 but 1/2^99 != 1/2^98, and
0.3333 != 1/3). Policy: units, %, currency and degrees are dropped (10% == 10); bare lists "a, b" and
\\{a, b\\} are unordered sets, (a, b) is ordered; "x = 3" matches 3 and "y = 2x+1" matches 2x+1, an
equation matches its multiples; "a < x < b" matches the interval.

Two rules keep the reward from paying for an answer that computes nothing (a 135M policy found each within
50 GRPO steps, docs/results.md). Where the gold is a plain number, an answer that finally states arithmetic
still to do -- numbers and operators only, "7+5", "3\\times 4", "\\sqrt{4}", "13 + 3 is an irrational
number" -- scores 0 even when its value is right (nanorlvr/verify/form.py; a fraction of integers is a
value). And given the questions (reward's `questions`), an answer that is the question written back ("16/18"
asked "16/18") scores 0.

A response cut off by the token budget (no end token: `truncated`) scores 0, in the GRPO reward and in
every evaluation alike: it never gave its final answer, even if the last number it wrote happens to match
the gold ("... 4 * 4 =" would otherwise count for gold 4).

Golds are checked at dataset load (check_gold); verify raises ValueError for a gold it cannot parse
rather than return a reward that means nothing. Linux/macOS only (select on pipes).
"""
import functools
import logging
import re
from fractions import Fraction

from nanorlvr.verify.form import final_side, plain
from nanorlvr.verify.workers import run_jobs

MAX_TEXT = 20_000  # only the tail of a response is searched for the answer
MAX_ANSWER = 1_000  # a longer candidate answer is not an answer
MAX_WHOLE = 200  # the whole text is tried as an answer only when at most this long
log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- extraction


def _prepare(text):
    """Tail of the text, with common escaping damage undone and the reasoning trace dropped."""
    text = text[-MAX_TEXT:]
    # '\frac' written in a non-raw Python string becomes form-feed + 'rac'; '\boxed' backspace + 'oxed'
    if any(c in text for c in '\x0c\x08\x07\x0b'):
        text = text.translate({0x0c: '\\f', 0x08: '\\b', 0x07: '\\a', 0x0b: '\\v'})
    if '\\\\' in text:
        text = re.sub(r'(?<!\\)\\\\(?=[a-zA-Z])', r'\\', text)  # doubly escaped \\frac -> \frac
    text = text.replace('\\$', ' ')  # an escaped dollar is currency, not a math delimiter
    for stop in ('<|im_start|>', '<|im_end|>', '<|endoftext|>'):
        text = text.split(stop)[0]
    if '</think>' in text:
        return text.rsplit('</think>', 1)[1]
    return '' if '<think>' in text else text


_BOX = re.compile(r'\\(?:boxed|fbox)\s*')
_WORD = re.compile(r'[^\s${}]*')
_BRACE = re.compile(r'\\[{}]|[{}]')


def _box_at(text, m):
    """(start, end, content) of the box whose '\\boxed' match is m, or None if unclosed."""
    i = m.end()
    if text[i:i + 1] != '{':  # \boxed 5
        word = _WORD.match(text, i).group()
        return (m.start(), i + len(word), word) if word else None
    depth = 0
    for b in _BRACE.finditer(text, i, i + MAX_ANSWER + 2):  # a longer answer is no answer
        depth += {'{': 1, '}': -1}.get(b.group(), 0)
        if depth == 0:
            return m.start(), b.end(), text[i + 1:b.start()]
    return None


def _boxed(text):
    """(end, content) of the last \\boxed{..} / \\fbox{..} (nested braces), joined with the boxes
    before it that are only separated by connectors: "\\boxed{1} and \\boxed{2}" is "1, 2"."""
    boxes = [b for b in map(lambda m: _box_at(text, m), _BOX.finditer(text)) if b]
    if not boxes:
        return None
    parts = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        gap = text[box[1]:parts[0][0]]
        words = re.findall(r'[a-zA-Z]+', re.sub(r'\\[a-zA-Z]+', ' ', gap))
        if len(gap) > 80 or len(parts) > 50 or (words and not ({'and', 'or'} & set(words) and len(words) <= 4)):
            break
        parts.insert(0, box)
    return parts[-1][1], ', '.join(p[2] for p in parts)


_NUMBER = re.compile(r'(?<![A-Za-z\d.,])-?(?:\\[dt]?frac\{\d+\}\{\d+\}|\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])'
                     r'|\d+(?:[.,]\d+)?(?:/\d+)?|\.\d+)')
_ENV = re.compile(r'\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$\n]+?)\$', re.S)
_MARK = re.compile(r'answer\s*(?:is|:)\s*:?', re.I)


def _last_number(text):
    """(position, number) of the last number in running text, or None."""
    found = list(_NUMBER.finditer(text))
    if not found:
        return None
    num = found[-1].group()
    if ',' in num and not re.fullmatch(r'-?\d{1,3}(,\d{3})+(\.\d+)?', num):
        num = num.replace(',', '.')  # 2,74 in running text is a decimal comma
    return found[-1].start(), num


def _candidates(text, last_number_fallback=True, whole=True):
    """Candidate answer strings in the order verify tries them (raw, not yet cleaned): explicit
    answers (boxed, ####, "answer is"; the latest first), and only if there is no box or ####, the
    whole text if short, then the later of the last math environment and the last number."""
    text = _prepare(text)
    box = _boxed(text)
    hashes = [(m.start(), m.group(1)) for m in re.finditer(r'####\s*([-+$\\.\d][^\n]*)', text)][-1:]
    marked = ([box] if box else []) + hashes
    marks = list(_MARK.finditer(text))
    if marks:
        rest = re.split(r'\.(?:\s|$)|\bI hope\b', text[marks[-1].end():].split('\n')[0])[0]
        marked.append((marks[-1].start(), rest))
        if not marked[:-1] and _last_number(rest):
            marked.append((marks[-1].start() - 1, _last_number(rest)[1]))
    out = [c for _, c in sorted(marked, reverse=True)]
    if not (box or hashes):  # a boxed or #### answer is final: no guessing from the rest
        out += [text] if whole and len(text.strip()) <= MAX_WHOLE else []
        loose = [(m.end(), next(g for g in m.groups() if g is not None))  # the tail bounds the cost
                 for m in _ENV.finditer(text, max(0, len(text) - 4000))][-1:]
        if last_number_fallback and _last_number(text):
            loose.append(_last_number(text))
        out += [c for _, c in sorted(loose, reverse=True)]
    return [c for c in out if c.strip()]


def extract_answer(text, last_number_fallback=True):
    """The answer in model output `text`: the last \\boxed{..} / \\fbox{..}, else a '#### x' line,
    else 'the (final) answer is x', else the last $..$ math, else (if allowed) the last number; None
    if there is none. (verify also tries the whole text as an answer when it is short.)"""
    found = _candidates(text, last_number_fallback, whole=False)
    return found[0].strip() if found else None

# ----------------------------------------------------------------------------- cleaning


_UNICODE = str.maketrans({'−': '-', '–': '-', '×': '\\times ', '·': '\\cdot ', '÷': '/', '≤': '\\le ',
                          '≥': '\\ge ', '≠': '\\ne ', 'π': '\\pi ', '∞': '\\infty ', '√': '\\sqrt',
                          '²': '^2', '³': '^3', '∪': '\\cup ', '∈': '\\in ', '≈': '\\approx ',
                          '\u00a0': ' '})
_TEXT_CMD = r'\\(?:text|textbf|textit|textrm|textnormal|textsf|mbox|mathrm|mathbf|mathit|mathsf|operatorname)'
_FUNC_NAMES = {'sin', 'cos', 'tan', 'sec', 'csc', 'cot', 'log', 'ln', 'exp'}


def _text_cmd(m):
    c = m.group(1).strip()
    if c.lower() in ('and', 'or'):
        return f' {c.lower()} '
    if re.fullmatch(r'\(?[A-Za-z]?\)?|[\d.]+', c):  # \text{(C)}, \mathrm{e}: keep the letter
        return c + (m.group(2) or '')
    return f'\\{c} ' if c in _FUNC_NAMES else ' '  # words next to a value are units: drop them


def _clean(s):
    """Strip the LaTeX and prose around an answer that does not change its value."""
    s = s.translate(_UNICODE).strip()
    if re.fullmatch(r'-?\d+(\.\d+)?', s):
        return s
    whole = re.fullmatch(r'\$*\s*' + _TEXT_CMD + r'\s*\{([^{}]*)\}\s*\$*\.?', s)
    if whole:  # the answer is a phrase: \text{Evelyn}
        return whole.group(1).strip()
    s = re.sub(r'\\(?:left|right)\s*\.|\\(?:left|right|[bB]igg?[lr]?)(?![a-zA-Z])', '', s)
    s = re.sub(r'\{\s*,\s*\}|(?<=\d),\\!\s*(?=\d{3})', '', s)  # 14{,}916 and 32,\!349
    s = re.sub(r'(?<!\\)\\[,;:! ]|\\q?quad|~|\\displaystyle|\\limits', ' ', s)
    s = re.sub(r'\$|\\[()\[\]]', ' ', s)
    s = re.sub(r'\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree|\\?%|\\percent', '', s)
    s = re.sub(_TEXT_CMD + r'\s*\{([^{}]*)\}(\s*\^\s*\{?\d\}?)?', _text_cmd, s)
    if '\\approx' in s:  # x \approx 11 means x = 11; 1/3 \approx 0.33 means 1/3
        before, after = s.split('\\approx', 1)
        name = re.fullmatch(r'\s*[A-Za-z](_\{?\w+\}?)?\s*', before)
        s = before + '=' + after.split('\\approx')[0] if name else before
    s = re.sub(r'\s+', ' ', s).strip().rstrip('.\\,; ').strip()
    if re.fullmatch(r'[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d+)?', s):  # 7,425,000
        s = s.replace(',', '')
    elif re.fullmatch(r'[+-]?\d{1,3}( \d{3})+(\.\d+)?', s):  # 1 000
        s = s.replace(' ', '')
    elif re.fullmatch(r'[+-]?(0|\d{4,}),\d+', s):  # 0,111 and 1000,99: decimal commas
        s = s.replace(',', '.')
    return s


_FNUM = r'(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,3})?'
_FAST = re.compile(rf'([+-]?)\s*(?:({_FNUM})|(\d+)\s*/\s*(\d+)|\\[dtc]?frac\s*(?:\{{\s*(\d+)\s*\}}\s*\{{\s*(\d+)'
                   rf'\s*\}}|(\d)(\d)))')


def _fast_number(s):
    """Exact value of a plain number answer (5, -3.50, 1e3, 7/2, \\frac{7}{2}), else None."""
    m = _FAST.fullmatch(s)
    if not m:
        return None
    sign, dec, *nd = m.groups()
    num, den = (dec, 1) if dec is not None else next((nd[k], int(nd[k + 1])) for k in (0, 2, 4) if nd[k])
    return None if den == 0 else (-1 if sign == '-' else 1) * Fraction(num) / den


@functools.lru_cache(maxsize=4096)  # golds repeat: a group of samples shares one
def _gold_candidates(gold):
    return tuple(_cleaned_candidates(gold, last_number_fallback=False))  # a gold's answer is never guessed


def _cleaned_candidates(text, last_number_fallback=True):
    out = []
    for c in _candidates(text, last_number_fallback):
        c = _clean(c)
        if c and len(c) <= MAX_ANSWER and c not in out:
            out.append(c)
    return out

# ----------------------------------------------------------------------------- public API


def reward(texts, golds, truncated=None, questions=None, timeout=1.0, workers=2):
    """The reward of GRPO's rollouts and of every evaluation: True/False per (response text, gold) pair, in
    order (see verify). truncated: a list of one bool per text, the responses that hit the token budget
    without an end token; they score False whatever they say (no final answer was given). questions: one
    per text; an answer that is its question written back scores False (restates)."""
    checked = _verify(texts, golds, timeout, workers)
    ok = [ok for ok, _, _ in checked]
    if truncated is not None:
        ok = [o and not t for o, t in zip(ok, truncated)]
    if questions is not None:
        ok = [o and not restates(a, q, g) for o, (_, _, a), q, g in zip(ok, checked, questions, golds)]
    return ok


def restates(answer, question, gold=None):
    """Whether `answer` (the one the verifier read) finally states `question` itself (spacing, $ and
    \\frac{a}{b} / a/b aside), where the gold is not the question itself. Value equality would pay for
    copying: asked "16/18", the answer "16/18" equals the gold 8/9 (an unreduced fraction is a valid answer),
    and a policy learns to copy the question instead of computing; asked "30/19", whose gold is 30/19,
    copying is the answer."""
    if not answer or not isinstance(question, str) or (gold is not None and plain(_clean(gold)) == plain(_clean(question))):
        return False
    return plain(final_side(answer)) == plain(_clean(question))


def _gold_error(i, gold, why):
    where = '' if i is None else f' (item {i})'
    return ValueError(f'gold answer{where} cannot be parsed: {gold[:100]!r}: {why}')


def verify_batch_detailed(responses, golds, timeout=1.0, workers=2):
    """[(ok, reason)] per (response, gold) pair, in order. Plain numbers are compared in-process,
    the rest on `workers` worker processes with `timeout` seconds per item. Raises ValueError for a
    gold that cannot be parsed."""
    return [(ok, why) for ok, why, _ in _verify(responses, golds, timeout, workers)]


def _verify(responses, golds, timeout, workers):
    """[(ok, reason, the candidate answer read or None)] per pair: verify_batch_detailed's work."""
    if len(responses) != len(golds):
        raise ValueError(f'{len(responses)} responses but {len(golds)} golds')
    results, jobs = [None] * len(golds), []
    for i, (response, gold) in enumerate(zip(responses, golds)):
        g = _gold_candidates(gold)
        if not g:
            raise _gold_error(i if len(golds) > 1 else None, gold, 'no answer found')
        p = _cleaned_candidates(response) if isinstance(response, str) else []
        fg, fp = _fast_number(g[0]), (_fast_number(p[0]) if p else None)
        if fg is not None and not p:
            results[i] = (False, 'no answer found', None)
        elif fg is not None and fp is not None:
            results[i] = (fg == fp, 'equal numbers' if fg == fp else f'different numbers: {p[0][:60]}', p[0])
        else:  # value: where the gold is a number, arithmetic still to do is not an answer (verify/form.py)
            jobs.append((i, {'gold': list(g), 'pred': p, 'value': fg is not None}))
    for i, reply in run_jobs(jobs, timeout, workers).items():
        if reply.get('bad_gold'):
            raise _gold_error(i if len(golds) > 1 else None, golds[i], reply['why'])
        if reply['why'].startswith(('timeout', 'worker', 'error')):
            log.warning('verifier item %d scored False: %s', i, reply['why'])
        results[i] = (reply['ok'], reply['why'], reply.get('read'))
    return results


def verify(response, gold, timeout=1.0):
    """True if the answer in `response` (raw model output) equals `gold` (a bare answer, $..$,
    \\boxed{..} or a GSM8K solution ending in #### x). Returns within about `timeout` seconds
    (plus a one-off worker start); raises ValueError if the gold cannot be parsed."""
    return verify_batch_detailed([response], [gold], timeout, workers=1)[0][0]


def check_gold(gold):
    """Raise ValueError with a clear message if `gold` has no answer we can parse."""
    _, why = verify_batch_detailed([''], [gold], timeout=10.0, workers=1)[0]
    if why.startswith(('timeout', 'worker', 'error')):
        raise _gold_error(None, gold, why)
