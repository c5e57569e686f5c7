"""``--data-root DIR``: one flag points every dataset and evaluator of a config at one data folder (train, test, the
anchor search and the recipe search take it), and the evaluator's json is checked against its dataset's at start.

Before, a config moved to other data needed five ``--cfg-options`` (three ``data_root``, two evaluator
``ann_file``); forgetting an evaluator failed only after inference (an RLE size error about a temporary file).
"""
import json
import runpy
import shutil
from pathlib import Path

import pytest
from helpers import REPO_ROOT, load_config

from mmdet_custom.apis.ann_files import AnnFileMismatchError
from mmdet_custom.datasets.utils import DataRootError, set_data_root

ROOT_CONFIG = 'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_isaid.py'
SMOKE_CONFIG = 'configs/mask_rcnn/mask-rcnn_r18_fpn_300i_isaid-smoke.py'


def tool(name):
    return runpy.run_path(str(REPO_ROOT / 'tools' / name))


def test_every_dataset_and_evaluator_follows(tmp_path):
    cfg = load_config(SMOKE_CONFIG)
    assert cfg.val_evaluator.ann_file == 'work_dirs/demo/data/annotations/instances_val.json'  # not data_root's
    done = set_data_root(cfg, str(tmp_path))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == str(tmp_path)
        assert f'{loader}.dataset.data_root={tmp_path}' in done
    assert cfg.val_evaluator.ann_file == cfg.test_evaluator.ann_file == str(tmp_path / 'annotations/instances_val.json')
    assert cfg.data_root == str(tmp_path) and len(done) == 5
    # the dataset paths and prefixes relative to the root are kept
    assert cfg.train_dataloader.dataset.ann_file == 'annotations/instances_train.json'
    assert cfg.train_dataloader.dataset.data_prefix.img == 'train/images/'


def test_evaluator_follows_its_dataset_json_and_wrappers(tmp_path):
    from mmdet_custom.utils.config import read_config
    options = {'test_dataloader.dataset.ann_file': 'annotations/instances_test.json'}
    cfg = read_config(str(REPO_ROOT / ROOT_CONFIG), options)
    set_data_root(cfg, str(tmp_path), options)
    assert cfg.test_evaluator.ann_file == str(tmp_path / 'annotations/instances_test.json')
    assert cfg.val_evaluator.ann_file == str(tmp_path / 'annotations/instances_val.json')
    # datasets inside wrappers (a repeated concatenation of two jsons), a list of evaluators
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2, dataset=dict(
        type='ConcatDataset', datasets=[dict(cfg.train_dataloader.dataset), dict(cfg.train_dataloader.dataset)]))
    cfg.val_evaluator = [dict(cfg.val_evaluator), dict(type='DiceIoUMetric')]
    (tmp_path / 'annotations').mkdir()
    done = set_data_root(cfg, str(tmp_path / 'annotations'))
    leaves = cfg.train_dataloader.dataset.dataset.datasets
    assert [leaf.data_root for leaf in leaves] == [str(tmp_path / 'annotations')] * 2
    assert cfg.val_evaluator[0].ann_file == str(tmp_path / 'annotations/annotations/instances_val.json')
    assert 'ann_file' not in cfg.val_evaluator[1]
    assert 'val_evaluator.0.ann_file=' + str(tmp_path / 'annotations/annotations/instances_val.json') in done


def test_contradicting_options_and_missing_folder_are_refused(tmp_path):
    cfg = load_config(ROOT_CONFIG)
    with pytest.raises(DataRootError, match=r'--cfg-options test_evaluator.ann_file, val_dataloader.dataset.data_root'
                                            r' sets them too'):
        set_data_root(cfg, str(tmp_path), {'val_dataloader.dataset.data_root': 'x/', 'test_evaluator.ann_file': 'y',
                                           'train_cfg.max_epochs': 1})
    with pytest.raises(DataRootError, match='no such folder'):
        set_data_root(cfg, str(tmp_path / 'absent'))
    assert cfg.train_dataloader.dataset.data_root == 'data/isaid/'  # nothing changed on a refusal


@pytest.mark.parametrize('name', ['train.py', 'test.py', 'anchor_search.py', 'hpo.py'])
def test_the_four_tools_take_the_flag(name):
    args = {'train.py': [ROOT_CONFIG], 'test.py': [ROOT_CONFIG, 'x.pth'], 'anchor_search.py': [ROOT_CONFIG],
            'hpo.py': [ROOT_CONFIG, '--space', 's.py', '--trials', '1', '--study-name', 's']}[name]
    parsed = tool(name)['parse_args'](args + ['--data-root', 'data/elsewhere/'])
    assert parsed.data_root == 'data/elsewhere/'
    assert tool(name)['parse_args'](args).data_root is None


def test_anchor_search_reads_the_boxes_under_data_root(isaid_converted, tmp_path, capsys):
    """The anchor search with the config as written (data/isaid/) and --data-root: the boxes of the converted
    shared samples (P0005's four 800 px patches)."""
    summary = json.loads((isaid_converted.root / 'annotations' / 'instances_train.json').read_text())
    tool('anchor_search.py')['main']([
        ROOT_CONFIG, '--data-root', str(isaid_converted.root), '--trials', '1', '--storage',
        f'sqlite:///{tmp_path}/s.db', '--study-name', 'dr', '--out', str(tmp_path / 'dr.py'), '--work-dir',
        str(tmp_path / 'plots')])
    printed = capsys.readouterr().out
    boxes = sum(1 for a in summary['annotations'] if not a.get('iscrowd'))
    assert f'{boxes} boxes in {len(summary["images"])} images of {isaid_converted.root}' in printed
    assert (tmp_path / 'dr.py').is_file()


def test_hpo_base_config_takes_data_root(isaid_converted):
    from mmdet_custom.hpo.study import StudySpec, _base_config
    spec = StudySpec(config=str(REPO_ROOT / SMOKE_CONFIG), space='s.py', storage='sqlite:///x.db', study_name='s',
                     n_trials=1, work_dir='w', data_root=str(isaid_converted.root))
    cfg = _base_config(spec)
    assert cfg.val_evaluator.ann_file == str(isaid_converted.root / 'annotations/instances_val.json')
    assert cfg.train_dataloader.dataset.data_root == str(isaid_converted.root)


# ----------------------------------------------------------------------------------------------------------------
# the evaluator's json against the dataset's, at start
# ----------------------------------------------------------------------------------------------------------------
def _tiny_test_cfg(trained, tmp_path):
    from mmengine.config import Config
    cfg = Config.fromfile(str(trained.config))
    cfg.work_dir = str(tmp_path / 'work')
    return cfg


def test_test_with_data_root_scores_the_other_data(tiny_trained, isaid_converted, tmp_path, one_torch_thread):
    """The tiny model (trained on 256 px patches) tested on the 800 px conversion by --data-root alone: the
    evaluator reads that conversion's json (before: the 256 px json, an RLE size error after inference)."""
    from mmdet_custom.apis import test
    metrics = test(_tiny_test_cfg(tiny_trained, tmp_path), str(tiny_trained.checkpoint),
                   data_root=str(isaid_converted.root), check_image_files=False)
    assert 0.0 <= metrics['coco/segm_mAP'] <= 1.0
    written = json.loads(Path(metrics.metrics_file).read_text())
    assert written['coco/bbox_mAP'] == metrics['coco/bbox_mAP']
    config_dump = next((tmp_path / 'work').glob('*/vis_data/config.py'), None) or next(
        (tmp_path / 'work').glob('*/*.py'))
    assert str(isaid_converted.root / 'annotations/instances_val.json') in config_dump.read_text()


def test_evaluator_json_of_other_images_is_refused_before_inference(tiny_trained, isaid_converted, tmp_path,
                                                                    monkeypatch):
    from mmengine.runner import Runner

    from mmdet_custom.apis import test
    cfg = _tiny_test_cfg(tiny_trained, tmp_path)
    other = str(isaid_converted.root / 'annotations/instances_val.json')  # 800 px patches; the dataset's: 256 px
    cfg.test_evaluator.ann_file = other
    monkeypatch.setattr(Runner, 'test', lambda self: pytest.fail('inference ran'))
    with pytest.raises(AnnFileMismatchError) as info:
        test(cfg, str(tiny_trained.checkpoint), check_image_files=False)
    message = str(info.value)
    data_json = cfg.test_dataloader.dataset.data_root + cfg.test_dataloader.dataset.ann_file
    assert message.startswith(f'test_evaluator.ann_file {other} is not the test dataset\'s json {data_json}, and '
                              f'it describes other images: image id 0 is P0003_0_256_0_256.png in the dataset but '
                              f'P0003_0_800_0_800.png in {other}')
    assert '--data-root DIR' in message


def test_evaluator_json_of_the_same_images_is_named_in_a_warning(tiny_trained, tmp_path, monkeypatch):
    from mmengine.runner import Runner

    from mmdet_custom.apis import test
    cfg = _tiny_test_cfg(tiny_trained, tmp_path)
    copy = tmp_path / 'copy_of_val.json'
    shutil.copy(cfg.test_evaluator.ann_file, copy)
    cfg.test_evaluator.ann_file = str(copy)
    warned = []
    monkeypatch.setattr(Runner, 'test', lambda self: warned.append(
        (tmp_path / 'work').joinpath(self.timestamp, f'{self.timestamp}.log').read_text()) or {})
    test(cfg, str(tiny_trained.checkpoint), check_image_files=False)
    assert f'test_evaluator.ann_file {copy} is not the test dataset\'s json' in warned[0]
    assert 'it lists the same images (ids, names, sizes)' in warned[0]
