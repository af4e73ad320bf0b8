#!/usr/bin/env python3
"""Print the module graph of src/: one line "from -> to" per module that uses another
(crate::, super:: and self:: paths, outside unit tests).

    python3 docs/module-graph.py [REPO] [LEVEL]

LEVEL 1 (default): top-level modules; 2: guard::* and controller::* one level down.
tests/layers.rs enforces the order; this only shows it.
"""
import os,re,sys
root=(sys.argv[1] if len(sys.argv)>1 else '.')+"/src"; level=int(sys.argv[2]) if len(sys.argv)>2 else 1
def mod_of(rel):
    parts=rel[:-3].split('/')
    if parts[-1] in('mod','lib','main'): parts=parts[:-1]
    return parts
edges=set()
for d,_,fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        rel=os.path.relpath(os.path.join(d,f),root)
        if 'fixtures' in rel or 'tests' in rel: continue
        code=open(os.path.join(d,f)).read().split('#[cfg(test)]')[0]
        here=mod_of(rel)
        for m in re.finditer(r'\b(crate|super|self)::((?:[a-z_0-9]+::)*)(\{[^;]*?\}|[A-Za-z_0-9]+)',code):
            kind,mid,last=m.groups()
            base={'crate':[], 'super':here[:-1], 'self':here}[kind][:]
            for s in mid.split('::'):
                if not s: continue
                if s=='super': base.pop()
                else: base.append(s)
            items=[last] if not last.startswith('{') else [re.match(r'\s*([A-Za-z_0-9]*)',x).group(1) for x in re.sub(r'\{[^{}]*\}','',last[1:-1]).split(',')]
            for it in items:
                p=base+([it] if it and it!='self' else [])
                if not p: continue
                src='::'.join(here[:level]) or 'lib'
                if p[0] in ('Error','Result'): p=['error']
                tgt='::'.join(p[:level]) if p[0] in ('guard','controller') else p[0]
                # only modules
                if p[0] in ('guard','controller') and level==2 and len(p)<2: continue
                if not os.path.exists(os.path.join(root,p[0]+'.rs')) and not os.path.isdir(os.path.join(root,p[0])): continue
                if level==2 and p[0] in ('guard','controller') and not (os.path.exists(os.path.join(root,p[0],p[1]+'.rs')) or os.path.isdir(os.path.join(root,p[0],p[1]))): continue
                if tgt!=src: edges.add((src,tgt))
for a,b in sorted(edges): print(f"{a} -> {b}")
