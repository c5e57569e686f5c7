"""Copy the benchmark reports (``work_dirs/bench/<name>.md``) into the docs page, with the machine and the date.

``python tools/benchmarks/update_docs.py [--bench-dir work_dirs/bench] [--doc docs/benchmarks.md]``

``make bench`` runs it after the benchmarks. Each ``<name>.md`` goes between the page's
``<!-- bench:<name>:start -->`` and ``<!-- bench:<name>:end -->`` markers, under a line naming the machine and the
date (from the report's ``<name>.json``); reports without markers in the page are listed and left out. See
:func:`mmdet_custom.analysis.doc_tables.update_bench_docs`. A missing folder or page ends with one ``error:`` line
(exit 2).
"""
import argparse

from mmdet_custom.analysis.doc_tables import update_bench_docs
from mmdet_custom.utils.cli import run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Copy the benchmark tables into the docs page')
    parser.add_argument('--bench-dir', default='work_dirs/bench', help='the reports (default: work_dirs/bench)')
    parser.add_argument('--doc', default='docs/benchmarks.md', help='the page (default: docs/benchmarks.md)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    names = update_bench_docs(args.bench_dir, args.doc)
    print(f'{args.doc}: ' + (', '.join(names) if names else f'no report in {args.bench_dir}'))
    return names


if __name__ == '__main__':
    run_cli(main)
