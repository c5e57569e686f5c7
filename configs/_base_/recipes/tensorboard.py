# Log scalars (losses, lr, nan_skips, val metrics) and visualisations to TensorBoard event files under
# <work_dir>/<timestamp>/vis_data/, beside the local json logs. Needs the `tensorboard` package.
# Use: visualizer = dict(vis_backends=_base_._tensorboard_vis_backends)
_tensorboard_vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
