"""Binary-mask helpers shared by the exporters, converters and metrics (torch-free: numpy + pycocotools)."""
import numpy as np
import pycocotools.mask as mask_utils

__all__ = ['encode_mask', 'touches_border']


def encode_mask(mask: np.ndarray) -> dict:
    """Encode one binary mask as compressed COCO RLE with ``counts`` as ``str`` (json-serialisable).

    Args:
        mask (np.ndarray): ``(H, W)`` mask, bool or 0/1 integers.

    Returns:
        dict: ``{'size': [H, W], 'counts': str}``, decodable by ``pycocotools.mask.decode``.

    Example:
        >>> import numpy as np
        >>> rle = encode_mask(np.eye(3, dtype=bool))
        >>> rle['size'], int(mask_utils.area(rle))
        ([3, 3], 3)
    """
    rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
    rle['counts'] = rle['counts'].decode('ascii')
    return rle


def touches_border(mask: np.ndarray) -> bool:
    """Whether a ``(H, W)`` binary mask has a foreground pixel in the first/last row or column.

    Example:
        >>> import numpy as np
        >>> m = np.zeros((4, 4), bool)
        >>> m[1:3, 1:3] = True
        >>> touches_border(m), touches_border(np.pad(m, ((0, 0), (0, 1)))[:, 1:])
        (False, True)
    """
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
