import sys, re, collections
# per-function opcode counts of `cuobjdump -sass` output (fp8_gemm kernels and the probe)
cur = None; counts = collections.OrderedDict()
for line in open(sys.argv[1]):
    m = re.match(r'\s*Function : (\S+)', line)
    if m:
        cur = m.group(1); counts[cur] = collections.Counter(); continue
    m = re.match(r'\s*/\*[0-9a-f]{4,}\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)', line)
    if m and cur:
        counts[cur][m.group(2).split('.')[0]] += 1
for f, c in counts.items():
    if 'gemm' not in f and 'k_emul' not in f:
        continue
    keys = ['HMMA', 'QMMA', 'F2FP', 'F2F', 'LDS', 'LDSM', 'LDL', 'STL', 'FFMA', 'FMUL', 'FADD', 'LDGSTS', 'PRMT', 'BAR']
    print(f[-90:], 'total', sum(c.values()), ' '.join('%s=%d' % (k, c[k]) for k in keys if c[k]))
