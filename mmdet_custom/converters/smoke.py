"""A small deterministic *smoke* dataset: aerial-like scenes written in the official iSAID raw layout.

Real iSAID cannot be shipped with the project, so ``make demo`` generates this set and runs the real pipeline on it
(``convert_isaid`` patches it, then train -> test). It is for checking that everything runs end to end, *not* for
measuring anything: objects are flat-coloured shapes on a noisy ground texture with roads.

Layout written (identical to the devkit's, see ``../shared/docs/FACTS.md``)::

    <root>/<split>/images/P9xxx.png                     RGB scene
    <root>/<split>/images/P9xxx_instance_color_RGB.png  class colour per pixel (iSAID palette), black background
    <root>/<split>/images/P9xxx_instance_id_RGB.png     instance id = R*65536 + G*256 + B, 0 = background

Classes drawn (iSAID names): Small_Vehicle and Large_Vehicle (rotated rectangles), storage_tank (discs),
Swimming_pool (blue rectangles), ship (rotated elongated hexagons), plane (crosses).
"""
import os
import os.path as osp
from typing import Dict, Sequence

import cv2
import numpy as np

from mmdet_custom.utils.isaid_meta import ISAID_CLASSES, ISAID_PALETTE

# class name -> (length range px, width range px, RGB fill colour or None for random vehicle paint)
_SHAPES = {
    'Small_Vehicle': ((12, 18), (7, 9), None),
    'Large_Vehicle': ((26, 40), (10, 13), None),
    'storage_tank': ((18, 34), None, (215, 215, 205)),
    'Swimming_pool': ((18, 30), (12, 18), (40, 120, 230)),
    'ship': ((34, 60), (10, 16), (235, 235, 240)),
    'plane': ((30, 46), None, (245, 245, 245)),
}
_COUNTS = {'Small_Vehicle': (6, 14), 'Large_Vehicle': (2, 5), 'storage_tank': (1, 4), 'Swimming_pool': (0, 3),
           'ship': (0, 3), 'plane': (0, 2)}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.integers(60, 110, size=3)
    # one luminance texture for all channels (fields and soil), a little per-channel grain
    low = rng.normal(0, 18, size=(size // 16, size // 16)).astype(np.float32)
    tex = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)[..., None]
    tex = tex + rng.normal(0, 4, size=(size, size, 3))
    img = np.clip(base[None, None] + tex, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 3)):  # roads
        horizontal, pos, width = rng.random() < 0.5, int(rng.integers(0, size)), int(rng.integers(14, 26))
        if horizontal:
            img[max(0, pos - width // 2):pos + width // 2] = (128, 128, 124)
        else:
            img[:, max(0, pos - width // 2):pos + width // 2] = (128, 128, 124)
    return img


def _polygon(name: str, rng: np.random.Generator, cx: float, cy: float) -> np.ndarray:
    (l0, l1), wr, _ = _SHAPES[name]
    length = rng.uniform(l0, l1)
    angle = rng.uniform(0, 180)
    if name == 'storage_tank':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        return np.stack([cx + length / 2 * np.cos(t), cy + length / 2 * np.sin(t)], 1)
    if name == 'plane':
        w = length / 5
        pts = np.array([[-length / 2, -w / 2], [-w / 2, -w / 2], [-w / 2, -length / 2], [w / 2, -length / 2],
                        [w / 2, -w / 2], [length / 2, -w / 2], [length / 2, w / 2], [w / 2, w / 2],
                        [w / 2, length / 2], [-w / 2, length / 2], [-w / 2, w / 2], [-length / 2, w / 2]])
    else:
        w = rng.uniform(*wr)
        pts = np.array([[-length / 2, -w / 2], [length / 2, -w / 2], [length / 2, w / 2], [-length / 2, w / 2]])
        if name == 'ship':
            pts = np.array([[-length / 2, 0], [-length / 3, -w / 2], [length / 3, -w / 2], [length / 2, 0],
                            [length / 3, w / 2], [-length / 3, w / 2]])
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return pts @ rot.T + [cx, cy]


def generate_scene(rng: np.random.Generator, size: int = 512):
    """Draw one scene.

    Returns:
        tuple: ``(image, color_mask, id_mask, counts)``: three ``(size, size, 3)`` uint8 RGB arrays in the devkit
        encoding and a dict class name -> number of instances drawn.
    """
    image = _background(rng, size)
    color = np.zeros_like(image)
    ids = np.zeros((size, size), np.int64)
    counts: Dict[str, int] = {}
    next_id = int(rng.integers(1000, 5000))
    for name, (c0, c1) in _COUNTS.items():
        for _ in range(int(rng.integers(c0, c1 + 1))):
            for _attempt in range(20):  # place without overlapping an earlier object
                cx, cy = rng.uniform(24, size - 24, size=2)
                poly = np.round(_polygon(name, rng, cx, cy)).astype(np.int32)
                mask = np.zeros((size, size), np.uint8)
                cv2.fillPoly(mask, [poly], 1)
                mask = mask.astype(bool)
                if mask.sum() >= 20 and not (ids[mask] > 0).any():
                    break
            else:
                continue
            fill = _SHAPES[name][2]
            if fill is None:
                fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
            image[mask] = fill
            color[mask] = ISAID_PALETTE[ISAID_CLASSES.index(name)]
            next_id += int(rng.integers(1, 50))
            ids[mask] = next_id
            counts[name] = counts.get(name, 0) + 1
    id_rgb = np.stack([(ids >> 16) & 255, (ids >> 8) & 255, ids & 255], -1).astype(np.uint8)
    return image, color, id_rgb, counts


def generate_smoke_dataset(root: str,
                           splits: Dict[str, int] = None,
                           size: int = 512,
                           seed: int = 0) -> Dict[str, Dict[str, int]]:
    """Write the smoke dataset under ``root`` in the iSAID raw layout (deterministic for a given seed).

    Args:
        root (str): output folder; ``<root>/<split>/images`` is created.
        splits (dict): split name -> number of images; default ``{'train': 16, 'val': 4}``.
        size (int): image side in pixels.
        seed (int): seed of the generator; the same seed writes byte-identical files.

    Returns:
        dict: split -> class name -> number of instances written.
    """
    from PIL import Image
    splits = splits or {'train': 16, 'val': 4}
    rng = np.random.default_rng(seed)
    summary = {}
    for split, n in splits.items():
        folder = osp.join(root, split, 'images')
        os.makedirs(folder, exist_ok=True)
        summary[split] = {}
        for k in range(n):
            image, color, id_rgb, counts = generate_scene(rng, size)
            stem = f'P9{len(summary) * 100 + k:03d}'
            for suffix, arr in (('', image), ('_instance_color_RGB', color), ('_instance_id_RGB', id_rgb)):
                Image.fromarray(arr).save(osp.join(folder, f'{stem}{suffix}.png'))
            for name, c in counts.items():
                summary[split][name] = summary[split].get(name, 0) + c
    return summary


def main(argv: Sequence[str] = None):
    import argparse
    parser = argparse.ArgumentParser(description='Write the iSAID-layout smoke dataset')
    parser.add_argument('root')
    parser.add_argument('--train', type=int, default=16)
    parser.add_argument('--val', type=int, default=4)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    print(generate_smoke_dataset(args.root, {'train': args.train, 'val': args.val}, args.size, args.seed))


if __name__ == '__main__':
    main()
