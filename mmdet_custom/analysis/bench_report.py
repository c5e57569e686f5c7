"""The model benchmark's report (:mod:`mmdet_custom.analysis.benchmark`): medians and spreads over the repeats,
ratios to the reference model, the load warning, and the plain, markdown and profile tables.

A report is the dict :func:`~mmdet_custom.analysis.benchmark.run_benchmark` returns (``settings``, ``machine``,
``data``, ``loads``, ``runs``: model name -> one result per repeat); nothing here measures or imports torch.
"""
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from terminaltables import AsciiTable

#: Inference parts, in table order (training adds backward and optimizer).
INFER_PARTS = ('backbone+neck', 'rpn', 'roi_heads', 'post')
TRAIN_PARTS = ('backbone+neck', 'rpn', 'roi_heads', 'backward', 'optimizer', 'other')


def progress_line(result: Dict) -> str:
    """One model's result of one repeat in a line: inference ms/img per detection budget, compile time, train img/s."""
    bits = [f'infer @{n} {v["s_per_img"] * 1000:.0f} ms' for n, v in result['infer'].items()]
    if 'compile_s' in result:
        bits.append(f'compile {result["compile_s"]:.0f} s (max |diff| {result["compile_max_abs_diff"]:.1e})')
    if result.get('train'):
        bits.append(f'train {result["train"]["img_per_s"]:.3f} img/s')
    return ', '.join(bits)


def median_of(values: Sequence[float]) -> Optional[float]:
    """Median of the values that are not None (None when there are none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread_of(values: Sequence[float]) -> Optional[float]:
    """``(max - min) / median`` of ``values`` (None for fewer than 2 values)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else None


def columns(settings: Dict) -> List[Tuple[str, str]]:
    """Summary columns ``(key, header)`` for the run's settings (one inference column per detection budget)."""
    dets = settings['dets']
    cols = [('params_m', 'params (M)'), (f'gflops_{dets[0]}', f'GFLOPs @{dets[0]} dets'),
            ('train_img_s', f'train img/s (batch {settings["train_batch"]})')]
    cols += [(f'infer_ms_{n}', f'infer ms/img @{n} dets') for n in dets]
    cols += [('train_peak_mib', 'train peak MiB'), ('infer_peak_mib', 'infer peak MiB')]
    return cols


def cpu_columns(settings: Dict) -> List[Tuple[str, str]]:
    """CPU-time columns (``time.process_time`` of the measuring process, all its threads): the work done, much
    less sensitive than wall time to other processes competing for the cores."""
    return [('train_cpu_s', f'train CPU s/iter (batch {settings["train_batch"]})')] + [
        (f'infer_cpu_ms_{n}', f'infer CPU ms/img @{n} dets') for n in settings['dets']]


def summarize(report: Dict) -> List[Dict]:
    """One row per model: medians over the repeats, spreads, ratios to the first model, inference/training parts.

    Each row holds ``name``, ``values`` (column key -> median or None), ``ratios`` (column key -> value / reference
    value, None where either is missing), ``spreads`` (timed columns -> spread over repeats), ``infer_parts``
    (dets -> part -> median ms), ``train_parts`` (part -> median s), ``detections`` (dets -> median kept per image),
    ``repeats_ok`` and ``errors``.
    """
    dets = [str(n) for n in report['settings']['dets']]
    rows = []
    for spec in report['specs']:
        runs = report['runs'][spec['name']]
        ok = [r for r in runs if 'error' not in r]
        first = ok[0] if ok else {}
        values: Dict[str, Optional[float]] = {'params_m': first['params'] / 1e6 if first else None}
        for n in dets:
            values[f'gflops_{n}'] = (first.get('gflops_at') or {}).get(n)
        values['gflops_dense'] = first.get('gflops')
        per_rep: Dict[str, List[float]] = {}
        for n in dets:
            per_rep[f'infer_ms_{n}'] = [r['infer'][n]['s_per_img'] * 1000 for r in ok if n in r['infer']]
        per_rep['infer_peak_mib'] = [max(v['peak_mib'] for v in r['infer'].values()) for r in ok if r['infer']]
        for n in dets:
            per_rep[f'infer_cpu_ms_{n}'] = [r['infer'][n]['cpu_s_per_img'] * 1000 for r in ok if n in r['infer']]
        per_rep['train_img_s'] = [r['train']['img_per_s'] for r in ok if r.get('train')]
        per_rep['train_cpu_s'] = [r['train']['cpu_s_per_iter'] for r in ok if r.get('train')]
        per_rep['train_peak_mib'] = [r['train']['peak_mib'] for r in ok if r.get('train')]
        for key, vals in per_rep.items():
            values[key] = median_of(vals)
        row = dict(name=spec['name'], config=spec['config'], values=values,
                   spreads={k: spread_of(v) for k, v in per_rep.items() if not k.endswith('peak_mib')},
                   infer_parts={n: {p: median_of([r['infer'][n]['parts'][p] * 1000 for r in ok if n in r['infer']])
                                    for p in INFER_PARTS} for n in dets},
                   detections={n: median_of([r['infer'][n]['detections'] for r in ok if n in r['infer']])
                               for n in dets},
                   train_parts={p: median_of([r['train']['parts'][p] for r in ok if r.get('train')])
                                for p in TRAIN_PARTS},
                   repeats_ok=len(ok), errors=[r['error'] for r in runs if 'error' in r],
                   compile_s=median_of([r['compile_s'] for r in ok if 'compile_s' in r]),
                   compile_max_abs_diff=max([r['compile_max_abs_diff'] for r in ok if 'compile_s' in r],
                                            default=None),
                   profile=first.get('profile') or {}, mem_kind=first.get('mem_kind'))
        rows.append(row)
    ref = rows[0]['values'] if rows else {}
    for row in rows:
        row['ratios'] = {k: (v / ref[k] if v is not None and ref.get(k) else None) for k, v in row['values'].items()}
    return rows


def load_summary(report: Dict) -> Dict:
    """Load averages of the run: ``min``, ``median``, ``max``, ``cores`` and ``busy`` (max load > usable cores)."""
    loads = [x for x in report.get('loads', []) if x is not None]
    cores = report['machine'].get('usable_cores') or report['machine'].get('cores') or 1
    if not loads:
        return dict(min=None, median=None, max=None, cores=cores, busy=None)
    return dict(min=min(loads), median=statistics.median(loads), max=max(loads), cores=cores,
                busy=max(loads) > cores)


def busy_warning(report: Dict) -> Optional[str]:
    """A warning sentence when the machine was busy during the run (else None)."""
    load = load_summary(report)
    if not load['busy']:
        return None
    return (f'BUSY MACHINE: the 1-minute load average reached {load["max"]:.1f} (median {load["median"]:.1f}) on '
            f'{load["cores"]} usable cores: other processes competed for the CPU, absolute times are inflated and '
            f'noisy; the ratios (interleaved runs) are the more reliable figures.')


def fmt_value(value: Optional[float], digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (at least the integer part, thousands separated); None: '-'."""
    if value is None:
        return '-'
    if value == 0:
        return '0'
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f'{value:,.{decimals}f}'


def _cell(row: Dict, key: str, reference: bool) -> str:
    value = row['values'].get(key)
    if value is None:
        return '-'
    if reference:
        return fmt_value(value)
    ratio = row['ratios'].get(key)
    return f'{fmt_value(value)} ({fmt_value(ratio, 2)}x)' if ratio is not None else fmt_value(value)


def table_rows(report: Dict, cols: Optional[List[Tuple[str, str]]] = None) -> List[List[str]]:
    """A summary table as a header row and one row per model (the reference absolute, the others with their
    ratio to it in parentheses). ``cols``: :func:`columns` (default) or :func:`cpu_columns`."""
    rows = summarize(report)
    main = cols is None
    cols = columns(report['settings']) if main else cols
    top = str(max(report['settings']['dets']))
    body = [['model'] + [h for _, h in cols] + ([f'dets kept @{top}'] if main else [])]
    for i, row in enumerate(rows):
        cells = [row['name'] + (' (reference)' if i == 0 else '')]
        cells += [_cell(row, key, i == 0) for key, _ in cols]
        if main:
            kept = row['detections'].get(top)
            cells.append(fmt_value(kept) if kept is not None else '-')
        if row['errors'] and not row['repeats_ok']:
            cells[1:] = ['failed'] * (len(cells) - 1)
        body.append(cells)
    return body


def format_table(report: Dict) -> str:
    """The summary table for a terminal (terminaltables), with the load line and the busy warning."""
    lines = []
    for title, cols in ((' models vs the first (ratio in parentheses) ', None),
                        (' CPU time of the measuring process (less sensitive to load) ',
                         cpu_columns(report['settings']))):
        table = AsciiTable(table_rows(report, cols), title=title)
        for col in range(1, len(table.table_data[0])):
            table.justify_columns[col] = 'right'
        lines.append(table.table)
    load = load_summary(report)
    if load['max'] is not None:
        lines.append(f'load average {load["min"]:.1f}-{load["max"]:.1f} (median {load["median"]:.1f}) on '
                     f'{load["cores"]} usable cores')
    warning = busy_warning(report)
    if warning:
        lines.append('WARNING: ' + warning)
    return '\n'.join(lines)


def _md_table(rows: List[List[str]]) -> List[str]:
    out = ['| ' + ' | '.join(rows[0]) + ' |', '|' + '|'.join(['---'] + ['--:'] * (len(rows[0]) - 1)) + '|']
    out += ['| ' + ' | '.join(r) + ' |' for r in rows[1:]]
    return out


def format_markdown(report: Dict) -> str:
    """The whole report as markdown: machine, settings, load, the summary table, time by part, spreads, profile."""
    m, s = report['machine'], report['settings']
    rows = summarize(report)
    load = load_summary(report)
    dev = m['device'] + (f' ({m["device_name"]})' if m.get('device_name') else '')
    out = [f'# Model benchmark ({report["started"]})', '',
           f'- machine: {m["cpu"]}, {m["cores"]} cores ({m["usable_cores"]} usable), '
           f'{m.get("mem_gib", "?")} GiB; device {dev}; torch {m["torch"]} ({m["torch_threads"] or "default"} '
           f'threads), torchvision {m.get("torchvision")}, mmdet {m.get("mmdet")}, mmcv {m.get("mmcv")}, '
           f'timm {m.get("timm")}, Python {m["python"]}',
           f'- settings: {s["img_size"]}x{s["img_size"]} input, training batch {s["train_batch"]}, inference '
           f'batch 1, {s["repeats"]} repeat(s) interleaved x {s["steps"]} timed step(s) after {s["warmup"]} '
           f'warm-up step(s), random weights; data: {report["data"]}; wall time {report["wall_s"]:.0f} s',
           f'- memory: {rows[0]["mem_kind"] if rows else "-"}' + (
               '' if m['device'].startswith('cuda') else ' (whole process: Python, libraries, model and data)')]
    if load['max'] is not None:
        out.append(f'- load average (1 min, sampled around every process): {load["min"]:.1f}-{load["max"]:.1f}, '
                   f'median {load["median"]:.1f}, on {load["cores"]} usable cores')
    warning = busy_warning(report)
    if warning:
        out += ['', f'> **{warning}**']
    out += ['', '## Summary (reference absolute; the others: value (ratio to the reference))', '']
    out += _md_table(table_rows(report))
    out += ['', 'Ratios: value / reference value of the same column (train img/s: > 1 is faster; times and '
            f'memory: < 1 is better). GFLOPs: dense part + box head x proposals + mask head x {s["dets"][0]} '
            'detections.']
    out += ['', '## CPU time (process CPU seconds of the measuring process; less sensitive to load than wall time)',
            '']
    out += _md_table(table_rows(report, cpu_columns(s)))
    for n in [str(d) for d in s['dets']]:
        out += ['', f'## Inference by part, ms/image at {n} detections (median)', '']
        table = [['model'] + list(INFER_PARTS) + ['total', 'dets kept']]
        for row in rows:
            parts = row['infer_parts'][n]
            table.append([row['name']] + [fmt_value(parts[p]) for p in INFER_PARTS] +
                         [fmt_value(row['values'].get(f'infer_ms_{n}')), fmt_value(row['detections'][n])])
        out += _md_table(table)
    out += ['', '## Training by part, seconds/iteration (median)', '']
    table = [['model'] + list(TRAIN_PARTS) + ['total']]
    for row in rows:
        if row['values'].get('train_img_s'):
            total = s['train_batch'] / row['values']['train_img_s']
            table.append([row['name']] + [fmt_value(row['train_parts'][p]) for p in TRAIN_PARTS] + [fmt_value(total)])
    out += _md_table(table)
    out += ['', '## Spread over repeats ((max - min) / median; "-" with one repeat)', '']
    keys = ['train_img_s', 'train_cpu_s'] + [f'infer_{k}ms_{n}' for n in s['dets'] for k in ('', 'cpu_')]
    table = [['model'] + keys + ['repeats ok']]
    for row in rows:
        table.append([row['name']] + [('-' if row['spreads'].get(k) is None else f'{100 * row["spreads"][k]:.0f} %')
                                      for k in keys] + [str(row['repeats_ok'])])
    out += _md_table(table)
    compiled = [row for row in rows if row.get('compile_s') is not None]
    if compiled:
        out += ['', '## torch.compile (backbone + neck, inductor)', '']
        out += [f'- {row["name"]}: compiling (first call) {row["compile_s"]:.1f} s; compiled vs eager features '
                f'max |difference| {row["compile_max_abs_diff"]:.1e}' for row in compiled]
    errors = [(row['name'], e) for row in rows for e in row['errors']]
    if errors:
        out += ['', '## Failed measurements', ''] + [f'- {name}: {e}' for name, e in errors]
    if any(row['profile'] for row in rows):
        out += ['', '## Profile: top operators by self time per part (ms, one step)', '']
        for row in rows:
            for phase, parts in row['profile'].items():
                out.append(f'- **{row["name"]}**, {phase}:')
                for part, ops in sorted(parts.items()):
                    out.append(f'  - {part}: ' + ', '.join(f'{op} {ms:.1f}' for op, ms in ops))
    return '\n'.join(out) + '\n'


def format_profile(report: Dict) -> str:
    """The profile as plain text (top operators per model, phase and part)."""
    lines = []
    for row in summarize(report):
        for phase, parts in row['profile'].items():
            lines.append(f'{row["name"]} - {phase}')
            for part, ops in sorted(parts.items()):
                lines.append(f'  {part:>14}: ' + ', '.join(f'{op} {ms:.1f} ms' for op, ms in ops))
    return '\n'.join(lines)
