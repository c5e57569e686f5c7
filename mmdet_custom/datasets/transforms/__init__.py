from .loading import LoadCompactAnnotations

__all__ = ['LoadCompactAnnotations']
