# Log to Weights & Biases beside the local json logs. wandb is optional: it is imported only when the run starts.
# The run lies beside the logs, in <work_dir>/<timestamp>/vis_data/wandb/ (mmengine passes that as wandb's `dir`).
# The mode comes from the environment: WANDB_MODE=offline writes offline-run-*/ there with no network and no
# account (upload later with `wandb sync <run dir>`); online runs need `wandb login` first.
# Use: visualizer = dict(vis_backends=_base_._wandb_vis_backends)
_wandb_vis_backends = [dict(type='LocalVisBackend'),
                      dict(type='WandbVisBackend', init_kwargs=dict(project='mmdet_custom'))]
