"""The results table of a `python -m bench` run: every figure, its peer, ratio, target, verdict.

Benchmarks ``record`` rows (and ``bars`` for the chart) as they go; at the end
``python -m bench`` writes them to bench/results.md and draws bench/results.png
(with matplotlib, when it is installed).
"""

import dataclasses
import datetime
import math
import os
import platform
import textwrap

ROWS = []
NOTES = []
SECTIONS = []  # (index in ROWS where it starts, heading): a table of its own in results.md
BARS = []      # (panel title, unit, {series: {server: value}}, log scale)


@dataclasses.dataclass
class Row:
    scenario: str
    subject: str               # what was measured, usually a server
    value: float
    unit: str
    peer: str = None           # what it is compared with, measured in the same run
    peer_value: float = None
    target: float = None       # a ratio to the peer; with no peer, a bound on the value
    lower_is_better: bool = False

    @property
    def ratio(self):
        if self.peer_value is None or not self.peer_value:
            return None
        ratio = self.value / self.peer_value
        return 1 / ratio if self.lower_is_better and ratio else ratio

    @property
    def score(self):
        """How far the target is met: 1 exactly, above 1 with room, below 1 missed."""
        if self.target is None:
            return None
        if self.peer is not None:
            return None if self.ratio is None else self.ratio / self.target
        if self.lower_is_better:
            return self.target / self.value if self.value else float('inf')
        return self.value / self.target if self.target else float('inf')

    @property
    def met(self):
        """True or False against the target; None with no target."""
        if self.target is None:
            return None
        if self.peer is None:
            return self.value <= self.target if self.lower_is_better else self.value >= self.target
        return self.score is not None and self.score >= 1

    @property
    def ratio_text(self):
        """The ratio as the table shows it: where lower is better (a latency), value / peer
        value, so that 2.10x reads "twice the peer's", against a target such as <= 3x."""
        if self.ratio is None:
            return ''
        if self.lower_is_better:
            return f'{self.value / self.peer_value:.2f}x (lower is better)'
        return f'{self.ratio:.2f}x'

    @property
    def target_text(self):
        if self.target is None:
            return ''
        if self.peer is not None:
            return f'<= {1 / self.target:g}x' if self.lower_is_better else f'{self.target:g}x'
        return f'{"<=" if self.lower_is_better else ">="} {number(self.target)} {self.unit}'

    @property
    def verdict(self):
        return {None: '', True: 'met', False: 'NOT met'}[self.met]


def record(scenario, subject, value, unit, **compared):
    """Add a row (see Row for the keywords) and return it."""
    row = Row(scenario, subject, value, unit, **compared)
    ROWS.append(row)
    return row


def note(text):
    NOTES.append(text)


def section(heading):
    """The rows recorded from now on go under ``heading``, in a table of their own."""
    SECTIONS.append((len(ROWS), heading))


def bars(title, unit, series, log=False):
    """A panel of grouped bars for the chart: {series name: {server: value}}."""
    BARS.append((title, unit, series, log))


def reset():
    ROWS.clear()
    NOTES.clear()
    SECTIONS.clear()
    BARS.clear()


def number(value):
    if value is None:
        return ''
    if not math.isfinite(value):
        return str(value)
    if value == int(value) or abs(value) >= 100:
        return f'{value:,.0f}'
    if abs(value) >= 10:
        return f'{value:.1f}'
    return f'{value:.2f}'


TABLE_HEAD = ['| scenario | figure | value | peer | peer value | ratio | target | verdict |',
              '| --- | --- | ---: | --- | ---: | ---: | --- | --- |']


def markdown(ran):
    headings = dict(SECTIONS)
    lines = [
        '# minihttp benchmark results',
        '',
        f'`python -m bench {" ".join(ran)}`, {datetime.datetime.now():%Y-%m-%d %H:%M}, '
        f'{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}. '
        'Every ratio is against a peer measured in the same run, on the same machine; '
        'a shared machine makes them noisy.',
        '',
    ]
    if 0 not in headings:
        lines += TABLE_HEAD
    for index, row in enumerate(ROWS):
        if index in headings:
            lines += [''] * (index > 0) + [f'## {headings[index]}', '', *TABLE_HEAD]
        ratio = row.ratio_text
        peer_value = '' if row.peer_value is None else f'{number(row.peer_value)} {row.unit}'
        lines.append(f'| {row.scenario} | {row.subject} | {number(row.value)} {row.unit} | '
                     f'{row.peer or ""} | {peer_value} | {ratio} | {row.target_text} | '
                     f'{row.verdict} |')
    targets = [row for row in ROWS if row.target is not None]
    met = sum(1 for row in targets if row.met)
    lines += ['', f'{met} of {len(targets)} targets met.']
    if NOTES:
        lines += ['', *(f'- {text}' for text in NOTES)]
    return '\n'.join(lines) + '\n'


def write(markdown_path, chart_path, ran):
    """Write the table, and the chart if matplotlib is there; print where they went."""
    with open(markdown_path, 'w') as file:
        file.write(markdown(ran))
    print(f'results: {markdown_path}')
    try:
        import matplotlib
    except ImportError:
        print('  no chart: matplotlib is not installed (make bench-deps installs it)')
        return
    matplotlib.use('Agg')
    draw(chart_path)
    print(f'chart:   {chart_path}')


# -- the chart ---------------------------------------------------------------------------

MET, MISSED = '#2e7d32', '#c62828'


def draw(path):
    import matplotlib.pyplot as plt

    targets = [row for row in ROWS if row.score is not None]
    height_bars = 4.4 if BARS else 0
    height_targets = 0.9 + 0.34 * len(targets) if targets else 0
    figure = plt.figure(figsize=(13, height_bars + height_targets + 0.4), layout='constrained')
    # Two sub-figures, so that the long labels of the targets do not narrow the bars.
    parts = [height for height in (height_bars, height_targets) if height]
    subfigures = figure.subfigures(len(parts), 1, height_ratios=parts) if len(parts) > 1 \
        else [figure]
    if BARS:
        panels = subfigures[0].subplots(1, len(BARS), squeeze=False)[0]
        for axes, (title, unit, series, log) in zip(panels, BARS):
            draw_bars(axes, title, unit, series, log)
    if targets:
        draw_targets(subfigures[-1].subplots(), targets)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_bars(axes, title, unit, series, log=False):
    """Grouped bars, one group per server in the order first seen, one bar per series."""
    servers = list(dict.fromkeys(server for values in series.values() for server in values))
    width = 0.8 / len(series)
    colours = ['#1565c0', '#90caf9', '#ef6c00', '#ffcc80']
    for i, server in enumerate(servers):
        if server.startswith('minihttp'):
            axes.axvspan(i - 0.5, i + 0.5, color='#fff3e0', zorder=0)
    for n, (name, values) in enumerate(series.items()):
        xs = [i + (n - (len(series) - 1) / 2) * width for i in range(len(servers))]
        heights = [values.get(server, 0) for server in servers]
        drawn = axes.bar(xs, heights, width, label=name, color=colours[n % len(colours)],
                         zorder=2)
        axes.bar_label(drawn, labels=[number(h) if h else 'n/a' for h in heights],
                       fontsize=7, padding=1)
    axes.set_xticks(range(len(servers)),
                    [textwrap.fill(server, 10, break_long_words=False) for server in servers], fontsize=8)
    for label in axes.get_xticklabels():
        if label.get_text().startswith('minihttp'):
            label.set_fontweight('bold')
    axes.set_xlim(-0.5, len(servers) - 0.5)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(unit)
    if log:
        axes.set_yscale('log')
    axes.legend(fontsize=8)
    axes.margins(y=0.12)
    axes.grid(axis='y', alpha=0.3, zorder=1)


def draw_targets(axes, targets):
    """Each target as a dot at measured/target on a log scale: right of 1 is met."""
    labels, scores = [], []
    for row in targets:
        if row.peer is not None:
            measured = f'{row.ratio_text} {row.peer}'
        else:
            measured = f'{number(row.value)} {row.unit}'
        labels.append(f'{row.scenario}: {row.subject}\n'
                      f'target {row.target_text}, measured {measured}')
        scores.append(min(max(row.score, 0.01), 100))
    ys = list(range(len(targets)))[::-1]
    colours = [MET if row.met else MISSED for row in targets]
    axes.hlines(ys, 1, scores, colors=colours, linewidth=3)
    axes.scatter(scores, ys, color=colours, s=40, zorder=3)
    for y, score, row in zip(ys, scores, targets):
        axes.annotate(row.verdict, (score, y), xytext=(6 if score >= 1 else -6, 0),
                      textcoords='offset points', va='center', fontsize=7,
                      ha='left' if score >= 1 else 'right', color=MET if row.met else MISSED)
    axes.set_xscale('log')
    axes.axvline(1, color='black', linewidth=1)
    axes.set_yticks(ys, labels, fontsize=7)
    axes.set_ylim(-0.7, len(targets) - 0.3)
    low, high = min(scores + [0.5]), max(scores + [2])
    axes.set_xlim(low / 2, high * 2)
    axes.set_xlabel('measured / target (log scale): right of the line is met, left is missed')
    axes.set_title('targets: each figure against its target', fontsize=10)
    axes.grid(axis='x', alpha=0.3)
