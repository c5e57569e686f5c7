"""Parameters, model size and FLOPs of a detector, per component (backbone, CBAM, neck, heads).

The model is built from its config with random init (:func:`mmdet_custom.models.builder.build_model`): no
checkpoint is read and nothing is downloaded, so the tool runs offline on any config of the project. Components of a
two-stage detector (``model.backbone``, ``model.neck``, ``model.rpn_head``, ``model.roi_head``):

==================  ===========================================================================================
component           parameters
==================  ===========================================================================================
backbone            ``backbone.*`` less the CBAM modules inside it
cbam                every CBAM module (Woo et al., CBAM, ECCV 2018), wherever it sits (backbone stages, neck)
neck                ``neck.*`` less the CBAM modules inside it
rpn_head            ``rpn_head.*``
bbox_head           ``roi_head.bbox_head.*`` less the predictor: the shared convs / FCs (and branch FCs)
bbox_predictor      ``roi_head.bbox_head.fc_cls`` + ``roi_head.bbox_head.fc_reg``
mask_head           ``roi_head.mask_head.*``
other               anything else (e.g. a second stage of a cascade); shown only when non-zero
==================  ===========================================================================================

Model size is ``params x bytes per param`` at FP32 / FP16 / INT8 (4 / 2 / 1 bytes), in MB of 2**20 bytes (weights
only: no optimizer state, no activations, no file overhead).

FLOPs are counted by :class:`mmengine.analysis.FlopAnalyzer` (the counter behind
:func:`mmengine.analysis.get_model_complexity_info`; fvcore's rules: one fused multiply-add = one FLOP; element-wise
ops such as sigmoid or the attention product are not counted). Two scopes, kept apart because they do not add up:

* per image: ``backbone -> neck -> rpn_head`` forward on one ``3 x H x W`` input (default 800 x 800); the dense
  part, whose cost does not depend on the number of proposals;
* per RoI: ``bbox_head`` on one ``C x 7 x 7`` RoI feature and ``mask_head`` on one ``C x 14 x 14`` RoI feature (the
  sizes of the config's RoI extractors). At test time the box head runs on up to ``test_cfg.rpn.max_per_img``
  proposals and the mask head on up to ``test_cfg.rcnn.max_per_img`` detections of each image.
"""
import csv
from dataclasses import asdict, dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from terminaltables import GithubFlavoredMarkdownTable
from torch import nn

from mmdet_custom.models.builder import build_model, disable_pretrained  # noqa: F401  (re-exported)
from mmdet_custom.utils.fileio import atomic_path

#: Bytes per parameter of each storage precision.
BYTES_PER_PARAM = {'fp32': 4, 'fp16': 2, 'int8': 1}
#: Component names in table order.
COMPONENTS = ('backbone', 'cbam', 'neck', 'rpn_head', 'bbox_head', 'bbox_predictor', 'mask_head', 'other')
_MB = float(2**20)


# The one model-build path and its random-init rule live in mmdet_custom.models.builder; ``build_detector`` and
# ``disable_pretrained`` are kept under their old names here for the callers that import them from this module.
build_detector = build_model


def _cbam_classes() -> Tuple[type, ...]:
    from mmdet.registry import MODELS
    cls = MODELS.get('CBAM')
    return (cls, ) if cls is not None else ()


def find_cbam_modules(model: nn.Module) -> List[str]:
    """Names of the outermost CBAM modules in ``model`` (a CBAM inside a CBAM is not listed twice).

    A module counts as CBAM when it is an instance of the class registered as ``'CBAM'`` in mmdet's ``MODELS``
    or its class is named ``CBAM``.
    """
    classes = _cbam_classes()
    names: List[str] = []
    for name, module in model.named_modules():
        if not (isinstance(module, classes) or type(module).__name__ == 'CBAM'):
            continue
        if any(name.startswith(outer + '.') for outer in names):
            continue
        names.append(name)
    return names


def _component_of(param_name: str, cbam_names: Sequence[str]) -> str:
    """Component (one of :data:`COMPONENTS`) that holds the parameter ``param_name``."""
    if any(param_name.startswith(name + '.') for name in cbam_names):
        return 'cbam'
    top = param_name.split('.', 1)[0]
    if top in ('backbone', 'neck', 'rpn_head'):
        return top
    if param_name.startswith('roi_head.mask_head.'):
        return 'mask_head'
    if param_name.startswith('roi_head.bbox_head.'):
        sub = param_name[len('roi_head.bbox_head.'):].split('.', 1)[0]
        return 'bbox_predictor' if sub in ('fc_cls', 'fc_reg') else 'bbox_head'
    return 'other'


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Number of parameters (trainable or frozen) of each component of a detector.

    Args:
        model (nn.Module): a detector with mmdet's attribute names (``backbone``, ``neck``, ``rpn_head``,
            ``roi_head.bbox_head``, ``roi_head.mask_head``).

    Returns:
        dict[str, int]: component -> number of parameters, for every name of :data:`COMPONENTS` (zeros
        included); the values add up to ``sum(p.numel() for p in model.parameters())``. Shared parameters
        are counted once.
    """
    cbam_names = find_cbam_modules(model)
    counts = {name: 0 for name in COMPONENTS}
    for param_name, param in model.named_parameters():
        counts[_component_of(param_name, cbam_names)] += param.numel()
    return counts


def cbam_locations(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """Where the CBAM modules sit: top-level part (``backbone``, ``neck``, ...) -> (modules, parameters)."""
    out: Dict[str, Tuple[int, int]] = {}
    modules = dict(model.named_modules())
    for name in find_cbam_modules(model):
        part = name.split('.', 1)[0]
        n_mod, n_par = out.get(part, (0, 0))
        out[part] = (n_mod + 1, n_par + sum(p.numel() for p in modules[name].parameters()))
    return out


class _DenseForward(nn.Module):
    """``backbone -> neck -> rpn_head`` of a detector, returning a flat tuple of tensors (for jit tracing)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone = detector.backbone
        if getattr(detector, 'with_neck', False):
            self.neck = detector.neck
        if getattr(detector, 'with_rpn', False):
            self.rpn_head = detector.rpn_head

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(inputs)
        if hasattr(self, 'neck'):
            feats = self.neck(feats)
        outs = list(feats)
        if hasattr(self, 'rpn_head'):
            cls_scores, bbox_preds = self.rpn_head(tuple(feats))
            outs += list(cls_scores) + list(bbox_preds)
        return tuple(outs)


def _flop_analyzer(module: nn.Module, inputs: Tuple[torch.Tensor, ...]):
    from mmengine.analysis import FlopAnalyzer
    analyzer = FlopAnalyzer(module, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    analyzer.tracer_warnings('none')
    return analyzer


def count_flops(model: nn.Module, shape: Tuple[int, int] = (800, 800)) -> Tuple[Dict[str, int], Dict[str, int]]:
    """FLOPs of each component: per image for the dense part, per RoI for the RoI heads (see the module doc).

    Args:
        model (nn.Module): a detector (as for :func:`count_parameters`).
        shape (tuple[int, int]): input height and width in pixels. Defaults to (800, 800).

    Returns:
        tuple[dict, dict]: ``(per_image, per_roi)``: component -> FLOPs. ``per_image`` holds ``backbone`` (less
        CBAM), ``cbam``, ``neck`` (less CBAM) and ``rpn_head``; ``per_roi`` holds ``bbox_head``,
        ``bbox_predictor`` and ``mask_head`` (RoI features of :func:`roi_feat_sizes`). Components the model
        lacks are left out.
    """
    model = model.eval()
    cbam_names = find_cbam_modules(model)
    per_image: Dict[str, int] = {}
    per_roi: Dict[str, int] = {}
    with torch.no_grad():
        dense = _DenseForward(model)
        by_module = _flop_analyzer(dense, (torch.zeros(1, 3, *shape), )).by_module()
        cbam_in = {part: sum(by_module.get(n, 0) for n in cbam_names if n.startswith(part + '.'))
                   for part in ('backbone', 'neck')}
        per_image['backbone'] = by_module.get('backbone', 0) - cbam_in['backbone']
        per_image['cbam'] = sum(by_module.get(n, 0) for n in cbam_names)
        if hasattr(dense, 'neck'):
            per_image['neck'] = by_module.get('neck', 0) - cbam_in['neck']
        if hasattr(dense, 'rpn_head'):
            per_image['rpn_head'] = by_module.get('rpn_head', 0)

        roi_head = getattr(model, 'roi_head', None)
        sizes = roi_feat_sizes(model)
        if 'bbox_head' in sizes:
            bbox_head = roi_head.bbox_head
            roi = torch.zeros(1, bbox_head.in_channels, *sizes['bbox_head'])
            by_module = _flop_analyzer(bbox_head, (roi, )).by_module()
            predictor = by_module.get('fc_cls', 0) + by_module.get('fc_reg', 0)
            per_roi['bbox_head'] = by_module.get('', 0) - predictor
            per_roi['bbox_predictor'] = predictor
        if 'mask_head' in sizes:
            mask_head = roi_head.mask_head
            roi = torch.zeros(1, mask_head.in_channels, *sizes['mask_head'])
            per_roi['mask_head'] = _flop_analyzer(mask_head, (roi, )).total()
    return per_image, per_roi


def _pair(size) -> Tuple[int, int]:
    return tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else (int(size), int(size))


def roi_feat_sizes(model: nn.Module) -> Dict[str, Tuple[int, int]]:
    """(height, width) of the RoI features fed to ``bbox_head`` and ``mask_head`` (the RoI extractors' output
    size), for the heads the model has (a cascade's list of heads is left out)."""
    roi_head = getattr(model, 'roi_head', None)
    sizes = {}
    for head, extractor in (('bbox_head', 'bbox_roi_extractor'), ('mask_head', 'mask_roi_extractor')):
        if not isinstance(getattr(roi_head, head, None), nn.Module):
            continue
        layers = getattr(getattr(roi_head, extractor, None), 'roi_layers', None)
        if not layers:
            continue
        sizes[head] = _pair(layers[0].output_size)
    return sizes


@dataclass
class ComponentRow:
    """One row of the table / CSV: a component or the total."""
    component: str
    params: int
    params_pct: float
    size_mb_fp32: float
    size_mb_fp16: float
    size_mb_int8: float
    gflops_per_image: Optional[float]
    mflops_per_roi: Optional[float]


@dataclass
class ModelStats:
    """Statistics of one model: the rows, the input shape of the FLOPs, and where the CBAM modules sit."""
    config: str
    shape: Tuple[int, int]
    rows: List[ComponentRow]
    cbam_locations: Dict[str, Tuple[int, int]]
    total_params: int
    roi_sizes: Dict[str, Tuple[int, int]]


def model_stats(config: Union[str, Config],
                shape: Optional[Tuple[int, int]] = (800, 800),
                cfg_options: Optional[dict] = None,
                model: Optional[nn.Module] = None) -> ModelStats:
    """Parameters, size and FLOPs of every component of ``config``'s model (random init).

    Args:
        config (str | Config): config file or object.
        shape (tuple[int, int], optional): input (height, width) of the FLOPs count, in pixels; None skips FLOPs
            (the FLOPs columns are then empty). Defaults to (800, 800).
        cfg_options (dict, optional): overrides merged into the config.
        model (nn.Module, optional): an already built model of ``config`` (saves building it again).

    Returns:
        ModelStats: one row per component present (every component of :data:`COMPONENTS` with parameters, and
        ``cbam`` even at zero) and a last ``total`` row.
    """
    if model is None:
        model = build_model(config, cfg_options=cfg_options)
    counts = count_parameters(model)
    total = sum(p.numel() for p in model.parameters())
    per_image, per_roi = count_flops(model, tuple(shape)) if shape is not None else ({}, {})

    def row(name: str, n: int, gflops: Optional[float], mflops: Optional[float]) -> ComponentRow:
        return ComponentRow(
            component=name,
            params=n,
            params_pct=100.0 * n / total if total else 0.0,
            size_mb_fp32=n * BYTES_PER_PARAM['fp32'] / _MB,
            size_mb_fp16=n * BYTES_PER_PARAM['fp16'] / _MB,
            size_mb_int8=n * BYTES_PER_PARAM['int8'] / _MB,
            gflops_per_image=gflops,
            mflops_per_roi=mflops)

    rows = []
    for name in COMPONENTS:
        if counts[name] == 0 and name not in ('cbam', ) and name not in per_image:
            continue
        gflops = per_image[name] / 1e9 if name in per_image else None
        mflops = per_roi[name] / 1e6 if name in per_roi else None
        rows.append(row(name, counts[name], gflops, mflops))
    rows.append(
        row('total', total,
            sum(per_image.values()) / 1e9 if per_image else None,
            sum(per_roi.values()) / 1e6 if per_roi else None))
    name = config if isinstance(config, str) else getattr(config, 'filename', None) or '<config>'
    return ModelStats(config=name, shape=tuple(shape) if shape is not None else None, rows=rows,
                      cbam_locations=cbam_locations(model), total_params=total, roi_sizes=roi_feat_sizes(model))


def _fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def format_table(stats: ModelStats) -> str:
    """The statistics as a plain-text (Markdown-compatible) table with a short header and notes."""
    header = ['component', 'params', '% params', 'FP32 MB', 'FP16 MB', 'INT8 MB', 'GFLOPs/image', 'MFLOPs/RoI']
    body = []
    for r in stats.rows:
        body.append([
            r.component, f'{r.params:,}', f'{r.params_pct:.2f}', f'{r.size_mb_fp32:.2f}', f'{r.size_mb_fp16:.2f}',
            f'{r.size_mb_int8:.2f}', _fmt(r.gflops_per_image, '.2f'), _fmt(r.mflops_per_roi, '.2f')
        ])
    table = GithubFlavoredMarkdownTable([header] + body)
    table.justify_columns = {i: 'right' for i in range(1, len(header))}
    out = [f'Model statistics of {stats.config} (random init)', '', table.table]
    where = ', '.join(f'{part}: {n} modules, {p:,} params' for part, (n, p) in stats.cbam_locations.items())
    out += [
        '',
        f'cbam: {where}' if where else 'cbam: none in this model',
        'MB = 2**20 bytes of weights at 4 / 2 / 1 bytes per parameter.',
    ]
    if stats.shape is not None:
        h, w = stats.shape
        rois = ' and '.join(f'{head} on one {sh}x{sw}' for head, (sh, sw) in stats.roi_sizes.items())
        out.append(f'GFLOPs/image: backbone -> neck -> rpn_head forward on one 3x{h}x{w} input; MFLOPs/RoI: '
                   f'{rois or "-"} RoI feature (mmengine FlopAnalyzer, 1 multiply-add = 1 FLOP, element-wise ops '
                   f'not counted).')
    return '\n'.join(out)


def write_csv(stats: ModelStats, path: str) -> None:
    """Write the rows to ``path`` as CSV (header = :class:`ComponentRow` fields; empty cell = not measured).

    The file is written to a temporary file in the same folder and moved into place, so a failure leaves no
    partial file behind.
    """
    names = [f.name for f in fields(ComponentRow)]
    with atomic_path(path) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for r in stats.rows:
            writer.writerow({k: ('' if v is None else v) for k, v in asdict(r).items()})


def read_csv(path: str) -> List[ComponentRow]:
    """Read back a CSV written by :func:`write_csv`."""
    rows = []
    with open(path, newline='') as f:
        for rec in csv.DictReader(f):
            values = {}
            for key, text in rec.items():
                if key == 'component':
                    values[key] = text
                elif key == 'params':
                    values[key] = int(text)
                else:
                    values[key] = None if text == '' else float(text)
            rows.append(ComponentRow(**values))
    return rows
