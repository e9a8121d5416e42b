"""Agreement and latency of nanorlvr.verifier on a file of labelled (gold, pred, expected) cases.

    python bench/verifier.py                      # the 371 cases in bench/data/verifier_peer_cases.jsonl
    python bench/verifier.py --cases=FILE

Each line of the cases file is {"gold", "pred", "expected", "source", "tags"}; `source` names the
repository and test file the case was taken from (bench/data/README.md). pred is treated as
the model response. Prints agreement overall, per source repo and for the cases tagged policy:*,
the median and max wall time of one verify() call, and every disagreement. A gold that verify
refuses (ValueError) counts as a disagreement, shown as "gold-error".
"""
import argparse
import json
import os
import statistics
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanorlvr.verifier import verify  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--cases', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                                                 'verifier_peer_cases.jsonl'), help='jsonl file of labelled cases')
    ap.add_argument('--timeout', type=float, default=1.0, help='verify timeout per case, seconds')
    args = ap.parse_args()
    cases = [json.loads(line) for line in open(args.cases, encoding='utf-8') if line.strip()]

    t0 = time.perf_counter()
    verify('x+1', '1+x')  # start the worker process once (a symbolic pair), outside the timings
    print(f'worker start: {time.perf_counter() - t0:.2f} s')

    rows, times = [], []
    for c in cases:
        t = time.perf_counter()
        try:
            ours = verify(c['pred'], c['gold'], timeout=args.timeout)
        except ValueError:
            ours = 'gold-error'
        times.append(time.perf_counter() - t)
        rows.append((c, ours, ours == c['expected']))

    def line(name, subset):
        n_ok = sum(ok for _, _, ok in subset)
        print(f'{name:<28} {n_ok:>4}/{len(subset):<4} {100 * n_ok / max(1, len(subset)):5.1f}%')

    line('all', rows)
    by_source = defaultdict(list)
    for r in rows:
        by_source[r[0]['source'].split(':')[0]].append(r)
    for source in sorted(by_source):
        line('  ' + source, by_source[source])
    line('policy:* tagged', [r for r in rows if any(t.startswith('policy:') for t in r[0]['tags'])])
    print(f'latency per case: median {1000 * statistics.median(times):.2f} ms, '
          f'max {1000 * max(times):.1f} ms')

    print('\ndisagreements (gold | pred | expected | ours | tags):')
    for c, ours, ok in rows:
        if not ok:
            short = [s if len(s) <= 90 else s[:40] + ' ... ' + s[-45:] for s in (c['gold'], c['pred'])]
            print(f'  {short[0]!r} | {short[1]!r} | {c["expected"]} | {ours} | {",".join(c["tags"])}')


if __name__ == '__main__':
    main()
