"""The examples in the package's docstrings run as doctests.

``pytest tests`` (``make test``) collects only this folder, so ``--doctest-modules`` would never reach
``mmdet_custom``; each module with an example (``>>>``) is imported and its examples run here instead, with pytest's
default doctest flag (ELLIPSIS). Examples that need files or a GPU are marked ``# doctest: +SKIP`` in place.
"""
import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'mmdet_custom'
# found by text, imported only when the test runs (collection stays light)
MODULES = sorted('.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts)
                 for path in PACKAGE.rglob('*.py') if '>>>' in path.read_text(encoding='utf-8'))


def test_examples_are_found():
    assert 'mmdet_custom.models.layers.cbam' in MODULES and len(MODULES) >= 10


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    tests = [t for t in doctest.DocTestFinder().find(module, name) if t.examples]
    assert tests, f'{name} holds ">>>" but no docstring example doctest finds'
    report = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.failures == 0, ''.join(report)
