"""The dependency order of docs/ARCHITECTURE.md: lower layers never import upper ones; ``import mmdet_custom.register``
(what every config's ``custom_imports`` runs) registers modules without loading converters, apis or analysis, nor
any third-party package beyond what mmdet's own registries load; and the torch-free modules load neither torch nor
mmdet in a fresh process, with no environment variable set."""
import ast
import json
import os
import os.path as osp
import subprocess
import sys

PKG = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'mmdet_custom')

# layer of each sub-package (top-level modules of mmdet_custom count as their own package); a module may import
# its own package and packages of a lower layer only
LAYERS = {
    'version': 0, 'utils': 0,
    'models': 1, 'datasets': 1, 'evaluation': 1, 'engine': 1, 'checkpoint': 1, 'studies': 1, 'register': 1,
    'converters': 2, 'anchor_search': 2, 'analysis': 2,
    'apis': 3,
    'hpo': 4,
}


def _imported_packages(path, module):
    """mmdet_custom sub-packages a file imports (at any depth: function-level imports count too)."""
    tree = ast.parse(open(path).read(), path)
    parts = module.split('.')
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = parts[:len(parts) - node.level]
                names = ['.'.join(base + ([node.module] if node.module else []))]
                if not node.module:
                    names = [f'{names[0]}.{a.name}' for a in node.names]
            else:
                names = [node.module or '']
                if node.module == 'mmdet_custom':
                    names = [f'mmdet_custom.{a.name}' for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith('mmdet_custom.'):
                yield name.split('.')[1]


def test_lower_layers_do_not_import_upper_ones():
    violations = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith('.py') or root == PKG and f == '__init__.py':
                continue
            path = osp.join(root, f)
            rel = osp.relpath(path, PKG)
            module = 'mmdet_custom.' + rel[:-3].replace(os.sep, '.')
            own = rel.split(os.sep)[0].removesuffix('.py')
            assert own in LAYERS, f'mmdet_custom/{rel}: package {own!r} has no layer in docs/ARCHITECTURE.md'
            for pkg in set(_imported_packages(path, module)):
                if pkg in LAYERS and LAYERS[pkg] > LAYERS[own]:
                    violations.append(f'mmdet_custom/{rel} (layer {LAYERS[own]}) imports {pkg} '
                                      f'(layer {LAYERS[pkg]})')
    assert not violations, '\n'.join(violations)


def test_upward_imports_are_found_at_any_depth(tmp_path):
    """The check sees what a lower layer would import from apis: function-level, relative and package imports."""
    src = tmp_path / 'probe.py'
    src.write_text('import os\n'
                   'def run():\n'
                   '    from mmdet_custom.apis import train\n'
                   '    from ...apis.runner import test\n'
                   '    from .. import converters\n'
                   '    import mmdet_custom.hpo.study\n'
                   '    from mmdet_custom import utils\n')
    found = sorted(_imported_packages(str(src), 'mmdet_custom.analysis.sub.probe'))
    # `from .. import converters` in mmdet_custom/analysis/sub/ is mmdet_custom.analysis.converters
    assert found == ['analysis', 'apis', 'apis', 'hpo', 'utils']


def _run(code):
    env = {k: v for k, v in os.environ.items() if k != 'MMDET_CUSTOM_NO_REGISTER'}  # read by nothing any more
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env,
                         cwd=osp.dirname(PKG))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_register_registers_without_converters_apis_or_extra_packages():
    loaded = _run(
        'import json, sys\n'
        'import mmdet.datasets, mmdet.engine, mmdet.evaluation, mmdet.models, mmdet.visualization, timm\n'
        'before = {m.split(".")[0] for m in sys.modules}\n'
        'from mmdet.registry import MODELS, METRICS\n'
        'unregistered = MODELS.get("TimmCBAMBackbone") is None\n'
        'import mmdet_custom.register\n'
        'print(json.dumps(dict(added=sorted({m.split(".")[0] for m in sys.modules} - before),\n'
        '                      ours=sorted(m for m in sys.modules if m.startswith("mmdet_custom.")),\n'
        '                      registered=[unregistered, MODELS.get("TimmCBAMBackbone") is not None,\n'
        '                                  METRICS.get("CocoResultsExport") is not None])))\n')
    assert loaded['registered'] == [True, True, True]
    assert loaded['added'] == ['mmdet_custom'], 'import mmdet_custom.register loads packages mmdet itself does not'
    upper = [m for m in loaded['ours'] if m.split('.')[1] in ('converters', 'anchor_search', 'analysis', 'apis', 'hpo')]
    assert not upper, f'import mmdet_custom.register loads upper layers: {upper}'
    assert 'mmdet_custom.models.backbones.timm_cbam' in loaded['ours']


HEAVY = ('torch', 'mmdet', 'mmengine', 'mmcv', 'timm', 'shapely', 'scipy', 'tifffile', 'tqdm', 'matplotlib')
# what the light command lines import (converters, eval_results, dataset_stats, bench_eval)
LIGHT_MODULES = ('mmdet_custom', 'mmdet_custom.utils', 'mmdet_custom.utils.cli', 'mmdet_custom.utils.isaid_meta',
                 'mmdet_custom.evaluation.functional', 'mmdet_custom.converters',
                 'mmdet_custom.converters.coco_subset', 'mmdet_custom.utils.paths',
                 'mmdet_custom.analysis.resources', 'mmdet_custom.analysis.bench_report',
                 'mmdet_custom.analysis.eval_bench')


def test_package_import_registers_nothing_and_loads_no_heavy_stack():
    loaded = _run(
        'import importlib, json, sys\n'
        f'for name in {LIGHT_MODULES!r}:\n'
        '    importlib.import_module(name)\n'
        f'print(json.dumps(dict(heavy=sorted(m for m in {HEAVY!r} if m in sys.modules),\n'
        '                      registered="mmdet_custom.register" in sys.modules)))\n')
    assert loaded == dict(heavy=[], registered=False)


def test_study_engine_imports_no_optuna():
    """The search packages import mmdet_custom.studies at their top; Optuna, SQLAlchemy and matplotlib load only when
    a study is opened or plotted."""
    loaded = _run(
        'import json, sys\n'
        'import mmdet_custom.studies.once, mmdet_custom.studies.plots, mmdet_custom.studies.storage\n'
        'print(json.dumps(sorted(m for m in ("optuna", "sqlalchemy", "matplotlib", "torch") if m in sys.modules)))\n')
    assert loaded == []
