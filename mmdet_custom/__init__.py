"""mmdet_custom: an MMDetection 3.x extension for instance segmentation of aerial imagery (iSAID).

Importing the package registers nothing and imports neither torch nor mmdet. The registration into mmdet's
registries is the import of :mod:`mmdet_custom.register`, which every config names::

    custom_imports = dict(imports=['mmdet_custom.register'], allow_failed_imports=False)
"""
from .version import __version__

__all__ = ['__version__']
