"""The configs' parent chains (their ``_base_``) as a markdown table, printed or kept in a docs page.

``python tools/analysis_tools/config_tree.py [--configs configs] [--write docs/configs.md | --check docs/configs.md]``

Every config under ``--configs`` (fragments in ``_base_/`` excepted) with its depth, its parents nearest first and
the fragments it adds (see :func:`mmdet_custom.analysis.doc_tables.config_tree_table`). ``--write PAGE`` puts the
table between the page's ``<!-- config-tree:start -->`` and ``<!-- config-tree:end -->`` markers; ``--check PAGE``
writes nothing and ends with one ``error:`` line (exit 2) when the page's table differs from the configs.
"""
import argparse
from pathlib import Path

from mmdet_custom.analysis.doc_tables import config_tree_table, read_block, replace_block
from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path

MARKER = 'config-tree'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="The configs' parent chains as a markdown table")
    parser.add_argument('--configs', default='configs', help='the configs folder (default: configs)')
    page = parser.add_mutually_exclusive_group()
    page.add_argument('--write', metavar='PAGE', help='write the table into PAGE between its config-tree markers')
    page.add_argument('--check', metavar='PAGE', help="exit 2 when PAGE's table differs from the configs")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not Path(args.configs).is_dir():
        raise UserError(f'--configs {args.configs}: no such folder')
    table = config_tree_table(Path(args.configs))
    page = args.write or args.check
    if page is None:
        print(table, end='')
        return table
    if not Path(page).is_file():
        raise UserError(f'{page}: no such page')
    text = Path(page).read_text()
    if args.check:
        if read_block(text, MARKER, page).strip() != table.strip():
            raise UserError(f'{page}: the config table differs from the configs under {args.configs}; run '
                            f'tools/analysis_tools/config_tree.py --write {page}')
        print(f'{page}: the config table matches {args.configs}')
        return table
    new = replace_block(text, MARKER, table, page)
    if new != text:
        with atomic_path(page) as tmp:
            Path(tmp).write_text(new)
    print(f'written: {page}')
    return table


if __name__ == '__main__':
    run_cli(main)
