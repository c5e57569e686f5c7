from .export import predictions_to_coco_results
from .runner import load_config, test, train
from .scene import SceneInferencer, infer_scenes

__all__ = ['load_config', 'train', 'test', 'predictions_to_coco_results', 'SceneInferencer', 'infer_scenes']
