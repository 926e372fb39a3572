# Do unmask's generated ids equal the reference PyTorch ones? Prints the count of equal ids and the first
# differing generated position (and its canvas position); exit 1 on any difference or length mismatch.
# usage: python3 compare_ids.py TORCH_JSON UNMASK_JSON PROMPT_IDS
#   TORCH_JSON: written by run_torch_dream.py --ids-out (prompt_ids, gen_ids)
#   UNMASK_JSON: `unmask generate --json` (ids = the generated ids)
#   PROMPT_IDS: the comma-separated ids unmask was given; PyTorch's chat template must give the same
import json, sys
t = json.load(open(sys.argv[1]))
u = json.load(open(sys.argv[2]))
given = [int(x) for x in sys.argv[3].split(',')]
prompt, tg, ug = t['prompt_ids'], t['gen_ids'], u['ids']
if prompt != given:
    print(f'prompt ids differ: PyTorch tokenized the prompt to {prompt}, unmask was given {given}')
    sys.exit(1)
n = min(len(tg), len(ug))
same = sum(a == b for a, b in zip(tg, ug))
first = next((i for i in range(n) if tg[i] != ug[i]), None)
if first is None and len(tg) == len(ug):
    print(f'{same}/{n} generated ids equal')
    sys.exit(0)
if first is None:
    print(f'lengths differ: PyTorch {len(tg)} unmask {len(ug)} generated ids (the first {n} equal)')
    sys.exit(1)
print(f'{same}/{n} generated ids equal; first difference at generated position {first} '
      f'(canvas position {first + len(prompt)}): PyTorch {tg[first]}, unmask {ug[first]}')
print(f'  PyTorch ids {max(0, first - 3)}..{first + 8}: {tg[max(0, first - 3):first + 8]}')
print(f'  unmask  ids {max(0, first - 3)}..{first + 8}: {ug[max(0, first - 3):first + 8]}')
sys.exit(1)
