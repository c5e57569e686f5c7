"""The shell commands of README.md's and docs/*.md's code blocks (every block of every page), as written: a renamed
flag, tool, config or make target breaks the build instead of the reader.

Every command is extracted from the ```bash blocks (``\\`` continuations joined, ``host$`` prompts and comments
dropped). Placeholders become values (CONFIG: the root iSAID config, CKPT: a checkpoint path, ``<N>``: 1; an
optional ``[--flag ...]`` group is kept, ``a|b`` takes ``a``). Then:

- every ``tools/*.py`` command goes through its tool's own ``parse_args`` (flags and choices as written; a
  ``--device cuda`` is parsed as ``cpu`` on a machine without a GPU), and the repository files it names (configs,
  search spaces, scripts) exist, outputs excepted; ``--cfg-options`` keys exist in the config;
- every ``make`` target (in blocks and inline) exists in the Makefile; shell scripts exist and parse (``bash -n``);
- the cheap ones run as written on the shared samples, only the data paths swapped for them: the iSAID, cells and
  COCO-subset converters and ``eval_results.py`` (a few seconds each), their outputs read back;
- the python block (the anchor-search fragment recipe) composes with a fragment the search writes.
"""
import json
import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO_ROOT

DOCS = [REPO_ROOT / 'README.md', *sorted((REPO_ROOT / 'docs').glob('*.md'))]
PLACEHOLDERS = {'CONFIG': 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py', 'CKPT': 'work_dirs/run/epoch_1.pth',
                'CHECKPOINT': 'work_dirs/run/epoch_1.pth'}
#: flags whose value is written by the command (need not exist)
OUTPUT_FLAGS = {'--out', '--out-dir', '-o', '--work-dir', '--out-json', '--out-md'}


def _blocks(path: Path):
    """(language, first line number, text) of each fenced code block."""
    text = path.read_text()
    for m in re.finditer(r'^[ \t]*```(\w*)\n(.*?)^[ \t]*```', text, re.S | re.M):
        yield m.group(1), text[:m.start()].count('\n') + 1, m.group(2)


def _commands(text: str):
    """Shell commands of a block: continuations joined, prompts (``host$``) and comments dropped."""
    joined = re.sub(r'\\\n\s*', ' ', text)
    for line in joined.splitlines():
        line = re.sub(r'^\s*[\w.-]+\$\s*', '', line).strip()      # node0$ / hostA$ prompts
        line = re.sub(r'\s+#.*$', '', line)                         # trailing comment
        if line and not line.startswith('#') and not line.startswith('('):
            yield line


def _expand(command: str) -> list:
    """Tokens with placeholders filled: ``[...]`` groups kept (first alternative of ``x | y``), ``a|b`` -> ``a``."""
    command = re.sub(r'\[([^\[\]]*)\]', lambda m: m.group(1).split(' | ')[0], command)
    command = command.replace('<N>', '1')
    tokens = []
    for token in shlex.split(command):
        token = PLACEHOLDERS.get(token, token)
        if '|' in token and not token.startswith(('sqlite', 'postgresql', 'mysql')):
            token = token.split('|')[0]
        tokens.append(token)
    return tokens


def _all_commands():
    found = []
    for path in DOCS:
        for lang, line, text in _blocks(path):
            if lang in ('bash', 'sh', 'shell', ''):
                found += [(f'{path.name}:{line}', cmd) for cmd in _commands(text)]
    return found


COMMANDS = _all_commands()


def _tool_argv(tokens):
    """``(tool path, argv)`` of a ``python tools/x.py ...`` command (leading ``VAR=value`` assignments dropped)."""
    while tokens and re.match(r'^[A-Z_]+=', tokens[0]):
        tokens = tokens[1:]
    if tokens and tokens[0].endswith('python'):
        tokens = tokens[1:]
    if tokens and tokens[0].startswith('tools/') and tokens[0].endswith('.py'):
        return tokens[0], tokens[1:]
    return None, tokens


TOOL_COMMANDS = [(where, cmd) for where, cmd in COMMANDS if _tool_argv(_expand(cmd))[0]]


def test_every_shell_block_is_checked():
    """Every shell block of every page gives commands, and each is a tool, a make target or a script, all of which
    the tests below check: a block moved to a docs page, or a new kind of command, cannot go unchecked."""
    pages = {path.name for path in DOCS}
    assert {'README.md', 'datasets.md', 'searches.md', 'scaling-out.md', 'scene-inference.md'} <= pages
    for path in DOCS:
        for lang, line, text in _blocks(path):
            if lang not in ('bash', 'sh', 'shell', ''):
                continue
            commands = list(_commands(text))
            assert commands, f'{path.name}:{line}: a shell block without a command'
            for cmd in commands:
                tokens = _expand(cmd)
                assert (_tool_argv(tokens)[0] or cmd.startswith('make ')
                        or any(t.startswith(('tools/', 'scripts/')) and t.endswith('.sh') for t in tokens)), (
                    f'{path.name}:{line}: `{cmd}` is neither a tools/*.py command, a make target nor a script')


def test_the_docs_have_commands():
    tools = {_tool_argv(_expand(cmd))[0] for _, cmd in TOOL_COMMANDS}
    assert {'tools/train.py', 'tools/test.py', 'tools/dataset_converters/isaid.py', 'tools/anchor_search.py',
            'tools/hpo.py'} <= tools, tools


@pytest.mark.parametrize('where,command', TOOL_COMMANDS, ids=[w for w, _ in TOOL_COMMANDS])
def test_tool_command_parses_and_names_existing_files(where, command):
    tool, argv = _tool_argv(_expand(command))
    assert (REPO_ROOT / tool).is_file(), f'{where}: {tool} does not exist'
    parse_args = runpy.run_path(str(REPO_ROOT / tool))['parse_args']
    if '--device' in argv[:-1]:
        from mmdet_custom.utils.device import cuda_problem
        if cuda_problem():  # the flag parses its value against this machine: no GPU here, the flag name checked
            argv[argv.index('--device') + 1] = 'cpu'
    try:
        args = parse_args(argv)
    except SystemExit as e:
        pytest.fail(f'{where}: `{command}` is refused by {tool}\'s parse_args (exit {e.code})')
    if getattr(args, 'cfg_options', None):  # the keys exist in the config (read_config refuses unknown ones)
        from mmdet_custom.utils.config import read_config
        read_config(str(REPO_ROOT / args.config), args.cfg_options)
    outputs = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a in OUTPUT_FLAGS}
    for token in argv:
        if token.startswith(('configs/', 'tools/', 'scripts/')) and token not in outputs:
            assert (REPO_ROOT / token).exists(), f'{where}: {token} does not exist'


def _make_targets():
    text = (REPO_ROOT / 'Makefile').read_text()
    return set(re.findall(r'^([\w-]+):', text, re.M))


def test_make_targets_and_scripts_exist():
    targets = _make_targets()
    named = set()
    for path in DOCS:
        text = path.read_text()
        named |= set(re.findall(r'`make ([\w-]+)', text))
        for _, _, block in _blocks(path):
            named |= {c.split()[1] for c in _commands(block) if c.startswith('make ') and len(c.split()) > 1}
    assert named and named <= targets, named - targets
    scripts = {tok for _, cmd in COMMANDS for tok in _expand(cmd) if tok.startswith(('tools/', 'scripts/'))
               and tok.endswith('.sh')}
    assert 'tools/dist_train.sh' in scripts
    for script in scripts:
        assert (REPO_ROOT / script).is_file(), script
        assert subprocess.run(['bash', '-n', str(REPO_ROOT / script)]).returncode == 0, script


# ----------------------------------------------------------------------------------------------------------------
# the cheap ones, run as written on the shared samples
# ----------------------------------------------------------------------------------------------------------------
def _written(tool: str):
    """The expanded argv of every docs command of ``tool`` (a command written on several pages runs once)."""
    runs = []
    for _, cmd in TOOL_COMMANDS:
        name, argv = _tool_argv(_expand(cmd))
        if name == tool and argv not in runs:
            runs.append(argv)
    assert runs, f'the docs no longer show {tool}'
    return runs


def _swap(argv, swaps):
    return [swaps.get(a, a) for a in argv]


def _run(tool, argv):
    return runpy.run_path(str(REPO_ROOT / tool))['main'](argv)


def test_isaid_converter_as_written(isaid_raw_dir, tmp_path, capsys):
    for argv in _written('tools/dataset_converters/isaid.py'):
        out = tmp_path / 'isaid'
        _run('tools/dataset_converters/isaid.py', _swap(argv, {'iSAID': str(isaid_raw_dir), 'data/isaid': str(out)})
             + ['--no-progress'])
        train = json.loads((out / 'annotations' / 'instances_train.json').read_text())
        assert len(train['images']) == 4 and len(train['annotations']) == 427
        assert sorted(p.name for p in (out / 'train' / 'images').iterdir())[0] == 'P0005_0_800_0_800.png'
        # the test split (no annotations by design) reads as such, not as 6 "empty" patches
        test_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('test '))
        assert test_line.endswith('6 patches, 6 written; the test split has no annotations (iSAID ships none)')


def test_cells_converter_as_written(cells_dir, tmp_path):
    for argv in _written('tools/dataset_converters/cells.py'):
        out = tmp_path / 'cells'
        _run('tools/dataset_converters/cells.py', _swap(argv, {'stage1_train': str(cells_dir), 'data/cells': str(out)}))
        train = json.loads((out / 'annotations' / 'instances_train.json').read_text())
        val = json.loads((out / 'annotations' / 'instances_val.json').read_text())
        assert len(train['images']) + len(val['images']) == 6
        # --drop-border (written in the README) drops the nuclei touching the border: fewer than all 171
        assert 0 < len(train['annotations']) + len(val['annotations']) < 171


def test_coco_subset_as_written(tiny_coco_dir, tmp_path):
    src = tiny_coco_dir / 'instances_train2017_small.json'
    for argv in _written('tools/dataset_converters/coco_subset.py'):
        out = tmp_path / 'subset.json'
        _run('tools/dataset_converters/coco_subset.py',
             _swap(argv, {'instances_train2017.json': str(src), 'data/coco_subset/train.json': str(out)}))
        subset = json.loads(out.read_text())
        assert [c['name'] for c in subset['categories']] == ['person', 'cat', 'sports ball', 'book']
        assert [c['id'] for c in subset['categories']] == [1, 2, 3, 4]
        kept = {a['image_id'] for a in subset['annotations']}
        assert subset['annotations'] and {im['id'] for im in subset['images']} == kept  # --drop-empty


def _perfect_results(gt: dict) -> list:
    """Each ground-truth object as a detection of score 1 (segmentation as RLE, as tools/test.py writes it)."""
    from pycocotools import mask as mask_utils
    sizes = {im['id']: (im['height'], im['width']) for im in gt['images']}
    results = []
    for a in gt['annotations']:
        h, w = sizes[a['image_id']]
        rle = mask_utils.merge(mask_utils.frPyObjects(a['segmentation'], h, w))
        rle['counts'] = rle['counts'].decode()
        results.append(dict(image_id=a['image_id'], category_id=a['category_id'], bbox=a['bbox'], score=1.0,
                            segmentation=rle))
    return results


def test_eval_results_as_written(isaid_reference_dir, tmp_path):
    gt_path = isaid_reference_dir / 'instancesonly_filtered_val.json'
    gt = json.loads(gt_path.read_text())
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(_perfect_results(gt)))
    for argv in _written('tools/analysis_tools/eval_results.py'):
        out = tmp_path / 'metrics.json'
        _run('tools/analysis_tools/eval_results.py', _swap(argv, {
            'instancesonly_filtered_val.json': str(gt_path), 'results.json': str(results), 'metrics.json': str(out)}))
        metrics = json.loads(out.read_text())
        # the devkit's own polygons as predictions: every object found, at IoU 1 for boxes and masks
        assert metrics['bbox_mAP'] == pytest.approx(1.0) and metrics['segm_mAP'] == pytest.approx(1.0)
        assert np.isfinite(metrics['segm_AR@1000'])


def test_fragment_recipe_block_composes(tmp_path):
    """The README's python block, in a copy of the configs tree beside a fragment the anchor search writes."""
    from mmdet_custom.anchor_search import AnchorSetting, fragment_name, write_anchor_fragment
    from mmdet_custom.utils.config import read_config
    block = next(text for path in DOCS for lang, _, text in _blocks(path)
                 if lang == 'python' and '_base_._anchors_' in text)
    study = re.search(r'_base_\._anchors_(\w+)', block).group(1)
    fragment = re.search(r"'\.\./_base_/anchors/(\w+\.py)'", block).group(1)
    configs = tmp_path / 'configs'
    shutil.copytree(REPO_ROOT / 'configs', configs)
    setting = AnchorSetting((4, 8, 16, 32, 64), ((6, 12), (12, 24), (28, 56), (64, 128), (128, 256)), (0.5, 1., 2.))
    write_anchor_fragment(str(configs / '_base_' / 'anchors' / fragment), setting, name=fragment_name(study),
                          pos_iou_thr=0.5)
    variant = configs / 'mask_rcnn' / 'readme_variant.py'
    variant.write_text(block)
    cfg = read_config(str(variant))
    assert cfg.model.rpn_head.anchor_generator.sizes == [list(s) for s in setting.sizes]
    assert cfg.model.train_cfg.rpn.assigner.pos_iou_thr == 0.5
