from .timm_cbam import BackboneWeightsError, PretrainedWeightsUnavailableError, TimmCBAMBackbone

__all__ = ['TimmCBAMBackbone', 'BackboneWeightsError', 'PretrainedWeightsUnavailableError']
