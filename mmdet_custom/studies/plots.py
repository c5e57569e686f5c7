"""Optuna's own plots of a study (``optuna.visualization.matplotlib``), saved as PNG files atomically, under one name
scheme for every search: Optuna's function name without ``plot_``."""
import os.path as osp
import warnings
from typing import Dict, List

from mmdet_custom.utils.fileio import atomic_path

__all__ = ['save_plots', 'written', 'PLOTS']

#: file stem -> optuna.visualization.matplotlib function (the stem is the function's name without ``plot_``)
PLOTS = {
    'optimization_history': 'plot_optimization_history',
    'param_importances': 'plot_param_importances',
    'parallel_coordinate': 'plot_parallel_coordinate',
}


def save_plots(study, out_dir: str, target_name: str = 'Objective Value', dpi: int = 110) -> Dict[str, str]:
    """Save the optimisation history, the parameter importances (Optuna's default fANOVA evaluator) and the
    parallel-coordinate plot of ``study`` as ``<out_dir>/<name>.png`` (names: :data:`PLOTS`), each atomically.

    A plot Optuna cannot draw yet is skipped, not fatal: importances need two COMPLETE trials with different values
    (checked first: fANOVA would otherwise fail or draw noise), and Optuna raises ``ValueError`` / ``RuntimeError``
    for other studies it cannot plot.

    Args:
        study (optuna.Study): the study.
        out_dir (str): the folder (created when missing).
        target_name (str): the objective's name on the axes (e.g. ``coco/segm_mAP``).
        dpi (int): resolution of the PNG files.

    Returns:
        dict: each plot name -> its file, or ``'skipped: <reason>'``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import optuna
    from optuna.visualization import matplotlib as ovm
    values = {t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, ))}
    results = {}
    for name, fn_name in PLOTS.items():
        if name == 'param_importances' and len(values) < 2:
            results[name] = 'skipped: importances need >= 2 completed trials with different objective values'
            continue
        path = osp.join(out_dir, f'{name}.png')
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
                ax = getattr(ovm, fn_name)(study, target_name=target_name)
            fig = (ax.flat[0] if hasattr(ax, 'flat') else ax).figure
            try:
                with atomic_path(path) as tmp:
                    fig.savefig(tmp, dpi=dpi, bbox_inches='tight')
            finally:
                plt.close(fig)
            results[name] = path
        except (ValueError, RuntimeError) as e:  # optuna's errors for a study it cannot plot
            results[name] = f'skipped: {type(e).__name__}: {e}'
    return results


def written(results: Dict[str, str]) -> List[str]:
    """The files of :func:`save_plots`'s result (the skipped plots left out)."""
    return [v for v in results.values() if not v.startswith('skipped:')]
