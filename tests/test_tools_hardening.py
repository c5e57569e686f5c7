"""How user mistakes reach the user in the converters, dataset_stats and the anchor search: one ``error:`` line
naming the file, exit code 2, no traceback (it would hide which file is wrong; ``--debug`` shows it)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from mmdet_custom.analysis.dataset_stats import dataset_stats
from mmdet_custom.utils.errors import UserError

TOOLS = ('tools/dataset_converters/cells.py', 'tools/dataset_converters/coco_subset.py',
         'tools/analysis_tools/dataset_stats.py', 'tools/anchor_search.py')


def _tool(rel, *args, debug=False):
    env = dict(os.environ)
    cmd = [sys.executable, osp.join(REPO_ROOT, rel), *map(str, args)] + (['--debug'] if debug else [])
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('rel', TOOLS)
def test_every_tool_runs_through_run_cli(rel):
    source = open(osp.join(REPO_ROOT, rel)).read()
    assert "if __name__ == '__main__':" in source and source.rstrip().endswith('run_cli(main)')
    assert 'def main(argv=None):' in source


def test_malformed_and_missing_json_end_in_one_line_exit_2(tmp_path):
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [{"id": 1}, ]}')
    res = _tool('tools/dataset_converters/coco_subset.py', broken, tmp_path / 'out.json')
    assert res.returncode == 2 and res.stdout == ''
    assert res.stderr == f'error: COCO instances json {broken} is not valid json: Expecting value at line 1, ' \
                         f'column 24\n'
    assert not (tmp_path / 'out.json').exists()

    res = _tool('tools/analysis_tools/dataset_stats.py', broken, '--output-dir', tmp_path / 'stats')
    assert res.returncode == 2 and res.stderr.startswith(f'error: COCO annotation file {broken} is not valid json')
    assert res.stderr.count('\n') == 1 and not (tmp_path / 'stats').exists()

    res = _tool('tools/dataset_converters/cells.py', tmp_path / 'nowhere', '-o', tmp_path / 'cells')
    assert res.returncode == 2 and 'Traceback' not in res.stderr
    assert res.stderr.startswith(f'error: cells train folder missing: {tmp_path / "nowhere" / "train"}')

    res = _tool('tools/dataset_converters/coco_subset.py', broken, tmp_path / 'out.json', debug=True)
    assert res.returncode == 1 and 'Traceback' in res.stderr and 'UserError' in res.stderr


def test_dataset_stats_names_the_file_and_warns_on_empty_data(tmp_path):
    broken = tmp_path / 'stats.json'
    broken.write_text('{"images": []')
    with pytest.raises(UserError, match=r'stats\.json is not valid json'):
        dataset_stats(str(broken), str(tmp_path / 'out'))
    bad_box = dict(images=[dict(id=1)], annotations=[dict(id=5, image_id=1, category_id=1, bbox=[1, 2])],
                   categories=[dict(id=1, name='cell')])
    broken.write_text(json.dumps(bad_box))
    with pytest.raises(ValueError, match=r'stats\.json: annotation 5: bbox \[1, 2\] is not \[x, y, w, h\]'):
        dataset_stats(str(broken), str(tmp_path / 'out'))
    broken.write_text(json.dumps(dict(bad_box, annotations=[])))
    with pytest.warns(UserWarning, match=r'1 images and 0 \(non-crowd\) instances: the statistics are empty'):
        summary = dataset_stats(str(broken), str(tmp_path / 'out'))
    assert summary['instances'] == 0 and osp.isfile(tmp_path / 'out' / 'summary.json')
