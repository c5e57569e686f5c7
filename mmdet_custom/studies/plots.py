"""Optuna's own plots of a study (``optuna.visualization.matplotlib``), saved as PNG files atomically."""
import os.path as osp
import warnings
from typing import Dict

from mmdet_custom.utils.fileio import atomic_path

__all__ = ['save_plots', 'PLOTS']

#: file stem -> optuna.visualization.matplotlib function name
PLOTS = {
    'history': 'plot_optimization_history',
    'importance': 'plot_param_importances',
    'parallel_coordinate': 'plot_parallel_coordinate',
}


def save_plots(study, out_dir: str, metric: str = 'Objective Value') -> Dict[str, str]:
    """Save the optimisation history, the parameter importances (Optuna's default fANOVA evaluator) and the
    parallel-coordinate plot of ``study`` as ``<out_dir>/<name>.png``.

    A plot Optuna cannot draw yet (e.g. importances need two COMPLETE trials with a varying parameter) is skipped,
    not fatal: the returned dict maps each name to its file or to ``'skipped: <reason>'``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm
    results = {}
    for name, fn_name in PLOTS.items():
        path = osp.join(out_dir, f'{name}.png')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                ax = getattr(ovm, fn_name)(study, target_name=metric)
            fig = (ax.flat[0] if hasattr(ax, 'flat') else ax).figure
            try:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=110, bbox_inches='tight')
            finally:
                plt.close(fig)
            results[name] = path
        except Exception as e:  # optuna raises ValueError / RuntimeError for studies it cannot plot
            results[name] = f'skipped: {type(e).__name__}: {e}'
    return results
