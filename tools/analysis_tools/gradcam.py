"""Grad-CAM of the top detections of one class in an image, one PNG overlay per detection.

``python tools/analysis_tools/gradcam.py IMG CONFIG [CHECKPOINT] --target-class Small_Vehicle
[--target-layer backbone.layer4] [--num-preds 3] --output-dir DIR``. The target is the detection's classification
score recomputed on its box; see :mod:`mmdet_custom.analysis.gradcam`.
"""
import argparse

from mmdet_custom.utils.cli import add_cfg_options, add_device, run_cli


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Grad-CAM of detections of one class')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None, help='checkpoint file (default: random weights)')
    parser.add_argument('--target-class', required=True, help='class name (or index) of the detections')
    parser.add_argument('--target-layer', default='backbone.layer4',
                        help='dotted module name, e.g. backbone.layer4 or neck.fpn_convs.0')
    parser.add_argument('--num-preds', type=int, default=3, help='detections explained, highest score first')
    parser.add_argument('--output-dir', required=True, help='folder of the PNGs')
    add_device(parser)
    add_cfg_options(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from mmdet_custom.utils.config import read_config
    cfg = read_config(args.config, args.cfg_options)  # unknown --cfg-options keys are refused here
    import mmdet_custom.register  # noqa: F401  (registers the project's modules)
    from mmdet_custom.analysis.gradcam import grad_cam
    results = grad_cam(args.img, cfg, args.checkpoint, args.target_class, args.output_dir,
                       target_layer=args.target_layer, num_preds=args.num_preds, device=args.device)
    for r in results:
        box = ', '.join(f'{v:.1f}' for v in r['bbox'])
        print(f'score {r["score"]:.3f}  box [{box}]  feature map {r["feature_shape"]}  -> {r["out_file"]}')
    return results


if __name__ == '__main__':
    run_cli(main)
