"""Tables of the docs that are generated, never edited by hand: the configs' parent chains and the benchmark tables.

A generated table sits in a markdown page between two markers, ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``;
:func:`replace_block` rewrites what lies between them and nothing else. Torch-free: configs are read as Python
syntax trees (their ``_base_`` only), never executed.
"""
import ast
import datetime
import json
import os.path as osp
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import atomic_path

#: a config's ``_base_`` entry of mmdet's own configs (``mmdet::_base_/...``)
PACKAGE_SCOPE = '::'


def config_bases(path: Path) -> List[str]:
    """The ``_base_`` entries of a config file, as written (a single string becomes a list of one).

    Raises:
        UserError: if the file is not valid Python or its ``_base_`` is not a string or a list of strings.
    """
    try:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
    except SyntaxError as err:
        raise UserError(f'{path}: not a valid config ({err.msg}, line {err.lineno})') from err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError as err:
                raise UserError(f'{path}: _base_ must be a string or a list of strings') from err
            bases = [value] if isinstance(value, str) else value
            if not (isinstance(bases, (list, tuple)) and all(isinstance(b, str) for b in bases)):
                raise UserError(f'{path}: _base_ must be a string or a list of strings')
            return list(bases)
    return []


def _is_fragment(base: str) -> bool:
    """A base that hands parts over (``_base_/...`` or mmdet's own files) rather than a whole parent model."""
    return PACKAGE_SCOPE in base or '_base_/' in base.replace('\\', '/')


def parent_and_fragments(path: Path, root: Path) -> Tuple[Optional[Path], List[str]]:
    """A config's parent (the first ``_base_`` entry that is a whole config of ``root``) and its fragments.

    Fragments are the other entries, shown relative to ``root`` (``_base_/anchors/...``) or as written
    (``mmdet::_base_/...``).

    Raises:
        UserError: if a relative ``_base_`` entry names no file.
    """
    parent, fragments = None, []
    for base in config_bases(path):
        if PACKAGE_SCOPE in base:
            fragments.append(base)
            continue
        target = (path.parent / base).resolve()
        if not target.is_file():
            raise UserError(f'{path}: _base_ entry {base!r} names no file ({target})')
        if parent is None and not _is_fragment(base):
            parent = target
        else:
            fragments.append(_relative(target, root))
    return parent, fragments


def _relative(path: Path, root: Path) -> str:
    return osp.relpath(path, root.resolve()).replace(osp.sep, '/')


def parent_chain(path: Path, root: Path) -> List[str]:
    """The parents of a config, nearest first, up to the root config of its family (paths relative to ``root``).

    Raises:
        UserError: if the parents form a cycle.
    """
    chain, seen, current = [], {Path(path).resolve()}, Path(path)
    while True:
        parent, _ = parent_and_fragments(current, root)
        if parent is None:
            return chain
        if parent in seen:
            raise UserError(f'{path}: its _base_ parents form a cycle through {parent}')
        seen.add(parent)
        chain.append(_relative(parent, root))
        current = parent


def config_tree_table(root: Path) -> str:
    """A markdown table of every config under ``root`` (fragments in ``_base_/`` and files without ``_base_``
    excepted): its depth (parents above it), its parent chain nearest first, and the fragments it adds itself."""
    root = Path(root)
    rows = ['| config | depth | parent chain (nearest first) | fragments it adds |', '|---|--:|---|---|']
    for path in sorted(root.rglob('*.py')):
        if '_base_' in path.relative_to(root).parts or not config_bases(path):
            continue
        chain = parent_chain(path, root)
        _, fragments = parent_and_fragments(path, root)
        rows.append(f'| `{_relative(path, root)}` | {len(chain)} | '
                    + (' → '.join(f'`{c}`' for c in chain) or '-') + ' | '
                    + (', '.join(f'`{f}`' for f in fragments) or '-') + ' |')
    return '\n'.join(rows) + '\n'


# ----------------------------------------------------------------------------------------------------------------
# blocks between markers
# ----------------------------------------------------------------------------------------------------------------
def _markers(name: str) -> Tuple[str, str]:
    return f'<!-- {name}:start -->', f'<!-- {name}:end -->'


def read_block(text: str, name: str, where: str = 'the page') -> str:
    """What lies between the markers of ``name`` (without the newlines next to the markers).

    Raises:
        UserError: if the start or end marker is missing, repeated or out of order.
    """
    start, end = _markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise UserError(f'{where}: expected one {start} followed by one {end}')
    return text[text.index(start) + len(start):text.index(end)].strip('\n')


def replace_block(text: str, name: str, body: str, where: str = 'the page') -> str:
    """``text`` with what lies between the markers of ``name`` replaced by ``body`` (markers kept).

    Raises:
        UserError: as :func:`read_block`.
    """
    read_block(text, name, where)
    start, end = _markers(name)
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f'{head}{start}\n{body.strip(chr(10))}\n{end}{tail}'


def _machine_line(machine: Dict) -> str:
    parts = [str(machine.get('cpu') or 'unknown CPU')]
    if machine.get('cores'):
        parts.append(f'{machine["cores"]} cores')
    if machine.get('mem_gib'):
        parts.append(f'{machine["mem_gib"]} GiB')
    if machine.get('device'):
        parts.append(f'device {machine["device"]}' + (f' ({machine["device_name"]})'
                                                        if machine.get('device_name') else ''))
    if machine.get('torch'):
        parts.append(f'torch {machine["torch"]}')
    return ', '.join(parts)


def bench_block(md_path: Path) -> str:
    """A benchmark's markdown report (``work_dirs/bench/<name>.md``) as a docs block: a line naming the machine and
    the date, then the report with its headings moved three levels down (under the page's own sections).

    The machine and date come from the report's json twin (``<name>.json``: ``machine``, ``date`` or
    ``started``); without one, the date is the report's modification time (UTC) and the machine is 'not recorded'.

    Raises:
        UserError: if the json twin is not valid json.
    """
    md_path = Path(md_path)
    json_path = md_path.with_suffix('.json')
    machine, date = None, None
    if json_path.is_file():
        try:
            report = json.loads(json_path.read_text())
        except ValueError as err:
            raise UserError(f'{json_path}: not valid json ({err})') from err
        machine = report.get('machine') if isinstance(report, dict) else None
        date = (report.get('date') or report.get('started')) if isinstance(report, dict) else None
    if not date:
        date = datetime.datetime.fromtimestamp(md_path.stat().st_mtime, datetime.timezone.utc).strftime('%Y-%m-%d')
    body = re.sub(r'^(#+) ', lambda m: '#' * min(len(m.group(1)) + 3, 6) + ' ', md_path.read_text().strip('\n'),
                  flags=re.M)
    machine_text = _machine_line(machine) if isinstance(machine, dict) else 'not recorded'
    return (f'*Machine: {machine_text}; date: {str(date)[:10]}. Copied from `{md_path.name}` by `make bench` '
            '(`tools/benchmarks/update_docs.py`): rerun the benchmark instead of editing this table.*\n\n' + body)


def update_bench_docs(bench_dir: Path, doc_path: Path) -> List[str]:
    """Copy every ``<name>.md`` of ``bench_dir`` whose markers ``bench:<name>`` the page holds into the page.

    The page is rewritten only when something changed. A report without markers in the page is left out (named
    in the returned list as ``'<name> (no markers)'``).

    Returns:
        list[str]: the names copied, then those left out.

    Raises:
        UserError: if ``bench_dir`` or ``doc_path`` does not exist, or the markers are malformed.
    """
    bench_dir, doc_path = Path(bench_dir), Path(doc_path)
    if not bench_dir.is_dir():
        raise UserError(f'{bench_dir}: no such folder (run the benchmarks first, e.g. make bench)')
    if not doc_path.is_file():
        raise UserError(f'{doc_path}: no such page')
    text = original = doc_path.read_text()
    copied, left_out = [], []
    for md in sorted(bench_dir.glob('*.md')):
        name = f'bench:{md.stem}'
        if _markers(name)[0] not in text:
            left_out.append(f'{md.stem} (no markers)')
            continue
        text = replace_block(text, name, bench_block(md), str(doc_path))
        copied.append(md.stem)
    if text != original:
        with atomic_path(str(doc_path)) as tmp:
            Path(tmp).write_text(text)
    return copied + left_out
