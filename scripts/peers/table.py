# Medians of the runs scripts/bench-peers.sh recorded (runs.tsv), as the markdown table for
# docs/benchmarks.md. usage: python3 table.py RUNS_TSV ROWS_TSV GEN
#   runs.tsv: row \t run \t rc \t wall_s \t user_s \t sys_s \t cpu% \t maxrss_kb \t load1_before \t clock
#   rows.tsv: row \t setting \t weights \t column \t command line (as run)
import statistics, sys
from collections import OrderedDict

runs_path, rows_path, gen = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = OrderedDict()
for line in open(rows_path):
    row, setting, weights, column, cmd = line.rstrip('\n').split('\t')
    rows[row] = dict(setting=setting, weights=weights, column=column, cmd=cmd, walls=[], loads=[], cpus=[], failed=0)
for line in open(runs_path):
    f = line.rstrip('\n').split('\t')
    r = rows[f[0]]
    r['loads'].append(float(f[8]))
    r['cpus'].append(f[6])
    if f[2] != '0':
        r['failed'] += 1
    else:
        r['walls'].append(float(f[3]))

COLUMNS = ['llama.cpp', 'PyTorch', 'unmask', 'unmask --approx-cache']
# Cells with no run, and why (a peer setting with no equivalent is said, not left blank).
WHY = {
    ('blocks', 'f32', 'PyTorch'): '– (diffusion_generate has no block schedule)',
    ('headline', 'f32', 'unmask --approx-cache'): '– (one block: the prefix cache has nothing to reuse)',
    ('headline', 'f16', 'PyTorch'): '– (not run: the reference is f32)',
    ('headline', 'bf16', 'PyTorch'): '– (not run: the reference is f32)',
    ('headline', 'bf16', 'llama.cpp'): '– (not run: its half type here is the f16 GGUF)',
    ('sampling', 'f32', 'unmask --approx-cache'): '– (one block)',
}

def cell(r):
    if not r['walls']:
        return f"FAILED ({r['failed']} of {r['failed']} runs)"
    m = statistics.median(r['walls'])
    s = f"{m:.1f} s ({gen / m:.1f} tok/s)"
    if r['failed']:
        s += f" [{r['failed']} runs failed]"
    return s

table = OrderedDict()
for r in rows.values():
    table.setdefault((r['setting'], r['weights']), {})[r['column']] = r
LABEL = {
    'headline': 'one block, {steps} steps, timestep schedule, greedy confidence',
    'blocks': 'blocks of 32, {bsteps} steps each',
    'sampling': 'one block, {steps} steps, T 0.2, top-p 0.95',
}
steps, bsteps = sys.argv[4], sys.argv[5]
print('| setting | weights | ' + ' | '.join(COLUMNS) + ' | unmask vs llama.cpp | unmask vs PyTorch |')
print('|---|---|' + '---|' * len(COLUMNS) + '---|---|')
for (setting, weights), cols in table.items():
    cells = []
    for c in COLUMNS:
        if c in cols:
            cells.append(cell(cols[c]))
        else:
            cells.append(WHY.get((setting, weights, c), '–'))
    # unmask's speed-up over each peer: the peer's median wall time over unmask's (exact cache)
    ratios = []
    u = cols.get('unmask')
    for peer in ('llama.cpp', 'PyTorch'):
        p = cols.get(peer)
        ok = p and u and p['walls'] and u['walls']
        ratios.append(f"{statistics.median(p['walls']) / statistics.median(u['walls']):.2f}×" if ok else '–')
    label = LABEL[setting].format(steps=steps, bsteps=bsteps)
    print(f"| {label} | {weights} | " + ' | '.join(cells) + ' | ' + ' | '.join(ratios) + ' |')
loads = [x for r in rows.values() for x in r['loads']]
print()
n = max(len(r['walls']) for r in rows.values())
print(f"Median wall time of the whole process (load, decode, exit) over {n} interleaved run{'s' if n != 1 else ''}; tok/s = {gen} generated tokens / that wall time. 1-minute load average before the runs: "
      f"{min(loads):.2f}–{max(loads):.2f}.")
print()
print('Runs (wall s; CPU % of the process, about 190 % when it had both cores; load average before):')
print()
for name, r in rows.items():
    per = ', '.join(f'{w:.1f}' for w in r['walls'])
    cpu = ', '.join(r['cpus'])
    ld = ', '.join(f'{x:.2f}' for x in r['loads'])
    print(f"- `{name}`: {per or 'none'} (CPU {cpu}; load {ld}){' — ' + str(r['failed']) + ' failed' if r['failed'] else ''}: `{r['cmd']}`")
