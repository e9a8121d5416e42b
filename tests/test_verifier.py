"""Specification of nanorlvr.verifier (and the parser behind it, nanorlvr.verify.parse).

The verifier computes the reward of every RL step from untrusted model output, so besides what
counts as the same answer, these tests pin down what it must never do: run code, hang, round two
different numbers into one, or score against a gold answer it could not read."""

import builtins
import logging
import multiprocessing
import threading
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanorlvr.verify import equal, parse
from nanorlvr.verifier import check_gold, extract_answer, reward, verify, verify_batch_detailed

SLOW = (r'\boxed{(x^2-1)^{1000}}', r'(x-1)^{1000}(x+1)^{1000}')  # equal, but expanding takes seconds
SLACK = 1.5  # seconds on top of a timeout: process kill and a busy shared 2-core machine


@pytest.fixture(scope='module', autouse=True)
def warm_worker():
    verify(r'\sqrt{4}', '2')  # the first sympy call in a process waits for a worker to import sympy


# ---------------------------------------------------------------- extraction

def test_extract_takes_the_last_boxed_with_nested_braces():
    assert extract_answer(r'first \boxed{3}. So finally the value is \boxed{\frac{1}{\sqrt{2}}}.') \
        == r'\frac{1}{\sqrt{2}}'


def test_extract_reads_fbox_and_gsm8k_hashes_and_answer_is():
    assert extract_answer(r'hence \fbox{12}') == '12'
    assert extract_answer('She has 3 + 4 = 7 apples.\n#### 7') == '7'
    assert extract_answer('#### Step 1\nadd them: 3 + 4 = 7') == '7'  # a markdown heading is no marker
    assert extract_answer('Adding them up, the final answer is 42. I hope it is correct.') == '42'


def test_extract_last_number_fallback_is_optional():
    assert extract_answer('I count 3 cats and 12 dogs') == '12'
    assert extract_answer('I count 3 cats and 12 dogs', last_number_fallback=False) is None
    assert extract_answer('no digits here') is None


def test_extract_uses_only_the_text_after_the_reasoning_trace():
    assert extract_answer(r'<think> maybe \boxed{1} </think> so \boxed{2}') == '2'
    assert extract_answer(r'<think> still thinking, \boxed{1} so far') is None


def test_adjacent_boxes_joined_by_and_are_one_list_answer():
    assert verify(r'the roots are \boxed{2} and \boxed{3}', r'\{2, 3\}')
    assert not verify(r'\boxed{2} was wrong, the actual result is \boxed{3}', r'\{2, 3\}')


# ---------------------------------------------------------------- numbers, exactly

@pytest.mark.parametrize('response, gold, expected', [
    ('7,425,000', '7425000', True),  # thousands separators
    (r'\boxed{14{,}916}', '14916', True),
    ('3.50', r'\frac{7}{2}', True),  # exact decimal = fraction
    ('0.5', '1/2', True),
    ('-0.75', r'-\dfrac{3}{4}', True),  # negatives
    ('1.5e3', '1500', True),  # scientific notation
    (r'1.5 \times 10^{3}', '1500', True),
    (r'918\frac{1}{2}', '918.5', True),  # mixed number
    ('5.001', '5', False),
    ('0.3333', r'\frac{1}{3}', False),  # no rounding tolerance
    (r'\frac{1}{2^{99}}', r'\frac{1}{2^{98}}', False),  # tiny but different
    ('1.0001', '1', False),
])
def test_numbers_compare_exactly(response, gold, expected):
    assert verify(response, gold) is expected


@pytest.mark.parametrize('response, gold, expected', [
    (r'\dfrac{\sqrt{8}}{2}', r'\sqrt{2}', True),
    (r'\sqrt[3]{8}', '2', True),
    (r'2^{10}', r'2^{10}', True),
    (r'3 \cdot 4', r'2 \times 6', True),
    (r'\left( \frac{\pi}{2} \right)', r'\pi/2', True),
    ('e^{0}', '1', True),
    (r'\frac{3}{4}i', r'\frac34 i', True),
    (r'-\infty', r'-\infty', True),
    (r'\sqrt{3}', '1.732', False),
])
def test_latex_forms(response, gold, expected):
    assert verify(response, gold) is expected


@pytest.mark.parametrize('response, gold', [
    (r'\boxed{10\text{ cm}^2}', '10'),  # units in \text
    ('The distance is $125$ miles.', '125'),
    (r'\boxed{28\%}', '28'),  # percent sign dropped
    (r'\$16,386.17', '16386.17'),  # currency
    (r'\boxed{90^\circ}', '90'),  # degrees
])
def test_units_percent_currency_degrees_are_stripped(response, gold):
    assert verify(response, gold)


# ---------------------------------------------------------------- structure

@pytest.mark.parametrize('response, gold, expected', [
    ('(x-1)(x+1)', 'x^2-1', True),  # symbolic
    (r'\tan^2(y)+1', r'\sec^2(y)', True),
    ('x^2+1', 'x^2-1', False),
    ('x = 3', '3', True),  # equation naming the answer
    ('y=1+2x', 'y=2x+1', True),
    ('x+2y=3', '2x+4y=6', True),  # same equation, scaled
    ('x+2y=3', 'x+2y=4', False),
    ('x \\geq 5', '5 \\le x', True),  # inequalities
    ('x > 5', 'x < 5', False),
    (r'\{2, 1\}', r'\{1, 2\}', True),  # sets are unordered
    ('2, 1', '1, 2', True),  # so are bare lists of answers
    ('(2, 1)', '(1, 2)', False),  # tuples are ordered
    (r'1 \pm \sqrt{2}', r'1+\sqrt{2}, 1-\sqrt{2}', True),
    ('[0, 1)', '[0,1)', True),  # intervals
    ('(0, 1]', '[0, 1)', False),
    (r'(-\infty, 3]', r'x \le 3', True),
    (r'[-1,0) \cup (0,1]', r'[-1, 0) \cup (0, 1]', True),
    (r'\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}', r'\begin{bmatrix}1&2\\3&4\end{bmatrix}', True),
    ('(C)', 'C', True),  # multiple-choice letters
    (r'\textbf{(C)}', 'C', True),
    ('B', 'C', False),
    (r'\text{odd}', 'odd', True),  # word answers
    ('even', 'odd', False),
])
def test_structured_answers(response, gold, expected):
    assert verify(response, gold) is expected


def test_a_partial_answer_is_wrong():
    assert not verify('1728', '1331 and 1728')
    assert not verify('The answer is 1331 and 1728', '1728')
    assert verify(r'\boxed{1728, 1331}', '1331 and 1728')


@pytest.mark.parametrize('gold', ['72', '$72$', r'\boxed{72}', 'She pays 8 * 9 = 72 dollars.\n#### 72'])
def test_gold_forms(gold):
    assert verify(r'so she pays \boxed{72}', gold)
    assert not verify(r'so she pays \boxed{73}', gold)


# ---------------------------------------------------------------- golds

@pytest.mark.parametrize('gold', ['', r'\boxed{}', r'\frobnicate{3}', '#### ', r'x^{', 'x \\in'])
def test_unparseable_gold_raises(gold):
    with pytest.raises(ValueError, match='cannot be parsed'):
        check_gold(gold)
    with pytest.raises(ValueError):
        verify('3', gold)


def test_check_gold_accepts_usual_golds():
    for gold in ['#### 1,234', r'\boxed{\frac12}', '$x^2 + 1$', r'\text{Evelyn}', '[0, 1)']:
        assert check_gold(gold) is None


def test_reward_scores_a_truncated_response_0_whatever_it_says():
    assert reward(['#### 16', '#### 16', '#### 15'], ['16'] * 3, truncated=[False, True, False]) == [True, False, False]
    assert reward(['#### 16', '#### 16'], ['16'] * 2) == [True, True]  # truncation unknown


@pytest.mark.parametrize('response', ['7+5', '5 + 7', r'\boxed{3 \times 4}', 'The answer is 2^{3}+4.',
                                      r'\sqrt{144}', '(6)(2)', '13 - 1', r'\frac{24}{2} \cdot 1',
                                      '7 + 5 is an irrational number.', '12 = 7+5', r'Hmm, $7+5$ @'])
def test_arithmetic_still_to_do_is_not_an_answer_to_a_number(response):
    # a 135M policy learned to answer "What is 7+5?" with "7+5", which equals 12: the reward must not pay for it
    assert not verify(response, '12')
    assert verify(response, '7+5')  # its value is 12: the rule refuses it, not its value


def test_where_the_gold_is_an_expression_an_equal_expression_still_counts():
    assert verify('5 + 7', '7+5') and verify(r'\boxed{2\sqrt{3}}', r'\sqrt{12}') and verify('x+x', '2x')


@pytest.mark.parametrize('response, gold', [('16/18', '8/9'), (r'\frac{16}{18}', '8/9'), (r'918\frac{1}{2}', '918.5'),
                                            (r'1.5 \times 10^{3}', '1500'), ('10^{-2}', '0.01'), ('x = 12', '12'),
                                            ('7+5=12', '12'), ('(12)', '12')])
def test_a_fraction_scientific_notation_or_worked_equation_is_a_value(response, gold):
    assert verify(response, gold)


def test_reward_refuses_the_question_written_back_unless_it_is_its_own_answer():
    texts = ['16/18', r'$\frac{16}{18}$', '#### 16 / 18', '16/18 is an irrational number.', 'x = 16/18', '8/9',
             '32/36', '30/19', '7+5=12']
    questions = ['16/18'] * 7 + ['30/19', '7+5']
    golds = ['8/9'] * 7 + ['30/19', '12']
    assert reward(texts, golds, questions=questions) == [False] * 5 + [True] * 4
    assert reward(texts, golds) == [True] * 9  # without the questions: value equality only


def test_batch_names_the_item_with_a_bad_gold():
    with pytest.raises(ValueError, match='item 1'):
        reward(['1', '2'], ['1', r'\boxed{\oops}'])


# ---------------------------------------------------------------- safety

ADVERSARIAL = [
    r'\boxed{9^{9^{9^9}}}',
    r'\boxed{10!!!!}',
    '(' * 3000 + '1' + ')' * 3000,
    'x' * 2_000_000,
    "__import__('os').system('touch {sentinel}')",
    "\\boxed{__import__('os').system('touch {sentinel}')}",
    "().__class__.__bases__[0].__subclasses__()",
    "exec(\"open('{sentinel}', 'w')\")",
    "lambda: open('{sentinel}', 'w')",
]


@pytest.mark.parametrize('response', ADVERSARIAL)
def test_adversarial_responses_are_false_fast_and_execute_nothing(response, tmp_path):
    sentinel = tmp_path / 'pwned'
    t = time.monotonic()
    assert verify(response.replace('{sentinel}', str(sentinel)), '7', timeout=1.0) is False
    assert time.monotonic() - t < 1.0 + SLACK
    assert not sentinel.exists()


def test_a_huge_response_is_cut_to_its_tail_and_still_read():
    t = time.monotonic()
    assert verify('blah ' * 400_000 + r'\boxed{5}', '5')
    assert time.monotonic() - t < 1.0 + SLACK  # parsing all 2 MB would take far longer


def _parse_and_compare_all(answers):
    for a in answers:
        try:
            v = parse.parse_answer(a)
        except parse.ParseError:
            continue
        assert equal.equivalent(v, v)


def test_parser_never_calls_eval_exec_or_sympify(monkeypatch):
    import sympy.parsing.sympy_parser as sympy_parser
    answers = [r'\frac{x^2-1}{x+1}', r'\sqrt[3]{8}', '[0, 1)', r'\{1, 2\}', 'x = 3', r'\sin^2 x', '(x-1)(x+1)',
               "__import__('os')", '().__class__', 'x.__dict__', 'lambda: 1', 'eval(1)', 'exec(x)']
    _parse_and_compare_all(answers)  # first run: sympy imports its lazy modules (imports use exec)
    calls = []
    for name in ('eval', 'exec'):
        monkeypatch.setattr(builtins, name, lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(sympy_parser, 'parse_expr', lambda *args, **kwargs: calls.append(args))
    _parse_and_compare_all(answers)
    assert equal.equivalent(parse.parse_answer('(x-1)(x+1)'), parse.parse_answer('x^2-1'))
    monkeypatch.undo()
    assert calls == []


@pytest.mark.parametrize('answer', ["__import__('os')", '().__class__', 'x.__dict__', "a['b']", '1 @ 2',
                                    r'\input{/etc/passwd}', '9^{9^{9^9}}', '(' * 100 + '1' + ')' * 100])
def test_tokenizer_or_guards_reject(answer):
    with pytest.raises(parse.ParseError):
        parse.parse_answer(answer)


# ---------------------------------------------------------------- time bound

def test_a_slow_item_times_out_and_the_worker_is_replaced():
    t = time.monotonic()
    [(ok, why)] = verify_batch_detailed([SLOW[0]], [SLOW[1]], timeout=0.3)
    assert (ok, why) == (False, 'timeout')
    assert time.monotonic() - t < 0.3 + SLACK
    assert verify(r'\boxed{\frac{x^2-1}{x-1}}', 'x+1')  # a fresh worker answers the next call


def test_verify_works_and_is_bounded_off_the_main_thread():
    results = {}

    def run():
        results['easy'] = verify(r'\boxed{\dfrac{\sqrt{8}}{2}}', r'\sqrt{2}')
        t = time.monotonic()
        results['slow'] = verify(SLOW[0], SLOW[1], timeout=0.3)
        results['seconds'] = time.monotonic() - t
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert results['easy'] is True and results['slow'] is False
    assert results['seconds'] < 0.3 + SLACK + 1.5  # + a possible worker start after the last test


def test_verify_works_inside_a_daemonic_pool_worker():
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        got = pool.starmap(verify, [(r'\boxed{(x+1)^2}', 'x^2+2x+1'), ('x^2', 'x^3'), ('4', '4.0')])
    assert got == [True, False, True]


def test_batch_keeps_order_kills_a_hung_item_and_logs_why(caplog):
    responses = ['1', SLOW[0], r'\frac{6}{4}', r'\boxed{x+1}', 'no answer', '0.5']
    golds = ['1', SLOW[1], '1.5', '1+x', '3', r'\frac12']
    with caplog.at_level(logging.WARNING, logger='nanorlvr.verifier'):
        detailed = verify_batch_detailed(responses, golds, timeout=0.3, workers=2)
    assert [ok for ok, _ in detailed] == [True, False, True, True, False, True]
    assert detailed[1][1] == 'timeout' and 'timeout' in caplog.text
    assert reward(responses[2:], golds[2:]) == [True, True, False, True]


# ---------------------------------------------------------------- properties

def _decimal(q):
    """q as a terminating decimal string ('-0.125'), or None if it does not terminate."""
    for digits in range(8):
        if (q * 10**digits).denominator == 1:
            s = str(abs(q * 10**digits).numerator).rjust(digits + 1, '0')
            return ('-' if q < 0 else '') + (f'{s[:-digits]}.{s[-digits:]}' if digits else s)
    return None


def _surface_forms(q):
    a, b = q.numerator, q.denominator
    sign = '-' if a < 0 else ''
    forms = [f'{a}/{b}', f'{sign}\\frac{{{abs(a)}}}{{{b}}}', f'{sign}\\dfrac{{{abs(a)}}}{{{b}}}',
             f'\\frac{{{a}}}{{{b}}}'] + ([f'{a:,}'] if b == 1 else []) + ([_decimal(q)] if _decimal(q) else [])
    return forms + [f'\\boxed{{{f}}}' for f in forms] + [f'${f}$' for f in forms]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fractions(min_value=-10**6, max_value=10**6, max_denominator=2**4 * 5**3), st.data())
def test_a_rational_in_any_surface_form_verifies_against_any_other(q, data):
    forms = _surface_forms(q)
    response, gold = data.draw(st.sampled_from(forms)), data.draw(st.sampled_from(forms))
    assert verify(response, gold), (response, gold)
    assert not verify(response, str(q + Fraction(1, 10**9)).replace(' ', ''))


@settings(max_examples=25, deadline=None)
@given(st.integers(-9, 9), st.integers(-9, 9))
def test_a_factored_quadratic_verifies_against_its_expansion(a, b):
    factored = f'(x{a:+d})(x{b:+d})'
    expanded = f'x^2{a + b:+d}x{a * b:+d}'
    assert verify(f'\\boxed{{{factored}}}', expanded)
    assert not verify(f'\\boxed{{{factored}}}', f'x^2{a + b:+d}x{a * b + 1:+d}')


PIECES = ['0', '1', '7', '-', '+', '*', '/', '^', '(', ')', '[', ']', '{', '}', ',', '.', '=', 'x', 'e',
          ' ', '\\frac', '\\boxed{', '\\sqrt', '\\left(', '\\right)', '\\pi', '$', '!', '|', '\\', 'and',
          '\\text{', '#### ', 'answer is ', '\n', '_', '\\begin{pmatrix}', '&', '\\\\', '</think>', 'é',
          '\\boxed', '\\fbox', '\\{', '\\}', '\\cup', '\\pm', '\\in', '\\le']


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(PIECES), max_size=40).map(''.join)))
def test_verify_never_raises_on_arbitrary_responses(response):
    assert verify(response, 'x+1') in (True, False)
    assert verify(response, '7') in (True, False)
