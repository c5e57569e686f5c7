"""The docs hold together: every relative link of README.md and docs/*.md names an existing file, and every
``#anchor`` a heading of its page (GitHub's heading ids); every docs page is reachable from the README; and the
generated tables (the configs' parent chains, the benchmark tables) are what their generators write.

The checker is tested on a small broken sample first, so a checker that finds nothing cannot pass silently.
"""
import json
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

from mmdet_custom.analysis.doc_tables import bench_block, config_tree_table, read_block, update_bench_docs
from mmdet_custom.utils.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r'^[ \t]*```.*?^[ \t]*```[ \t]*$', re.S | re.M)
INLINE_CODE = re.compile(r'`(?:[^`\n]|\n(?![ \t]*\n))*`')  # a code span may wrap, not cross a blank line
LINK = re.compile(r'(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')
HEADING = re.compile(r'^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$', re.M)


def _prose(text: str) -> str:
    """The page without its fenced code blocks (their ``# comments`` are no headings, their brackets no links)."""
    return FENCE.sub('', text)


def heading_ids(text: str) -> Set[str]:
    """GitHub's ids of a page's headings: lower case, markup and punctuation dropped (hyphens and underscores
    kept), spaces as hyphens; a repeated id gets ``-1``, ``-2``, ..."""
    ids, seen = set(), {}
    for _, title in HEADING.findall(_prose(text)):
        title = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', title)  # a link in a heading: its text
        slug = re.sub(r'[^\w\- ]', '', title.lower()).replace(' ', '-')
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f'{slug}-{count}')
    return ids


def links(text: str) -> List[str]:
    """Targets of the page's inline links outside code (code blocks and inline code spans)."""
    return LINK.findall(INLINE_CODE.sub('', _prose(text)))


def check_docs(readme: Path, pages: List[Path]) -> List[str]:
    """Problems of a set of pages: broken relative links or anchors, and pages the README does not reach.

    Returns:
        list[str]: one line per problem (``page: link -> why``); empty when all is well.
    """
    problems: List[str] = []
    graph: Dict[Path, Set[Path]] = {}
    for page in [readme, *pages]:
        page = page.resolve()
        text = page.read_text()
        graph[page] = set()
        for target in links(text):
            if re.match(r'^[a-z][a-z0-9+.-]*:', target, re.I):  # http:, https:, mailto: ... (not checked offline)
                continue
            path_part, _, anchor = target.partition('#')
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                problems.append(f'{page.name}: {target} -> no such file {dest}')
                continue
            if dest.suffix == '.md':
                graph[page].add(dest)
                if anchor and anchor not in heading_ids(dest.read_text()):
                    problems.append(f'{page.name}: {target} -> no heading #{anchor} in {dest.name}')
            elif anchor:
                problems.append(f'{page.name}: {target} -> an anchor into a file that is not markdown')
    reached, todo = {readme.resolve()}, [readme.resolve()]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    problems += [f'{p.name}: not reachable from {readme.name}' for p in pages if p.resolve() not in reached]
    return problems


def _pages():
    return sorted((REPO_ROOT / 'docs').glob('*.md'))


def test_the_checker_finds_broken_links_anchors_and_orphans(tmp_path):
    (tmp_path / 'docs').mkdir()
    readme = tmp_path / 'README.md'
    readme.write_text('# Top\n\n[ok](docs/a.md#the-part-2) [gone](docs/missing.md) [bad anchor](docs/a.md#nowhere)\n'
                      '[self](#top) [web](https://example.org/x.md) `[code](docs/nothere.md)`\n'
                      '```bash\n# not a heading\n[in a block](docs/nothere.md)\n```\n')
    (tmp_path / 'docs' / 'a.md').write_text('# A\n\n## The part (`2`)\n\n[back](../README.md#not-a-heading)\n')
    (tmp_path / 'docs' / 'orphan.md').write_text('# Orphan\n')
    problems = check_docs(readme, sorted((tmp_path / 'docs').glob('*.md')))
    assert len(problems) == 4, problems
    assert any('docs/missing.md -> no such file' in p for p in problems)
    assert any('docs/a.md#nowhere -> no heading #nowhere in a.md' in p for p in problems)
    assert any('a.md: ../README.md#not-a-heading -> no heading' in p for p in problems)  # a code comment is none
    assert 'orphan.md: not reachable from README.md' in problems
    # repaired, the same pages pass
    readme.write_text('# Top\n\n[ok](docs/a.md#the-part-2) [orphan](docs/orphan.md) [self](#top)\n')
    (tmp_path / 'docs' / 'a.md').write_text('# A\n\n## The part (`2`)\n\n[back](../README.md#top)\n')
    assert check_docs(readme, sorted((tmp_path / 'docs').glob('*.md'))) == []


def test_heading_ids_follow_github():
    ids = heading_ids('# Checkpoints under torch >= 2.6\n## Dense patches (`make bench-dense`)\n## Dense patches\n'
                      '## Dense patches\n### Modules (`mmdet_custom/models/`)\n')
    assert ids == {'checkpoints-under-torch--26', 'dense-patches-make-bench-dense', 'dense-patches', 'dense-patches-1',
                   'modules-mmdet_custommodels'}


def test_docs_links_resolve_and_every_page_is_reachable():
    pages = _pages()
    assert {'install.md', 'datasets.md', 'configs.md', 'scene-inference.md', 'searches.md', 'benchmarks.md',
            'scaling-out.md', 'guarantees.md', 'ARCHITECTURE.md'} <= {p.name for p in pages}
    assert check_docs(REPO_ROOT / 'README.md', pages) == []


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r'```bash\n(.*?)```', (REPO_ROOT / 'README.md').read_text(), re.S).group(1)
    assert [line.split('#')[0].strip() for line in first_block.strip().splitlines()] == ['make demo', 'make test']


# ----------------------------------------------------------------------------------------------------------------
# generated tables
# ----------------------------------------------------------------------------------------------------------------
def test_config_table_matches_the_configs():
    """docs/configs.md's parent-chain table is what tools/analysis_tools/config_tree.py writes from the configs."""
    page = REPO_ROOT / 'docs' / 'configs.md'
    table = config_tree_table(REPO_ROOT / 'configs')
    assert read_block(page.read_text(), 'config-tree', str(page)).strip() == table.strip(), (
        'docs/configs.md: the config table is stale; run tools/analysis_tools/config_tree.py --write docs/configs.md')
    row = next(r for r in table.splitlines() if r.startswith('| `light/mask-rcnn_effb0-cbam-frozen1'))
    assert row.split(' | ')[1] == '4' and row.count('→') == 3  # light -> full model -> anchors step -> root


def test_bench_tables_copied_with_machine_and_date(tmp_path):
    bench = tmp_path / 'bench'
    bench.mkdir()
    (bench / 'dense.md').write_text('# Dense\n\n| model | GiB |\n|---|--:|\n| R50 | 3.4 |\n')
    (bench / 'dense.json').write_text(json.dumps(dict(machine=dict(cpu='Test CPU', cores=2, torch='2.0', device='cpu'),
                                                      date='2026-12-06T20:19:00')))
    (bench / 'eval.md').write_text('| x |\n|---|\n| 1 |\n')  # no json twin: the file's date, machine not recorded
    (bench / 'other.md').write_text('no markers for this one\n')
    doc = tmp_path / 'benchmarks.md'
    doc.write_text('# Benchmarks\n\nkept\n<!-- bench:dense:start -->\nold table\n<!-- bench:dense:end -->\nkept too\n'
                   '<!-- bench:eval:start -->\n<!-- bench:eval:end -->\n')
    assert update_bench_docs(bench, doc) == ['dense', 'eval', 'other (no markers)']
    text = doc.read_text()
    assert 'old table' not in text and text.startswith('# Benchmarks\n\nkept\n') and '\nkept too\n' in text
    dense = read_block(text, 'bench:dense')
    assert dense.startswith('*Machine: Test CPU, 2 cores, device cpu, torch 2.0; date: 2026-12-06.')
    assert '#### Dense' in dense and '| R50 | 3.4 |' in dense  # headings moved under the page's sections
    assert 'Machine: not recorded; date: 20' in read_block(text, 'bench:eval')
    assert update_bench_docs(bench, doc) and doc.read_text() == text  # a rerun changes nothing
    assert bench_block(bench / 'dense.md') == dense

    doc.write_text('<!-- bench:dense:start -->\n')  # a missing end marker: refused, the page left as it was
    with pytest.raises(UserError, match='expected one <!-- bench:dense:start --> followed by one'):
        update_bench_docs(bench, doc)
    assert doc.read_text() == '<!-- bench:dense:start -->\n'
    with pytest.raises(UserError, match='no such folder'):
        update_bench_docs(tmp_path / 'absent', doc)


def test_docs_bench_tables_carry_machine_and_date():
    text = (REPO_ROOT / 'docs' / 'benchmarks.md').read_text()
    for name in ('dense', 'models'):
        assert re.search(r'(Machine: .+; date: \d{4}-\d{2}-\d{2})|(Measured \d{4}-\d{2}-\d{2} on)',
                         read_block(text, f'bench:{name}')), name
