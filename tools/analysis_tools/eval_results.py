"""Evaluate a saved COCO results file against a ground-truth json, with the iSAID devkit's protocol or COCO's.

``python tools/analysis_tools/eval_results.py GT_JSON RESULTS_JSON [--protocol isaid|coco] [--iou-type segm bbox]
[--out metrics.json]``

RESULTS_JSON is a json list of ``{image_id, category_id, bbox, score[, segmentation]}`` (as ``tools/test.py
--format-only --out`` writes it, or mmdet's ``*.segm.json``), its ``category_id`` in GT_JSON's ids. Prints the 12
summary numbers per IoU type and the per-class AP table, and writes them with ``--out`` under mmdet ``CocoMetric``'s
key names (``segm_mAP``, ``segm_mAP_50``, ... ``bbox_mAP_l``, the recalls ``segm_AR@1000`` ..., and each class's
AP ``segm_<class>_precision``); NaN is written as ``null``. See
:func:`mmdet_custom.evaluation.functional.evaluate_coco_results`. A missing or malformed file ends with one
``error:`` line naming it and exit code 2 (``--debug`` shows the traceback); so do results whose ``image_id`` follows
another numbering of the images than GT_JSON's (e.g. patches numbered from 1 against the devkit's 0: see
:mod:`mmdet_custom.evaluation.functional.image_ids`), which would otherwise score ~0. Needs neither torch nor mmdet.
"""
import argparse
import os
import os.path as osp
import sys

from mmdet_custom.evaluation.functional import (
    evaluate_coco_reports,
    format_summary,
    format_tables,
    metrics_to_json,
    read_results,
    reports_to_dict,
)
from mmdet_custom.utils.cli import run_cli
from mmdet_custom.utils.errors import UserError
from mmdet_custom.utils.fileio import dump_json_atomic
from mmdet_custom.utils.isaid_meta import ISAID_CLASSES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='COCO-style AP/AR of a saved results file (iSAID or COCO protocol)')
    parser.add_argument('gt_json', help='ground-truth COCO json, e.g. the devkit\'s instancesonly_filtered_val.json')
    parser.add_argument('results_json', help='COCO results json (a list of detections)')
    parser.add_argument('--protocol', choices=['isaid', 'coco'], default='isaid',
                        help="'isaid': the devkit's maxDets (1, 10, 1000) and size bands 10^2/144^2/512^2 px^2 "
                        "(default); 'coco': COCO's bands 32^2/96^2 with budgets (100, 300, 1000)")
    parser.add_argument('--iou-type', nargs='+', choices=['segm', 'bbox'], default=None,
                        help='what to evaluate (default: segm and bbox; bbox only when the results carry no '
                        'segmentation)')
    parser.add_argument('--classes', nargs='+', default=None,
                        help="class names to match GT_JSON's categories to (by name; an unknown name is an error); "
                        "'isaid' = the 15 iSAID classes. Default: every category of GT_JSON")
    parser.add_argument('--max-dets', nargs=3, type=int, default=None, metavar='N',
                        help='other detection budgets with --protocol coco, e.g. COCO\'s official 1 10 100')
    parser.add_argument('--out', default=None, help='json file for the numbers (written atomically)')
    args = parser.parse_args(argv)
    if args.max_dets is not None and args.protocol == 'isaid':
        parser.error("--max-dets: the iSAID protocol fixes maxDets (1, 10, 1000); use --protocol coco")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.out is not None:  # refuse a bad output before the evaluation, not after it
        out = osp.realpath(args.out)
        if out in (osp.realpath(args.gt_json), osp.realpath(args.results_json)):
            raise UserError(f'--out {args.out} is one of the input files; choose another file')
        folder = osp.dirname(out)
        while not osp.isdir(folder):
            folder = osp.dirname(folder)
        if not os.access(folder, os.W_OK):
            raise UserError(f'--out {args.out}: cannot write in {folder}')
    classes = args.classes
    if classes == ['isaid']:
        classes = list(ISAID_CLASSES)
    results, _ = read_results(args.results_json)
    iou_types = args.iou_type
    if iou_types is None:
        iou_types = ['segm', 'bbox']
        if results and not any(isinstance(r, dict) and 'segmentation' in r for r in results):
            print(f'note: {args.results_json} holds no segmentation: evaluating bbox only', file=sys.stderr)
            iou_types = ['bbox']
    reports = evaluate_coco_reports(args.gt_json, results, iou_types, args.protocol, classes,
                                    max_dets=args.max_dets, results_name=args.results_json)
    for report in reports:
        print(format_summary(report))
        if report.num_ignored_detections:
            print(f'note: {report.num_ignored_detections} {report.iou_type} detections have a category_id that '
                  f'{args.gt_json} does not list; they were not evaluated', file=sys.stderr)
    print(format_tables(reports, classwise=True))
    metrics = reports_to_dict(reports, classwise=True)
    if args.out is not None:
        dump_json_atomic(metrics_to_json(metrics), args.out, indent=2)
        print(f'written to {args.out}')
    return metrics


if __name__ == '__main__':
    run_cli(main)
