#!/usr/bin/env python3
"""Import circles between source files (issue 14: no two source files
import each other, directly or in a circle), crate by crate.

  python3 deploy/import-cycles.py [SRC_DIR ...]   (default: every crate's src/)

The graph of one crate's src/: an edge from a file to every module file it
names in a `use` (re-exports included) or an inline `crate::`/`super::`/
`self::` path, resolved to the deepest module file of the path (so a name
taken through a parent's or the crate root's re-export is an edge to that
parent or root). `mod x;` declarations, `pub(in ...)` visibilities and
inline `#[cfg(test)] mod ...` blocks are not edges. Prints every circle (a
strongly connected component of more than one file) and one line per
crate; exits 1 if any circle exists."""
import glob, os, re, sys


def cycles(src):
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith('.rs'):
                p = os.path.join(root, n)
                rel = os.path.relpath(p, src)[:-3].split(os.sep)
                if rel[-1] in ('mod', 'lib', 'main'):
                    rel = rel[:-1]
                files[tuple(rel)] = os.path.relpath(p, src)
    def strip(text):
        # Inline test modules (`#[cfg(test)] mod tests { ... }`) are not the
        # file's imports.
        at = re.search(r'#\[cfg\(test\)\]\s*mod\s+\w+\s*\{', text)
        if at:
            text = text[:at.start()]
        text = re.sub(r'pub\(in [^)]*\)', 'pub', text)
        text = re.sub(r'//[^\n]*', '', text)
        text = re.sub(r'"(\\.|[^"\\])*"', '""', text)
        return text
    def expand(tree):
        # returns list of path-segment lists
        tree = tree.strip()
        m = re.match(r'^(.*?)\{(.*)\}$', tree, re.S)
        if not m:
            tree = re.sub(r'\s+as\s+\w+$', '', tree)
            return [[s for s in tree.split('::') if s]]
        prefix = [s for s in m.group(1).split('::') if s]
        inner, depth, cur, parts = m.group(2), 0, '', []
        for ch in inner:
            if ch == '{': depth += 1
            if ch == '}': depth -= 1
            if ch == ',' and depth == 0:
                parts.append(cur); cur = ''
            else:
                cur += ch
        parts.append(cur)
        out = []
        for p in parts:
            if p.strip():
                for e in expand(p):
                    out.append(prefix + e)
        return out
    def resolve(me, segs):
        # me: module path tuple of the current file
        if not segs: return None
        if segs[0] == 'crate': base, rest = (), segs[1:]
        elif segs[0] == 'super':
            base = me
            rest = segs
            while rest and rest[0] == 'super':
                base = base[:-1]; rest = rest[1:]
        elif segs[0] == 'self': base, rest = me, segs[1:]
        else:
            # relative to current module (2018: child module names)
            if me + (segs[0],) in files: base, rest = me, segs
            else: return None
        path = tuple(base)
        best = path if path in files else None
        for s in rest:
            if s == 'self': continue
            path = path + (s,)
            if path in files: best = path
            else: break
        return best
    edges = {}
    for mod, f in files.items():
        text = strip(open(os.path.join(src, f)).read())
        targets = set()
        for m in re.finditer(r'\buse\s+([^;]+);', text):
            for segs in expand(m.group(1)):
                t = resolve(mod, segs)
                if t is not None and t != mod: targets.add(t)
        for m in re.finditer(r'\b((?:crate|super|self)(?:::\w+)+)', text):
            t = resolve(mod, m.group(1).split('::'))
            if t is not None and t != mod: targets.add(t)
        edges[mod] = targets
    # Tarjan
    index, low, stack, on, comps, i = {}, {}, [], set(), [], [0]
    def sc(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges[v]:
            if w not in index: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            comps.append(comp)
    for v in edges:
        if v not in index: sc(v)
    bad = [c for c in comps if len(c) > 1]
    for c in bad:
        names = sorted(files[m] for m in c)
        print('cycle:', ' '.join(names))
        for m in c:
            print('   ', files[m], '->', sorted(files[t] for t in edges[m] if t in c))
    print(f'{src}: {len(files)} files, {sum(len(e) for e in edges.values())} edges, {len(bad)} circles')
    return len(bad)


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dirs = sys.argv[1:] or sorted(
        os.path.relpath(os.path.join(os.path.dirname(c), "src"), root)
        for c in glob.glob(os.path.join(root, "**", "Cargo.toml"), recursive=True)
        if "/target/" not in c and os.path.isdir(os.path.join(os.path.dirname(c), "src"))
    )
    os.chdir(root)
    found = sum(cycles(d) for d in dirs)
    print(f"import circles: {found}")
    sys.exit(1 if found else 0)
